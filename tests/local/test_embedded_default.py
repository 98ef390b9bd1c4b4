"""The embedded default: with no key and no config, the gateway answers with the real local model."""

from __future__ import annotations

from pathlib import Path

import httpx

from modelyard import Gateway
from tests.helpers import ServerProcess


def test_nothing_configured_serves_the_local_model(tmp_path: Path) -> None:
    srv = ServerProcess(None, tmp_path)
    try:
        models = [m["id"] for m in httpx.get(f"{srv.url}/v1/models").json()["data"]]
        assert models[:2] == ["default", "local:gemma3-270m"]
        resp = httpx.post(
            f"{srv.url}/v1/chat/completions",
            json={"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "What is 2+2?"}]},
            timeout=180,
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model"] == "local:gemma3-270m" and resp.headers["x-modelyard-provider"] == "local"
        assert body["choices"][0]["message"]["content"].strip()  # a real, locally generated answer
        assert 0 < body["usage"]["completion_tokens"] <= 9
    finally:
        srv.stop()


async def test_the_sdk_runs_the_local_model_in_process() -> None:
    cfg = {
        "providers": {"local": {"kind": "llamacpp"}},
        "models": {"gemma": {"provider": "local", "model": "gemma3-270m"}},
    }
    async with Gateway.from_config(cfg, database=None) as gw:
        res = await gw.chat(
            [{"role": "user", "content": "Name a colour."}], model="gemma", max_tokens=6, raise_on_error=True
        )
        assert res.content and res.model_used == "gemma" and res.provider == "local"
        assert res.tokens_used > 0 and res.cost_usd == 0
        parts = [
            d async for d in gw.stream([{"role": "user", "content": "Name a fruit."}], model="gemma", max_tokens=6)
        ]
        assert "".join(parts).strip()
