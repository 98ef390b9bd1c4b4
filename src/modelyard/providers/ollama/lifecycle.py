"""The lifecycle backend for an Ollama server: load, unload, pull and ``/api/ps``, through the adapter.

Ollama holds the models, so the manager's view is reconciled with ``/api/ps``.  Ollama is told
the same ``keep_alive`` as the manager uses, so a model still expires if the gateway goes away;
closing the backend (a reload, the gateway stopping) leaves Ollama's models alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelyard.errors import UpstreamStatusError
from modelyard.local.base import LoadResult, ProgressFn
from modelyard.local.settings import ModelSettings, keep_alive_for_ollama

if TYPE_CHECKING:
    from modelyard.providers.ollama.provider import OllamaProvider

__all__ = ["OllamaBackend", "canonical_ollama_name"]

#: keep_alive sent with a load when the model's keep_alive is 0 (a load with 0 would unload at once);
#: the manager unloads the model right after its use anyway
_LOAD_KEEP_ALIVE_S = 300.0
_MEMORY_WORDS = ("out of memory", "requires more system memory", "insufficient memory", "cudamalloc", "oom")


def canonical_ollama_name(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest``: Ollama's default tag, as ``/api/ps`` reports it."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaBackend:
    in_process = False

    def __init__(self, provider: OllamaProvider) -> None:
        self._provider = provider

    def canonical(self, name: str) -> str:
        return canonical_ollama_name(name)

    async def load(self, name: str, settings: ModelSettings, progress: ProgressFn) -> LoadResult:
        p = self._provider
        keep = settings.keep_alive_s if settings.keep_alive_s > 0 else _LOAD_KEEP_ALIVE_S
        try:
            try:
                await p.load(name, keep_alive=keep_alive_for_ollama(keep))
            except UpstreamStatusError as exc:
                if exc.code != "model_not_found" or not p.config.auto_pull:
                    raise
                await self._pull(name, progress)
                await p.load(name, keep_alive=keep_alive_for_ollama(keep))
        except UpstreamStatusError as exc:
            raise self._load_error(name, exc) from exc
        sizes = {m.name: m.size for m in await p.loaded_models()}
        return LoadResult(memory_bytes=sizes.get(name) or None)

    async def _pull(self, name: str, progress: ProgressFn) -> None:
        progress({"status": "pulling (auto_pull)"})
        try:
            async for line in self._provider.pull(name):
                progress(line)
        except UpstreamStatusError as exc:
            if exc.upstream_status != 404:
                raise
            raise UpstreamStatusError(
                f"{self._provider.name}: {name!r} is not installed and could not be pulled: {exc.message}",
                upstream_status=404,
                provider=self._provider.name,
                model=name,
                code="model_not_found",
            ) from exc

    def _load_error(self, name: str, exc: UpstreamStatusError) -> UpstreamStatusError:
        """A failed load: 4xx stays (not installed, bad request); 5xx becomes 503 load_failed / out_of_memory."""
        if exc.upstream_status < 500:
            return exc
        memory = any(w in exc.message.lower() for w in _MEMORY_WORDS)
        return UpstreamStatusError(
            f"{self._provider.name}: loading {name!r} failed: {exc.message}",
            upstream_status=503,
            provider=self._provider.name,
            model=name,
            code="out_of_memory" if memory else "load_failed",
        )

    async def unload(self, name: str) -> None:
        try:
            await self._provider.unload(name)
        except UpstreamStatusError as exc:
            if exc.upstream_status != 404:  # a model that is not installed is not loaded either
                raise

    async def loaded(self) -> dict[str, int] | None:
        return {m.name: m.size for m in await self._provider.loaded_models()}

    async def estimate_memory(self, name: str) -> int | None:
        for model in await self._provider.list_models():
            if canonical_ollama_name(model.id) == name:
                size = model.details.get("size")
                return int(size) if isinstance(size, int | float) else None
        return None

    async def close(self) -> None:
        return None
