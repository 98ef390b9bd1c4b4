"""Probes: one tiny request to a model before a deploy activates it, and provider connection tests.

A chat model gets a 1-token completion, an embedding model one embedding.  A local model is
checked for presence only (is it in the provider's own listing: Ollama's tags, the GGUF files of
llama.cpp) unless its deploy asks ``probe: load``.  Every probe is cut at its timeout and
reports; it never raises.  Probes are recorded as usage with ``source: probe`` by the caller.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from modelyard.config.schema import LOCAL_KINDS
from modelyard.errors import ModelyardError, UpstreamStatusError
from modelyard.providers.base import CallOptions, Provider
from modelyard.routing.deployment import Deployment
from modelyard.scrub import scrub
from modelyard.types import ChatRequest, EmbeddingRequest, Message, Usage

__all__ = ["ProbeResult", "ProviderTest", "probe_model", "test_provider"]


@dataclass(slots=True)
class ProbeResult:
    model: str
    ok: bool
    latency_ms: float
    method: str
    error: str | None = None
    usage: Usage | None = None

    def public(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ok": self.ok,
            "latency_ms": round(self.latency_ms, 1),
            "method": self.method,
            "error": self.error,
        }


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ModelyardError):
        return scrub(exc.message)
    return scrub(f"{type(exc).__name__}: {exc}")


async def probe_model(dep: Deployment, *, timeout_s: float, load: bool = False) -> ProbeResult:
    """One tiny request to ``dep`` (or a presence check for a local model), within ``timeout_s``."""
    start = time.perf_counter()
    local = dep.provider.config.kind in LOCAL_KINDS
    if local and not load:
        method = "presence"
    else:
        method = "embedding" if dep.config.mode == "embedding" else "chat"
    call = CallOptions(timeout_s=min(timeout_s, dep.call.timeout_s), connect_timeout_s=dep.call.connect_timeout_s)
    usage: Usage | None = None
    try:
        async with asyncio.timeout(timeout_s):
            if method == "presence":
                listed = {m.id for m in await dep.provider.list_models()}
                if dep.upstream not in listed and f"{dep.upstream}:latest" not in listed:
                    shown = ", ".join(sorted(listed)[:10]) or "none"
                    raise LookupError(f"{dep.upstream!r} is not on provider {dep.provider.name!r} (it has: {shown})")
            elif method == "embedding":
                emb = await dep.provider.embed(EmbeddingRequest(model=dep.upstream, input=["ping"]), dep.upstream, call)
                usage = emb.usage
            else:
                req = ChatRequest(model=dep.upstream, messages=[Message(role="user", content="ping")], max_tokens=1)
                resp = await dep.provider.chat(req, dep.upstream, call)
                usage = resp.usage
    except LookupError as exc:
        return ProbeResult(dep.name, False, _ms(start), method, str(exc))
    except (Exception, TimeoutError) as exc:
        return ProbeResult(dep.name, False, _ms(start), method, _error(exc))
    return ProbeResult(dep.name, True, _ms(start), method, usage=usage)


@dataclass(slots=True)
class ProviderTest:
    provider: str
    reachable: bool = False
    auth_ok: bool | None = None
    models: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    probe: ProbeResult | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "reachable": self.reachable,
            "auth_ok": self.auth_ok,
            "models": self.models[:200],
            "model_count": len(self.models),
            "latency_ms": round(self.latency_ms, 1),
            "probe": self.probe.public() if self.probe is not None else None,
            "error": self.error,
        }


async def test_provider(provider: Provider, probe: Deployment | None, *, timeout_s: float) -> ProviderTest:
    """Connect, authenticate and list models, then a 1-token probe on ``probe`` (if given)."""
    result = ProviderTest(provider.name)
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            listed = await provider.list_models()
        result.reachable = True
        result.auth_ok = True
        result.models = sorted(m.id for m in listed)
    except UpstreamStatusError as exc:
        result.reachable = True
        result.auth_ok = exc.upstream_status not in (401, 403)
        if exc.upstream_status not in (404, 405):  # a listing not served is no failure of the provider
            result.error = _error(exc)
    except (Exception, TimeoutError) as exc:
        result.error = _error(exc)
    result.latency_ms = _ms(start)
    if probe is not None and result.reachable and result.auth_ok is not False:
        remaining = max(0.5, timeout_s - result.latency_ms / 1000)
        result.probe = await probe_model(probe, timeout_s=remaining)
        if not result.probe.ok and result.error is None:
            result.error = result.probe.error
    return result


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
