"""What ``modelyard serve`` imports for a configuration like the benchmark's (issue #20).

Everything a configuration does not use is imported on first use only: idle memory and the
cold start pay for what the gateway runs, not for what it could run.  The real entry point
(``modelyard.cli:main``) serves the config in a subprocess; after its first answers (a
completion, the model list) it writes ``sorted(sys.modules)`` to a file, and this test fails if
a module of an unused feature is among them.  The CLI framework (Typer) and FastAPI (the
endpoints other than the hot ones, the OpenAPI documents) are among them: both are built on
first use, and the hot endpoints answer without them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.helpers import free_port

#: the benchmark's configuration (bench/modelyard.bench.yaml) with a dead upstream: no dashboard
#: session, no tracing, no auto route (classifier), no stored Responses, no Redis, one provider kind
CONFIG = {
    "server": {"host": "127.0.0.1", "master_key": "sk-master-test-5b1e0c2d9f"},
    # a reference, as in the benchmark: no literal credential for the management plane to encrypt
    "providers": {"mock": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "${MOCK_API_KEY:-sk-t}"}},
    "models": {m: {"provider": "mock", "model": "gpt-4o-mini"} for m in ("m1", "m2", "m3")},
    "routes": {"bench": {"models": ["m1", "m2"], "fallbacks": ["m3"]}},
    "default_route": "bench",
    "budgets": [
        {"name": "all-spend", "scope": "global", "limit_usd": 1000000, "period": "month"},
        {"name": "per-key", "scope": "key", "limit_usd": 100000, "period": "day"},
    ],
}

#: modules (and their submodules) of features the configuration does not use
UNUSED = (
    "modelyard.server.ui",  # the dashboard (/ui)
    "jinja2",  # its templates
    "modelyard.compare",  # comparison runs (/admin/comparisons)
    "modelyard.server.compare_api",
    "modelyard.classify",  # the prompt classifier (auto routes)
    "modelyard.storage.responses",  # stored Responses-API answers
    "modelyard.server.manage_api",  # the management API (/admin/config, /admin/models, ...)
    "modelyard.server.admin",  # keys and organisations (/admin/keys, ...)
    "modelyard.server.accounting_api",  # /v1/stats, /v1/budgets, /v1/estimate
    "modelyard.providers.anthropic",  # provider adapters of kinds that are not configured
    "modelyard.providers.gemini",
    "modelyard.providers.ollama",
    "modelyard.providers.llamacpp",
    "opentelemetry",  # tracing (FastAPI imports opentelemetry's API: not imported either)
    "fastapi",  # built on the first request for an endpoint other than the hot ones (server/app.py)
    "modelyard.server.docs",
    "modelyard.server.openapi",
    "modelyard.server.sections",
    "redis",  # state: redis://
    "modelyard.storage.redis",
    "modelyard.storage.coordinator",
    "modelyard.cache.redis",
    "cryptography",  # stored provider credentials
    "alembic",  # migrations run without it
    "asyncpg",  # PostgreSQL
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.orm",  # SQLAlchemy's ORM (its asyncio extension imports it)
    "sqlalchemy.ext.asyncio",
    "numpy",
    "llama_cpp",  # the local model
    "rich",  # the CLI's tables and colours
    "typer",  # the CLI's other commands: `modelyard serve` starts without it (modelyard.cli, cli_serve)
    "modelyard.cli_app",
    "modelyard.cli_compare",
    "modelyard.cli_remote",
    "pydantic.v1",
)

#: the console script, plus a thread that writes the imported modules to a file when told to
BOOT = """
import os, sys, threading
def dump(path):
    import gc
    sys.stdin.readline()
    with open(path + ".part", "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
        fh.write(f"\\ngc:enabled={gc.isenabled()} gc:frozen={gc.get_freeze_count() > 10000}")
    os.replace(path + ".part", path)
threading.Thread(target=dump, args=(sys.argv.pop(1),), daemon=True).start()
from modelyard.cli import main
sys.argv[0] = "modelyard"
sys.exit(main())
"""


def _imported(unused: tuple[str, ...], modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == u or m.startswith(u + ".") for u in unused))


@pytest.fixture(scope="module")
def served_modules(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    tmp = tmp_path_factory.mktemp("serve-imports")
    config = {**CONFIG, "database": f"sqlite:///{tmp / 'modelyard.db'}", "usage": {"spill_path": str(tmp / "s.jsonl")}}
    (tmp / "modelyard.yaml").write_text(yaml.safe_dump(config))
    port, out = free_port(), tmp / "modules.txt"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "OLLAMA_HOST"}
    cmd = [sys.executable, "-c", BOOT, str(out), "serve", "--config", str(tmp / "modelyard.yaml"), "--port", str(port)]
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        auth = {"Authorization": f"Bearer {CONFIG['server']['master_key']}"}  # type: ignore[index]
        body = {"model": "bench", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 8}
        chat = httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=30)
        assert chat.status_code in (502, 503, 504), chat.text  # the upstream is down: answered by the pipeline
        assert httpx.get(f"{url}/v1/models", headers=auth, timeout=10).status_code == 200
        assert proc.stdin is not None
        proc.stdin.write(b"dump\n")
        proc.stdin.flush()
        while not out.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "serve.log").read_text()
            time.sleep(0.05)
        return set(out.read_text().split())
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_serve_imports_nothing_the_config_does_not_use(served_modules: set[str]) -> None:
    assert "modelyard.server.app" in served_modules and "modelyard.providers.openai" in served_modules
    assert not _imported(UNUSED, served_modules), "imported at start-up but not used by the config"


def test_the_collector_is_on_after_start_up(served_modules: set[str]) -> None:
    """``modelyard serve`` starts with the cyclic garbage collector off (modelyard.cli); the app's
    start-up freezes what it made and turns the collector back on (server/app.py: tune_gc)."""
    assert {"gc:enabled=True", "gc:frozen=True"} <= served_modules


def test_the_check_catches_an_unused_module(served_modules: set[str]) -> None:
    """The check above can fail: each entry of UNUSED is a real module name, and one of them
    imported is reported."""
    import importlib.util

    for name in UNUSED:
        assert importlib.util.find_spec(name.split(".")[0]) is not None or name in ("asyncpg", "llama_cpp", "numpy")
    assert _imported(UNUSED, served_modules | {"modelyard.compare.service"}) == ["modelyard.compare.service"]
