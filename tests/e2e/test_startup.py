"""Start-up (issue #14, points 6 and 9): clear errors before anything says it started; relative
paths in a config are relative to the config file."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import yaml

from modelyard.config import load_config
from tests.helpers import BIN, ServerProcess, free_port

CONFIG = {
    "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"}},
    "models": {"gpt": {"provider": "o", "model": "gpt-4o"}},
}


def serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [str(BIN / "modelyard"), "serve", *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


def test_a_busy_port_is_a_clear_error_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    port = free_port()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        out = serve(tmp_path, "--config", "c.yaml", "--port", str(port))
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text
    assert f"port {port}" in text and "already in use" in text and "--port" in text
    assert "Application startup complete" not in text and "modelyard on http" not in text


def test_a_database_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the database folder should be")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**CONFIG, "database": "sqlite:///data/usage.db"}))
    out = serve(tmp_path, "--config", "c.yaml", "--port", str(free_port()))
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2 and "cannot be created" in text and "is a file" in text, text
    assert "modelyard on http" not in text


def test_an_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    out = serve(tmp_path, "--config", "missing.yaml", "--port", str(free_port()))
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2 and "missing.yaml" in text, text


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(
        yaml.safe_dump({**CONFIG, "database": "sqlite:///./data/gw.db", "usage": {"spill_path": "spill.jsonl"}})
    )
    cfg = load_config(conf / "gw.yaml")
    assert cfg.database.url == f"sqlite:///{conf.resolve()}/data/gw.db"
    assert cfg.usage.spill_path == str(conf.resolve() / "spill.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    srv = ServerProcess(None, elsewhere, args=["--config", str(conf / "gw.yaml")])
    try:
        assert f"database: {conf.resolve()}/data/gw.db" in srv.log()
    finally:
        srv.stop()
    assert (conf / "data" / "gw.db").exists() and not (elsewhere / "data").exists()


def test_an_unreachable_upstream_is_named_in_the_502(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = {
        "providers": {
            "o": {"kind": "openai", "base_url": f"http://user:hunter2pass@127.0.0.1:{port}/v1", "api_key": "x"}
        },
        "models": {"gpt": {"provider": "o", "model": "gpt-4o"}},
    }
    srv = ServerProcess(cfg, tmp_path)
    try:
        resp = httpx.post(
            srv.url + "/v1/chat/completions",
            json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    finally:
        srv.stop()
    assert resp.status_code == 502
    message = resp.json()["error"]["message"]
    assert f"http://127.0.0.1:{port}/v1" in message and "base_url" in message
    assert "hunter2pass" not in resp.text
