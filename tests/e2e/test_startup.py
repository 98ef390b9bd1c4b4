"""Start-up (issue #14, points 6 and 9): clear errors before anything says it started; relative
paths in a config are relative to the config file.

Every ordinary reason a start fails (a port in use, a database that cannot be reached or created,
a file the config names that cannot be read) is one line saying what failed and what to do, with
its own exit code (modelyard.startup, docs/configuration.md "Start-up failures"), never a
traceback; with ``--workers N`` too, where a worker's failure used to end the parent with 0 or be
restarted forever.  An unexpected exception still shows its traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelyard.config import load_config
from modelyard.startup import EXIT_CONFIG, EXIT_DATABASE, EXIT_LISTEN, EXIT_UNEXPECTED
from tests.helpers import BIN, ServerProcess, free_port, wait_for
from tests.storage.conftest import in_ci

CONFIG = {
    "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"}},
    "models": {"gpt": {"provider": "o", "model": "gpt-4o"}},
}
PG_HOST = os.environ.get("MODELYARD_TEST_PG_HOST", "127.0.0.1")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "OLLAMA_HOST"}


def serve(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "modelyard"), "serve", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env()
    )


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    return " ".join((out.stdout + out.stderr).split())


def write(tmp_path: Path, config: dict[str, Any]) -> str:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return "c.yaml"


@contextmanager
def busy_port() -> Iterator[int]:
    port = free_port()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        yield port


def closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_port_is_a_clear_error_with_a_hint(tmp_path: Path, workers: str) -> None:
    conf = write(tmp_path, CONFIG)
    with busy_port() as port:
        out = serve(tmp_path, "--config", conf, "--port", str(port), "--workers", workers)
    text = one_line(out)
    assert out.returncode == EXIT_LISTEN, text
    assert f"port {port}" in text and "already in use" in text and "--port" in text
    assert "Traceback" not in text
    assert "Application startup complete" not in text and "modelyard on http" not in text


def test_a_busy_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    with busy_port() as metrics:
        conf = write(tmp_path, {**CONFIG, "server": {"metrics_port": metrics}})
        out = serve(tmp_path, "--config", conf, "--port", str(free_port()))
    text = one_line(out)
    assert out.returncode == EXIT_LISTEN, text
    assert f"port {metrics}" in text and "already in use" in text and "server.metrics_port" in text
    assert "Traceback" not in text and "modelyard on http" not in text


@pytest.mark.parametrize("for_config", [False, True], ids=["kind", "for"])
def test_a_fake_provider_on_a_busy_port_is_a_clear_error(tmp_path: Path, for_config: bool) -> None:
    with busy_port() as port:
        if for_config:
            conf = {
                "providers": {"o": {"kind": "openai", "base_url": "${O_URL}"}, "a": {"kind": "anthropic"}},
                "models": {"gpt": {"provider": "o"}},
            }
            (tmp_path / "c.yaml").write_text(yaml.safe_dump(conf))
            # the first fake gets a free port; the second the busy one
            args = ["--for", str(tmp_path / "c.yaml"), "--port", str(port - 1)]
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", port - 1))
            except OSError:
                pytest.skip("the port below the busy one is taken")
            finally:
                probe.close()
        else:
            args = ["--kind", "openai", "--port", str(port)]
        out = subprocess.run(
            [str(BIN / "modelyard"), "fake-provider", *args], capture_output=True, text=True, timeout=30, env=_env()
        )
    text = one_line(out)
    assert out.returncode == EXIT_LISTEN, text
    assert f"port {port}" in text and "already in use" in text and "--port" in text
    assert "Traceback" not in text


def test_a_database_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the database folder should be")
    conf = write(tmp_path, {**CONFIG, "database": "sqlite:///data/usage.db"})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()))
    text = one_line(out)
    assert out.returncode == EXIT_DATABASE and "cannot be created" in text and "is a file" in text, text
    assert "Traceback" not in text and "modelyard on http" not in text


def test_a_database_path_that_is_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    conf = write(tmp_path, {**CONFIG, "database": "sqlite:///./data"})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()))
    text = one_line(out)
    assert out.returncode == EXIT_DATABASE and "is a folder, not a file" in text, text
    assert "Traceback" not in text and "modelyard on http" not in text


@pytest.mark.parametrize("spill", ["data/spill.jsonl", "folder"])
def test_a_spill_path_that_cannot_be_written_is_a_clear_error(tmp_path: Path, spill: str) -> None:
    """The usage records a database outage leaves go to usage.spill_path: a path that cannot be
    written is found at start (exit 2, naming the YAML key), not during the outage."""
    (tmp_path / "data").write_text("a file where the spill folder should be")
    (tmp_path / "folder").mkdir()
    conf = write(tmp_path, {**CONFIG, "usage": {"spill_path": f"./{spill}"}})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()))
    text = one_line(out)
    assert out.returncode == 2 and "usage.spill_path" in text, text
    assert ("is a file, not a folder" if spill.startswith("data") else "is a folder, not a file") in text, text
    assert "Traceback" not in text and "modelyard on http" not in text


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unreachable_postgres_is_a_clear_error_without_its_password(tmp_path: Path, workers: str) -> None:
    port = closed_port()
    conf = write(tmp_path, {**CONFIG, "database": f"postgresql://modelyard:hunter2pass@127.0.0.1:{port}/gw"})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()), "--workers", workers, timeout=30)
    text = one_line(out)
    assert out.returncode == EXIT_DATABASE, text
    assert f"postgresql://modelyard:***@127.0.0.1:{port}/gw" in text and "cannot be reached" in text, text
    assert "connection refused" in text.lower() and "database" in text
    assert "hunter2pass" not in text and "Traceback" not in text
    assert "Application startup complete" not in text


def test_a_postgres_database_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    try:
        socket.create_connection((PG_HOST, 5432), timeout=1).close()
    except OSError:
        if in_ci():  # CI=true: the Postgres tests must run, not skip
            pytest.fail("no PostgreSQL on 5432 and CI=true: start the postgres service", pytrace=False)
        pytest.skip("no PostgreSQL on 5432")
    conf = write(tmp_path, {**CONFIG, "database": f"postgresql://postgres@{PG_HOST}:5432/modelyard_no_such_db"})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()), timeout=30)
    text = one_line(out)
    assert out.returncode == EXIT_DATABASE, text
    assert "modelyard_no_such_db" in text and "does not exist" in text and "Traceback" not in text


def test_debug_shows_the_cause_of_a_start_up_failure(tmp_path: Path) -> None:
    port = closed_port()
    conf = write(tmp_path, {**CONFIG, "database": f"postgresql://modelyard:hunter2pass@127.0.0.1:{port}/gw"})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()), "--log-level", "debug", timeout=30)
    text = out.stdout + out.stderr
    assert out.returncode == EXIT_DATABASE, text
    assert "Traceback" in text and "ConnectionRefusedError" in text
    assert "hunter2pass" not in text


def test_an_unexpected_start_up_exception_keeps_its_traceback(tmp_path: Path) -> None:
    write(tmp_path, CONFIG)
    code = (
        "import sys\n"
        "from modelyard.gateway.services import Services\n"
        "async def boom(*a, **k):\n"
        "    raise RuntimeError('a bug at start-up')\n"
        "Services.start = boom\n"
        "from modelyard.cli import main\n"
        "sys.argv = ['modelyard', 'serve', '--config', 'c.yaml', '--port', sys.argv[1]]\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(free_port())], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    text = out.stdout + out.stderr
    assert out.returncode == EXIT_UNEXPECTED, text
    assert "Traceback" in text and "RuntimeError: a bug at start-up" in text


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_tls_file_that_cannot_be_loaded_is_a_config_error(tmp_path: Path, workers: str) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    provider = {"kind": "openai", "base_url": "https://127.0.0.1:9/v1", "api_key": "x", "tls": {"ca_bundle": "ca.pem"}}
    conf = write(tmp_path, {**CONFIG, "providers": {"o": provider}})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()), "--workers", workers, timeout=30)
    text = one_line(out)
    assert out.returncode == EXIT_CONFIG, text
    assert "config error" in text and "providers.o.tls" in text and "Traceback" not in text


def test_a_missing_tls_file_is_a_config_error(tmp_path: Path) -> None:
    provider = {"kind": "openai", "base_url": "https://x/v1", "api_key": "x", "tls": {"client_cert": "gone.pem"}}
    conf = write(tmp_path, {**CONFIG, "providers": {"o": provider}})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()))
    text = one_line(out)
    assert out.returncode == EXIT_CONFIG and "providers.o.tls.client_cert" in text and "gone.pem" in text, text
    assert "Traceback" not in text


def test_a_missing_redis_tls_file_is_a_config_error(tmp_path: Path) -> None:
    state = "rediss://:hunter2pass@127.0.0.1:6380/0?ssl_ca_certs=/nonexistent/ca.pem"
    conf = write(tmp_path, {**CONFIG, "state": state})
    out = serve(tmp_path, "--config", conf, "--port", str(free_port()), timeout=15)
    text = one_line(out)
    assert out.returncode == EXIT_CONFIG, text
    assert "state" in text and "/nonexistent/ca.pem" in text and "ssl_ca_certs" in text
    assert "hunter2pass" not in text and "Traceback" not in text


def test_an_unreachable_redis_is_a_warning_naming_it_and_the_gateway_serves(tmp_path: Path) -> None:
    """Shared state fails open by design (docs/deployment.md): a replica that starts while Redis is
    away serves with per-process limits, and says so in one line that names the server."""
    port = closed_port()
    cfg = {**CONFIG, "state": f"redis://:hunter2pass@127.0.0.1:{port}/0"}
    srv = ServerProcess(cfg, tmp_path)
    try:
        assert httpx.get(srv.url + "/health", timeout=5).status_code == 200
        log = srv.log()
    finally:
        srv.stop()
    assert f"redis://:***@127.0.0.1:{port}/0" in log and "unreachable" in log, log
    assert "hunter2pass" not in log and "Traceback" not in log


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:  # a connection the aborted restart's worker took down with it
        return False


def test_a_worker_restart_that_fails_after_the_start_is_logged_and_a_stop_still_exits_0(tmp_path: Path) -> None:
    """With --workers, SIGHUP starts new workers; one that cannot start (a broken config) is a logged
    line, the old workers keep serving, and a later SIGTERM still ends the parent with 0."""
    srv = ServerProcess({**CONFIG, "database": "sqlite:///./gw.db"}, tmp_path, args=["--workers", "2"])
    try:
        assert wait_for(lambda: srv.log().count("Application startup complete") == 2, timeout=30), srv.log()
        with srv.config_path.open("a") as f:
            f.write("bogus_key: 1\n")
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: "aborting the restart" in srv.log(), timeout=30), srv.log()
        assert wait_for(lambda: _healthy(srv.url), timeout=10), srv.log()
    finally:
        code = srv.stop()
    log = srv.log()
    assert code == 0, log
    assert "config error" in log and "bogus_key" in log and "Traceback" not in log


def test_a_master_key_that_is_not_the_one_used_is_a_clear_error(tmp_path: Path) -> None:
    conf = write(tmp_path, {**CONFIG, "database": "sqlite:///./gw.db"})
    first = ServerProcess(None, tmp_path, args=["--config", conf], env={"MODELYARD_MASTER_KEY": "sk-first-4c1d9e7a2b"})
    first.stop()
    out = subprocess.run(
        [str(BIN / "modelyard"), "serve", "--config", conf, "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), "MODELYARD_MASTER_KEY": "sk-second-8f3e6b0c1a"},
    )
    text = one_line(out)
    assert out.returncode == EXIT_CONFIG, text
    assert "master key" in text and "previous master key" in text and "Traceback" not in text
    assert "sk-first" not in text and "sk-second" not in text


def test_an_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    out = serve(tmp_path, "--config", "missing.yaml", "--port", str(free_port()))
    text = one_line(out)
    assert out.returncode == EXIT_CONFIG and "missing.yaml" in text and "Traceback" not in text, text


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
