"""llama.cpp pieces the ``llamacpp`` provider runs on: a loaded model, and one generation in a worker thread.

A generation runs ``Llama.create_completion(stream=True)`` in a thread of the loop's default
executor and hands each piece of text to the event loop with ``loop.call_soon_threadsafe``
through an ``asyncio.Queue``.  The model's lock passes to the thread: it is released when the
thread returns, so a request that goes away never leaves the model in use by two threads; the
thread notices the abandoned request at the next token (a stopping criterion) and stops.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import (
    ContextLengthExceededError,
    ModelyardError,
    ServiceUnavailableError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from modelyard.providers.llamacpp.prompts import PromptFormat, RenderedPrompt
from modelyard.types import FinishReason, Usage

__all__ = ["INSTALL_HINT", "Done", "Generation", "LlamaModel", "import_optional", "kv_cache_bytes"]

INSTALL_HINT = "pip install 'modelyard[local]'"


def import_optional(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ServiceUnavailableError(
            f"the llamacpp provider needs {what}, which is not installed: {INSTALL_HINT} ({exc})",
            code="local_runtime_missing",
        ) from exc


def kv_cache_bytes(metadata: Mapping[str, str], n_ctx: int) -> int:
    """The size of an f16 KV cache of ``n_ctx`` tokens, from GGUF metadata (0 when unknown)."""
    arch = metadata.get("general.architecture", "")

    def num(key: str, default: int = 0) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except (TypeError, ValueError):
            return default

    layers, heads, width = num("block_count"), num("attention.head_count"), num("embedding_length")
    kv_heads = num("attention.head_count_kv", heads)
    head_dim = width // heads if heads else 0
    return (
        n_ctx
        * layers
        * kv_heads
        * (num("attention.key_length", head_dim) + num("attention.value_length", head_dim))
        * 2
    )


@dataclass(slots=True, eq=False)
class LlamaModel:
    """One loaded GGUF model: a ``Llama`` instance and what the provider needs to know about it."""

    name: str
    path: Path
    llm: Any
    lock: asyncio.Lock
    n_ctx: int
    template: str | None
    bos: str
    eos: str
    memory_bytes: int

    @property
    def default_format(self) -> PromptFormat:
        return "template" if self.template else "qa"


@dataclass(slots=True)
class Done:
    """The end of an answer: why it stopped, and the tokens it took."""

    finish: FinishReason
    usage: Usage


class Generation:
    """One generation in a worker thread, its pieces handed to the event loop through a queue."""

    def __init__(
        self, instance: LlamaModel, rendered: RenderedPrompt, params: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.instance = instance
        self.rendered = rendered
        self.params = params
        self.loop = loop
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def start(self) -> None:
        future = self.loop.run_in_executor(None, self._run)
        future.add_done_callback(lambda _: self.instance.lock.release())

    def _emit(self, item: tuple[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel.set()

    def _run(self) -> None:
        try:
            self._generate()
        except BaseException as exc:
            self._emit(("error", exc))

    def _generate(self) -> None:
        llm, params = self.instance.llm, dict(self.params)
        llama_cpp = import_optional("llama_cpp", "llama-cpp-python")
        spec = params.pop("grammar_spec")
        if spec is not None:
            kind, schema = spec
            grammar_mod = llama_cpp.llama_grammar
            params["grammar"] = (
                grammar_mod.LlamaGrammar.from_json_schema(schema, verbose=False)
                if kind == "schema"
                else grammar_mod.LlamaGrammar.from_string(grammar_mod.JSON_GBNF, verbose=False)
            )
        tokens = llm.tokenize(self.rendered.text.encode("utf-8"), add_bos=self.rendered.add_bos, special=True)
        if len(tokens) >= self.instance.n_ctx:
            raise ContextLengthExceededError(
                f"the prompt is {len(tokens)} tokens, more than this local model's context of "
                f"{self.instance.n_ctx} tokens (n_ctx)",
                param="messages",
            )
        calls = 0

        def counting(_ids: Any, _logits: Any) -> bool:
            # called once per generated token, and once more after the last one
            nonlocal calls
            calls += 1
            return self.cancel.is_set()

        finish = "stop"
        stream = llm.create_completion(
            tokens, stream=True, stopping_criteria=llama_cpp.StoppingCriteriaList([counting]), **params
        )
        for chunk in stream:
            choice = chunk["choices"][0]
            if choice.get("text"):
                self._emit(("text", choice["text"]))
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
            if self.cancel.is_set():
                stream.close()
                return
        completion = max(0, calls - 1)
        usage = Usage(prompt_tokens=len(tokens), completion_tokens=completion, total_tokens=len(tokens) + completion)
        self._emit(("done", Done("length" if finish == "length" else "stop", usage)))

    async def results(self, deadline: float, provider: str, model: str) -> AsyncIterator[str | Done]:
        """The answer's text (whitespace trimmed at both ends unless it continues a prefill), then Done."""
        lead = not self.rendered.continues
        held = ""
        while True:
            remaining = deadline - self.loop.time()
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    kind, value = await self.queue.get()
            except TimeoutError:
                raise UpstreamTimeoutError(
                    f"{provider}: {model!r} did not finish within the timeout", provider=provider, model=model
                ) from None
            if kind == "error":
                raise _translate(value, provider, model)
            if kind == "done":
                yield value
                return
            text = held + str(value)
            if lead:
                text = text.lstrip()
                if not text:
                    continue
                lead = False
            stripped = text.rstrip()
            held = text[len(stripped) :]
            if stripped:
                yield stripped


def _translate(exc: BaseException, provider: str, model: str) -> BaseException:
    if isinstance(exc, ModelyardError | asyncio.CancelledError):
        return exc
    if isinstance(exc, MemoryError):
        return UpstreamStatusError(
            f"{provider}: {model!r} ran out of memory",
            upstream_status=503,
            provider=provider,
            model=model,
            code="out_of_memory",
        )
    message = f"{type(exc).__name__}: {exc}"
    if "exceed context window" in str(exc):
        return ContextLengthExceededError(f"{provider}: {message}", param="messages")
    return UpstreamStatusError(
        f"{provider}: generation with {model!r} failed: {message}", upstream_status=500, provider=provider, model=model
    )
