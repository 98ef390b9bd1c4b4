"""``modelyard config check`` (issue #14, points 3 and 10): every problem in one pass, a hint that
says to set a missing variable, ``--allow-missing-env``, and one line per message off a terminal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import BIN, ROOT

BROKEN = """
providers:
  a: {kind: openai, api_key: "${FIRST_KEY}"}
  b: {kind: anthropic, api_key: "${SECOND_KEY}"}
models:
  m: {provider: a, max_concurrency: -1}
routes:
  r: {models: [m], strategy: fastest}
"""


def check(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_KEY")}
    return subprocess.run(
        [str(BIN / "modelyard"), "config", "check", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BROKEN)
    out = check(path)
    text = out.stdout + out.stderr
    assert out.returncode == 2
    for where in ("providers.a.api_key", "providers.b.api_key", "models.m.max_concurrency", "routes.r.strategy"):
        assert where in text, (where, text)
    assert "FIRST_KEY is not set: set it before starting" in text and "SECOND_KEY" in text
    # off a terminal, a message is one line (not wrapped at 80 columns)
    whole = "FIRST_KEY is not set: set it before starting (export FIRST_KEY=...)"
    assert any(whole in line for line in text.splitlines())


def test_allow_missing_env_checks_without_the_secrets(tmp_path: Path) -> None:
    for example in ("agents.yaml", "local-first.yaml", "custom-first.yaml"):
        out = check(ROOT / "examples" / example, "--allow-missing-env")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "ok:" in out.stdout
    out = check(ROOT / "examples" / "custom-first.yaml", "--allow-missing-env")
    assert "note" in out.stdout and "OPENAI_API_KEY" in out.stdout
    strict = check(ROOT / "examples" / "custom-first.yaml")
    assert strict.returncode == 2 and "OPENAI_API_KEY is not set" in strict.stdout + strict.stderr
