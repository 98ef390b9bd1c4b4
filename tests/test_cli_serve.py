"""``modelyard serve`` without Typer (issue #20): modelyard.cli reads a plain ``serve`` command's
options itself and hands everything else to the Typer app, which reads them the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelyard.cli_serve import parse_serve_args

RUN = "import sys; from modelyard.cli import main; sys.argv[0] = 'modelyard'; main()"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["--config", "m.yaml"], {"config": Path("m.yaml")}),
        (["-c", "m.yaml", "--port=8000"], {"config": Path("m.yaml"), "port": 8000}),
        (["--host", "0.0.0.0", "--port", "4001", "--port", "4002"], {"host": "0.0.0.0", "port": 4002}),
        (["--workers", "2", "--log-level", "debug"], {"workers": 2, "log_level": "debug"}),
        (["--watch"], {"watch": True}),
        (["--watch", "--no-watch"], {"watch": False}),
    ],
)
def test_the_options_typer_would_read(args: list[str], expected: dict[str, Any]) -> None:
    assert parse_serve_args(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--port", "abc"],  # Typer says why
        ["--port"],
        ["--port", "--host", "x"],
        ["--workers", "0"],  # min=1
        ["--watch=yes"],
        ["--config="],
        ["-c=m.yaml"],
        ["-cm.yaml"],
        ["extra"],
        ["--unknown", "1"],
    ],
)
def test_anything_else_goes_to_typer(args: list[str]) -> None:
    assert parse_serve_args(args) is None


def test_typer_still_answers_what_the_fast_path_does_not_read() -> None:
    help_ = subprocess.run([sys.executable, "-c", RUN, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "Start the gateway" in help_.stdout and "--workers" in help_.stdout
    bad = subprocess.run(
        [sys.executable, "-c", RUN, "serve", "--port", "abc"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "Usage: modelyard serve" in bad.stderr


def test_a_config_error_names_the_yaml_path_on_the_fast_path(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("server:\n  port: not-a-port\n")
    out = subprocess.run(
        [sys.executable, "-c", RUN, "serve", "--config", str(tmp_path / "m.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "config error" in out.stderr and "server.port" in out.stderr


def test_python_dash_m_modelyard_is_the_cli(tmp_path: Path) -> None:
    """``python -m modelyard`` runs the same CLI (where the console script is not on PATH)."""
    config = tmp_path / "modelyard.yaml"
    config.write_text("models: {a: {provider: nowhere}}\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "modelyard", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "models.a.provider: unknown provider 'nowhere'" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
