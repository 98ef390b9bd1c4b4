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
    "project-planner": (["m1"], ["m2", "m3"]),
    "frontend-developer": (["m4", "m5", "m6"], ["m7", "m8"]),
    "backend-developer": (["m9", "m10", "m11"], ["m12", "m13"]),
    "database-designer": (["m14", "m15"], ["m16"]),
    "ui-ux-designer": (["m17", "m18"], ["m19"]),
    "code-reviewer": (["m3"], ["m1", "m2"]),
    "deployment-agent": (["m19"], ["m18", "m17"]),
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
    assert all(m.max_concurrency == 5 and m.timeout_s == 30 and m.max_queue > 0 for m in cfg.models.values())
    async with Gateway(cfg, database=None) as gw:
        for _ in range(6):
            res = await gw.chat(MSG, route="frontend-developer", raise_on_error=True)
            assert res.model_used in ("m4", "m5", "m6")
        assert [vanchin.attempts(m) for m in ("m4", "m5", "m6")] == [2, 2, 2]  # round robin in the pool
        for m in ("m4", "m5", "m6"):
            vanchin.inject(m, status=503)
        res = await gw.chat(MSG, route="frontend-developer", raise_on_error=True)
        assert res.model_used == "m7" and res.is_fallback
        vanchin.clear_faults()
        for name, (primary, _) in AGENTS.items():
            res = await gw.chat(MSG, route=name, raise_on_error=True)
            assert res.model_used in primary


async def test_agents_concurrency_limit_queues(vanchin: FakeOpenAI) -> None:
    cfg = load_config(EXAMPLES / "agents.yaml", env={"VANCHIN_API_KEY": "k", "VANCHIN_BASE_URL": vanchin.base_url})
    async with Gateway(cfg, database=None) as gw:
        vanchin.inject("*", delay_s=0.2)
        limiter = gw.runtime.models["m19"].state.limiter
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
            res = await gw.chat(MSG, modelyard={"task": "diagram"}, raise_on_error=True)
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


async def test_custom_first_and_explicit_provider_model(vanchin: FakeOpenAI) -> None:
    async with FakeOpenAI() as openai_fake:
        env = {"CUSTOM_BASE_URL": vanchin.base_url, "OPENAI_BASE_URL": openai_fake.base_url, "OPENAI_API_KEY": "o"}
        cfg = load_config(EXAMPLES / "custom-first.yaml", env=env)
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
