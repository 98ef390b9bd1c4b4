"""The shipped example configs, end to end through the fakes (over real HTTP)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelyard import Gateway
from modelyard.config import load_config
from modelyard.testing import FakeGemini, FakeOllama, FakeOpenAI
from tests.helpers import ROOT, ServerProcess

EXAMPLES = ROOT / "examples"
MSG = [{"role": "user", "content": "hello"}]

AGENTS = {
    "project-planner": (["model_1"], ["model_2", "model_3"]),
    "frontend-developer": (["model_4", "model_5", "model_6"], ["model_7", "model_8"]),
    "backend-developer": (["model_9", "model_10", "model_11"], ["model_12", "model_13"]),
    "database-designer": (["model_14", "model_15"], ["model_16"]),
    "ui-ux-designer": (["model_17", "model_18"], ["model_19"]),
    "code-reviewer": (["model_3"], ["model_1", "model_2"]),
    "deployment-agent": (["model_19"], ["model_18", "model_17"]),
}


@pytest.fixture
async def vanchin() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


async def test_agents_allocation_round_robin_and_backups(vanchin: FakeOpenAI) -> None:
    cfg = load_config(EXAMPLES / "agents.yaml", env={"VANCHIN_API_KEY": "k", "VANCHIN_BASE_URL": vanchin.base_url})
    assert len(cfg.models) == 19
    for name, (primary, backups) in AGENTS.items():
        route = cfg.routes[name]
        assert list(route.models) == primary and list(route.fallbacks) == backups
        assert route.strategy == "round_robin"
    assert list(cfg.models) == [f"model_{i}" for i in range(1, 20)]
    assert all(m.max_concurrency == 5 and m.timeout_s == 30 and m.max_queue > 0 for m in cfg.models.values())
    assert all(m.rpm == 60 and m.description for m in cfg.models.values())
    (pool,) = cfg.budgets
    assert (pool.scope, pool.limit_tokens, pool.period, pool.alert_at) == ("global", 20_000_000, "total", (0.8,))
    assert all(r.cache_ttl_s == 3600 and r.cache_max_ttl_s == 86400 for r in cfg.routes.values())
    async with Gateway(cfg, database=None) as gw:
        for _ in range(6):  # the route caches answers: ask past the cache to see the rotation
            res = await gw.chat(MSG, route="frontend-developer", modelyard={"cache": False}, raise_on_error=True)
            assert res.model_used in ("model_4", "model_5", "model_6")
        assert [vanchin.attempts(m) for m in ("model_4", "model_5", "model_6")] == [2, 2, 2]  # round robin in the pool
        for m in ("model_4", "model_5", "model_6"):
            vanchin.inject(m, status=503)
        res = await gw.chat(MSG, route="frontend-developer", modelyard={"cache": False}, raise_on_error=True)
        assert res.model_used == "model_7" and res.is_fallback
        vanchin.clear_faults()
        for name, (primary, _) in AGENTS.items():
            res = await gw.chat(MSG, route=name, modelyard={"cache": False}, raise_on_error=True)
            assert res.model_used in primary


async def test_agents_cache_and_shared_token_pool(vanchin: FakeOpenAI) -> None:
    cfg = load_config(EXAMPLES / "agents.yaml", env={"VANCHIN_API_KEY": "k", "VANCHIN_BASE_URL": vanchin.base_url})
    async with Gateway(cfg, database=None) as gw:
        question = [{"role": "user", "content": "what is our coding style?"}]
        first = await gw.chat(question, route="code-reviewer", raise_on_error=True)
        again = await gw.chat(question, route="code-reviewer", raise_on_error=True)
        assert first.content == again.content and vanchin.attempts("model_3") == 1  # the cache answered
        static = await gw.chat(
            [{"role": "user", "content": "the style guide"}],
            route="code-reviewer",
            modelyard={"cache_ttl_s": 86400},
            raise_on_error=True,
        )
        assert static.ok
        assert gw.services is not None
        rows = {b.budget: b for b in await gw.services.ledger.usage()}
        pool = rows["shared-pool"]
        assert pool.limit_tokens == 20_000_000 and pool.used_tokens > 0  # every agent draws on one pool


async def test_agents_concurrency_limit_queues(vanchin: FakeOpenAI) -> None:
    cfg = load_config(EXAMPLES / "agents.yaml", env={"VANCHIN_API_KEY": "k", "VANCHIN_BASE_URL": vanchin.base_url})
    async with Gateway(cfg, database=None) as gw:
        vanchin.inject("*", delay_s=0.2)
        limiter = gw.runtime.models["model_19"].state.limiter
        peak = 0

        async def watch() -> None:
            nonlocal peak
            for _ in range(40):
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(0.02)

        results = await asyncio.gather(
            watch(), *(gw.chat(MSG, route="deployment-agent", modelyard={"fallback": False}) for _ in range(12))
        )
        assert all(r.ok for r in results[1:])  # type: ignore[union-attr]
        assert peak == 5  # never more than 5 at once; the rest waited in the queue


async def test_local_first_tasks_and_cloud_fallback() -> None:
    async with FakeOllama() as ollama, FakeGemini() as gemini, FakeOpenAI() as openai_fake:
        ollama.install("llama3:8b")  # mistral:7b is installed by default; codellama:13b is not
        env = {
            "OLLAMA_HOST": ollama.url,
            "GEMINI_BASE_URL": gemini.url,
            "GEMINI_API_KEY": "g",
            "OPENAI_BASE_URL": openai_fake.base_url,
            "OPENAI_API_KEY": "o",
        }
        cfg = load_config(EXAMPLES / "local-first.yaml", env=env)
        async with Gateway(cfg, database=None) as gw:
            route = cfg.routes["assistant"]
            assert {route.tasks[t] for t in ("erd", "architecture")} == {"mermaid"} and route.tasks["tasks"] == "jira"
            assert all(r.retries == 2 and r.timeout_s == 120 and r.validators for r in cfg.routes.values())
            ollama_cfg = cfg.providers["ollama"]
            assert ollama_cfg.max_loaded == 3 and ollama_cfg.memory_budget_mb == 20000  # type: ignore[union-attr]
            diagram = [{"role": "user", "content": "graph TD; A-->B"}]  # the fakes echo: a Mermaid answer
            res = await gw.chat(diagram, modelyard={"task": "diagram"}, raise_on_error=True)
            assert res.model_used == "mermaid-mistral" and not res.is_fallback
            # codellama:13b is not installed in the fake: the cloud answers, and says so
            res = await gw.chat(MSG, modelyard={"task": "code"}, raise_on_error=True)
            assert res.model_used == "gemini-flash" and res.is_fallback
            assert "ollama pull" in (res.attempts[0].message or "")
            gemini.inject("*", status=503)
            res = await gw.chat(MSG, modelyard={"task": "html"}, raise_on_error=True)
            assert res.model_used == "gpt-4o-mini"
            before = gemini.attempts() + openai_fake.attempts()
            res = await gw.chat(MSG, modelyard={"task": "code", "local_only": True})
            assert not res.ok and "local_only" in (res.error or "")
            assert gemini.attempts() + openai_fake.attempts() == before  # nothing left the machine
            gemini.clear_faults()
            # an answer that is not a Mermaid diagram is invalid output: each next model is asked in turn
            res = await gw.chat([{"role": "user", "content": "say hello"}], modelyard={"task": "erd"})
            assert not res.ok
            assert [(a.model, a.error_class) for a in res.attempts] == [
                ("mermaid-mistral", "validation"),
                ("gemini-flash", "validation"),
                ("gpt-4o-mini", "validation"),
            ]


async def test_custom_first_and_explicit_provider_model(vanchin: FakeOpenAI) -> None:
    async with FakeOpenAI() as openai_fake:
        env = {"CUSTOM_BASE_URL": vanchin.base_url, "OPENAI_BASE_URL": openai_fake.base_url, "OPENAI_API_KEY": "o"}
        cfg = load_config(EXAMPLES / "custom-first.yaml", env=env)
        assert cfg.models["custom-coder"].timeout_s == 30
        async with Gateway(cfg, database=None) as gw:
            res = await gw.chat(MSG, raise_on_error=True)
            assert res.model_used == "custom-coder" and openai_fake.attempts() == 0
            res = await gw.chat(MSG, model="openai:gpt-4o", raise_on_error=True)
            assert res.model_used == "openai:gpt-4o"
            assert vanchin.attempts() == 1 and openai_fake.attempts("gpt-4o") == 1
            vanchin.inject("*", status=500)
            res = await gw.chat(MSG, raise_on_error=True)
            assert res.model_used == "gpt-4o" and res.is_fallback


def test_examples_serve(tmp_path: Path) -> None:
    """Each example starts as a real server (providers unreachable is fine: it must start and list routes)."""
    for name in ("agents.yaml", "local-first.yaml", "custom-first.yaml"):
        cfg_text = (EXAMPLES / name).read_text()
        (tmp_path / name).write_text(cfg_text)
        srv = ServerProcess(
            None,
            tmp_path,
            args=["--config", str(tmp_path / name)],
            env={"VANCHIN_API_KEY": "k", "GEMINI_API_KEY": "g", "OPENAI_API_KEY": "o"},
        )
        try:
            ids = [m["id"] for m in httpx.get(f"{srv.url}/v1/models").json()["data"]]
            assert ids
        finally:
            srv.proc.send_signal(signal.SIGTERM)
            srv.stop()
