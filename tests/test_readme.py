"""What the README says, run as written (issue #14).

Every fenced block of README.md is run by a test below, or preceded by
``<!-- readme-test: skip (reason) -->``; a block that is neither fails ``test_every_block_is_run``.
Servers started by a block run in the background and are awaited on ``/ready`` (or ``/health``)
before the next command.  Substitutions, and nothing else:

- ports: 9100 -> a free port; 4000 -> a free port where the block's server takes ``--port``
  (the walkthrough's ``serve`` reads its port from the config it writes, so it keeps 4000);
- after a line that starts a server in the background (``... serve &``, ``fake-provider ... &``),
  a wait for that server is inserted;
- the offline walkthrough runs in a temporary folder holding links to the checkout's ``Makefile``,
  ``pyproject.toml``, ``src`` and ``.venv`` (so ``modelyard.yaml`` and the database land there,
  not in the checkout).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from modelyard.config import parse_config
from tests.helpers import ROOT, free_port

README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+?)\)\s*-->")


@dataclass
class Block:
    lang: str
    text: str
    line: int
    skip: str | None


def blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            start = i
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            prev = lines[start - 1] if start else ""
            marker = SKIP.search(prev)
            out.append(
                Block(
                    m.group(1), "\n".join(lines[start + 1 : j]) + "\n", start + 1, marker.group(1) if marker else None
                )
            )
            i = j + 1
        else:
            i += 1
    return out


def find(needle: str) -> Block:
    (block,) = [b for b in blocks() if needle in b.text]
    return block


#: the blocks the tests below run, each found by a phrase it contains
RUN = {
    "local model curl": '"model": "default", "max_tokens": 32',
    "offline walkthrough": "fake-provider --kind openai --port 9100 &",
    "openai sdk": "from openai import OpenAI",
    "configure": "project-planner: {models: [model_1]",
    "python sdk": "from modelyard import Gateway",
}


def test_every_block_is_run_or_marked() -> None:
    run = {find(needle).line for needle in RUN.values()}
    unrun = [b.line for b in blocks() if b.skip is None and b.line not in run]
    assert not unrun, f"README blocks at lines {unrun} are neither run by tests/test_readme.py nor marked skip"


def test_the_readme_reads_in_five_minutes() -> None:
    words = len(re.sub(r"<!--.*?-->", "", README.read_text(), flags=re.S).split())
    assert words <= 1500, f"README.md has {words} words (at most 1,500)"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "OLLAMA_HOST"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _ports(text: str, gateway: int, fake: int) -> str:
    return text.replace("4000", str(gateway)).replace("9100", str(fake))


def _await_servers(script: str, gateway: int, fake: int) -> str:
    """After each line that starts a server in the background, wait until it answers."""
    out: list[str] = []
    for line in script.splitlines():
        out.append(line)
        code = line.split("#", 1)[0].rstrip()
        if code.endswith("&") and "serve" in code:
            out.append(f"until curl -sf http://127.0.0.1:{gateway}/ready >/dev/null; do sleep 0.1; done")
        elif code.endswith("&") and "fake-provider" in code:
            out.append(f"until curl -s http://127.0.0.1:{fake}/_fake/requests >/dev/null; do sleep 0.1; done")
    return "\n".join(out) + "\n"


def _bash(script: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a block; its output goes to files (background servers keep them open after it ends)."""
    out, err = cwd / ".block-stdout", cwd / ".block-stderr"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=cwd,
            env=_env(),
            stdout=o,
            stderr=e,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())


def _kill_group(pid_file: Path) -> None:
    for pid in pid_file.read_text().split() if pid_file.exists() else []:
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def test_the_local_model_answers_the_first_curl(tmp_path: Path) -> None:
    gateway = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "modelyard"), "serve", "--port", str(gateway)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait = f"until curl -sf http://127.0.0.1:{gateway}/ready >/dev/null; do sleep 0.1; done\n"
        out = _bash(wait + _ports(find(RUN["local model curl"]).text, gateway, 0), tmp_path, timeout=180)
        assert out.returncode == 0, out.stderr
        assert '"choices"' in out.stdout and '"model":"local:gemma3-270m"' in out.stdout.replace(" ", ""), out.stdout
    finally:
        server.terminate()
        server.wait(30)


def test_the_offline_walkthrough_then_both_python_snippets(tmp_path: Path) -> None:
    # the block's `make install` must find the checkout's venv up to date (else it would install the
    # package from this temporary folder): bring it up to date where it belongs first
    if subprocess.run(["make", "-q", "install"], cwd=ROOT, capture_output=True, check=False).returncode != 0:
        subprocess.run(["make", "install"], cwd=ROOT, capture_output=True, check=True, timeout=600)
    for name in ("Makefile", "pyproject.toml", "src", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    # the block's `serve` reads the port from the modelyard.yaml it writes (none: 4000), so 4000 stays
    gateway, fake = 4000, free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", gateway)) != 0, "port 4000 is taken: the walkthrough needs it"
    walkthrough = _await_servers(_ports(find(RUN["offline walkthrough"]).text, gateway, fake), gateway, fake)
    # every background job of the block is in one process group: remember it to stop them after
    script = "set -m\n" + walkthrough + "jobs -p > pids\n"
    pids = tmp_path / "pids"
    try:
        out = _bash(script, tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "data: [DONE]" in out.stdout and "chat.completion.chunk" in out.stdout
        # the two Python snippets, against what the walkthrough left running and wrote
        for key in ("openai sdk", "python sdk"):
            code = _ports(find(RUN[key]).text, gateway, fake)
            py = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
            )
            assert py.returncode == 0, (key, py.stderr)
            assert py.stdout.strip(), key
    finally:
        _kill_group(pids)
        subprocess.run(["pkill", "-f", f"--port {fake}"], check=False)
        subprocess.run(["pkill", "-f", f"127.0.0.1:{fake}"], check=False)


def test_the_configure_example_is_a_valid_config() -> None:
    data = yaml.safe_load(re.sub(r"\$\{(\w+)\}", r"placeholder-\1", find(RUN["configure"]).text))
    cfg = parse_config(data)
    assert cfg.default_route == "project-planner" and "model_1" in cfg.models
