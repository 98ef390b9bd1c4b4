"""A fake Ollama server (native API) with a local-model lifecycle.

Routes: ``/api/chat``, ``/api/generate`` (including the empty-prompt load and the
``keep_alive: 0`` unload), ``/api/embed``, ``/api/embeddings`` (legacy), ``/api/tags``,
``/api/ps``, ``/api/show``, ``/api/pull``, ``/api/version`` and ``/``.

The fake keeps a set of *installed* models and a set of *loaded* ones.  The first request for a
model that is not loaded waits the model's load time (:meth:`FakeOllama.set_load_time`) and
reports it as ``load_duration``; the model then stays loaded for its ``keep_alive`` (default
``5m``; numbers are seconds, strings are Go durations such as ``"30s"``/``"1h"``/``"300ms"``,
negative means forever, ``0`` unloads at once).  A request for a model that is not installed
answers 404 ``{"error": "model \\"x\\" not found, try pulling it first"}``; ``/api/pull`` installs
models named in :attr:`FakeOllama.pullable` (the fake "registry").

Validation follows the real server: model required, ``messages`` a list of objects with a known
role and string content, images valid base64, tool-call arguments objects, options of the right
type.  Errors are ``{"error": "..."}``; streams are NDJSON ending with the ``done: true`` line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from modelyard.testing._fake_base import FakeServer, Fault, Prompt, Reply, count_tokens, fake_embedding, make_reply

__all__ = ["FakeOllama", "InstalledModel", "parse_keep_alive"]

_ROLES = {"system", "user", "assistant", "tool"}
_INT_OPTIONS = {
    "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "mirostat", "num_ctx", "num_batch", "num_gpu",
    "main_gpu", "num_thread",
}  # fmt: skip
_FLOAT_OPTIONS = {
    "top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty",
    "mirostat_tau", "mirostat_eta",
}  # fmt: skip
_BOOL_OPTIONS = {"penalize_newline", "numa", "low_vram", "vocab_only", "use_mmap", "use_mlock"}
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
#: Go's longest time.Duration, which Ollama uses for a negative keep_alive ("forever")
_FOREVER_S = 9223372036.854775807
_DEFAULT_KEEP_ALIVE_S = 300.0


def parse_keep_alive(value: Any) -> float:
    """Seconds from a ``keep_alive`` value the way Ollama reads it (inf for a negative one).

    Raises ValueError with Go's message for a string that is not a Go duration (``"-1"``).
    """
    if isinstance(value, bool):
        raise ValueError("json: cannot unmarshal bool into Go value of type api.Duration")
    if isinstance(value, int | float):
        return float("inf") if value < 0 else float(value)
    if not isinstance(value, str):
        raise ValueError("unsupported type for keep_alive")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{value}"')
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            unitless = re.fullmatch(r"\d+(?:\.\d*)?", body[pos:])
            reason = "missing unit in duration" if unitless else "invalid duration"
            raise ValueError(f'time: {reason} "{value}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return float("inf") if sign < 0 else total


def _canonical(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest`` (Ollama's default tag)."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _rfc3339(ts: float) -> str:
    when = datetime.fromtimestamp(ts, UTC)
    nanos = round((ts % 1) * 1e9) % 1_000_000_000
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


@dataclass(slots=True)
class InstalledModel:
    """What ``/api/tags``, ``/api/show`` and ``/api/ps`` report about an installed model."""

    name: str
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    context_length: int = 131072
    embedding_length: int = 3072
    size: int = 2_019_393_189
    embedding_only: bool = False
    modified_at: float = field(default_factory=time.time)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    @classmethod
    def guess(cls, name: str) -> InstalledModel:
        base = name.split(":", 1)[0].rsplit("/", 1)[-1]
        if "embed" in base:
            return cls(name, "nomic-bert", "137M", "F16", 2048, 768, 274_302_450, embedding_only=True)
        if base.startswith("mistral"):
            return cls(name, "llama", "7.2B", "Q4_0", 32768, 4096, 4_113_301_824)
        return cls(name)


@dataclass(slots=True)
class _StreamError:
    message: str
    after: int
    times: int | None


class FakeOllama(FakeServer):
    """Fake Ollama. Point a provider's ``base_url`` at :attr:`base_url` (the server root)."""

    kind = "ollama"
    version = "0.12.6"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: list[str] | None = None,
        pullable: list[str] | None = None,
        tool_call_ids: bool = False,
    ) -> None:
        super().__init__(host, port)
        names = models if models is not None else ["llama3.2:latest", "mistral:7b", "nomic-embed-text:latest"]
        self._initial = [_canonical(n) for n in names]
        self.installed: dict[str, InstalledModel] = {name: InstalledModel.guess(name) for name in self._initial}
        #: names the fake "registry" can pull
        self.pullable: set[str] = {_canonical(n) for n in (pullable or ["qwen2.5:0.5b", "llava:latest"])}
        #: True: answer tool calls with an ``id`` like Ollama >= 0.12; False: no id, like older versions
        self.tool_call_ids = tool_call_ids
        self._load_times: dict[str, float] = {}
        #: loaded model -> expiry (time.time() seconds; inf: never)
        self._loaded: dict[str, float] = {}
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._load_counts: dict[str, int] = {}
        self._stream_errors: dict[str, list[_StreamError]] = {}

    @property
    def base_url(self) -> str:
        return self.url

    # -- public controls ---------------------------------------------------------------

    def install(self, name: str, model: InstalledModel | None = None) -> None:
        name = _canonical(name)
        with self._lock:
            self.installed[name] = model or InstalledModel.guess(name)

    def set_load_time(self, model: str, seconds: float) -> None:
        """How long loading ``model`` into memory takes (default 0)."""
        with self._lock:
            self._load_times[_canonical(model)] = seconds

    def loaded(self) -> dict[str, float]:
        """Loaded models and when they expire (``time.time()`` seconds; inf: never)."""
        now = time.time()
        with self._lock:
            return {m: exp for m, exp in self._loaded.items() if exp > now}

    def is_loaded(self, model: str) -> bool:
        return _canonical(model) in self.loaded()

    def load_count(self, model: str) -> int:
        """How many times ``model`` was loaded into memory."""
        with self._lock:
            return self._load_counts.get(_canonical(model), 0)

    def inject_stream_error(self, model: str, message: str, *, after: int = 1, times: int | None = 1) -> None:
        """Make the next streamed answer for ``model`` send ``{"error": message}`` after ``after`` lines."""
        with self._lock:
            self._stream_errors.setdefault(_canonical(model), []).append(_StreamError(message, after, times))

    def reset(self) -> None:
        """Also forget loaded models, load times and pulled models (back to the initial install set)."""
        super().reset()
        with self._lock:
            self._loaded.clear()
            self._load_counts.clear()
            self._load_times.clear()
            self._stream_errors.clear()
            self.installed = {name: InstalledModel.guess(name) for name in self._initial}

    # -- FakeServer hooks --------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/generate", self._generate)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_post("/api/embeddings", self._embeddings)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/show", self._show)
        app.router.add_post("/api/pull", self._pull)

    def error_response(self, status: int, message: str, code: str | None) -> web.Response:
        return self.json({"error": message}, status)

    # -- lifecycle internals -----------------------------------------------------------

    def _installed(self, model: str) -> InstalledModel:
        with self._lock:
            info = self.installed.get(model)
        if info is None:
            raise self.bad_request(f'model "{model}" not found, try pulling it first', status=404)
        return info

    def _keep_alive(self, body: dict[str, Any]) -> float:
        if body.get("keep_alive") is None:
            return _DEFAULT_KEEP_ALIVE_S
        try:
            return parse_keep_alive(body["keep_alive"])
        except ValueError as exc:
            raise self.bad_request(str(exc)) from None

    async def _ensure_loaded(self, model: str) -> float:
        """Load ``model`` unless it is loaded; returns the seconds spent (the load_duration)."""
        start = time.perf_counter()
        while True:
            with self._lock:
                expiry = self._loaded.get(model, 0.0)
                pending = self._loading.get(model)
            if expiry > time.time():
                return time.perf_counter() - start
            if pending is not None:
                await asyncio.shield(pending)
                continue
            break
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._loading[model] = future
            load_time = self._load_times.get(model, 0.0)
        try:
            if load_time:
                await asyncio.sleep(load_time)
            with self._lock:
                self._loaded[model] = time.time() + _DEFAULT_KEEP_ALIVE_S
                self._load_counts[model] = self._load_counts.get(model, 0) + 1
        finally:
            with self._lock:
                self._loading.pop(model, None)
            future.set_result(None)
        return time.perf_counter() - start

    def _touch(self, model: str, keep_alive: float) -> None:
        """Set the expiry of a loaded model after a request, as Ollama does."""
        with self._lock:
            if keep_alive <= 0:
                self._loaded.pop(model, None)
            else:
                self._loaded[model] = math.inf if math.isinf(keep_alive) else time.time() + keep_alive

    def _unload(self, model: str) -> None:
        with self._lock:
            self._loaded.pop(model, None)

    # -- endpoints ---------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return self.json({"version": self.version})

    async def _tags(self, request: web.Request) -> web.Response:
        with self._lock:
            models = list(self.installed.values())
        return self.json(
            {
                "models": [
                    {
                        "name": m.name,
                        "model": m.name,
                        "modified_at": _rfc3339(m.modified_at),
                        "size": m.size,
                        "digest": m.digest,
                        "details": m.details(),
                    }
                    for m in models
                ]
            }
        )

    async def _ps(self, request: web.Request) -> web.Response:
        now = time.time()
        with self._lock:
            for name in [n for n, exp in self._loaded.items() if exp <= now]:
                del self._loaded[name]
            loaded = [(self.installed[n], exp) for n, exp in self._loaded.items() if n in self.installed]
        loaded.sort(key=lambda item: -item[1])
        return self.json(
            {
                "models": [
                    {
                        "name": m.name,
                        "model": m.name,
                        "size": m.size,
                        "digest": m.digest,
                        "details": m.details(),
                        "expires_at": _rfc3339(min(exp, now + _FOREVER_S)),
                        "size_vram": m.size,
                        "context_length": 4096,
                    }
                    for m, exp in loaded
                ]
            }
        )

    async def _show(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise self.bad_request("model is required")
        model = _canonical(name)
        with self._lock:
            m = self.installed.get(model)
        if m is None:
            raise self.bad_request(f"model '{name}' not found", status=404)
        arch = m.family
        return self.json(
            {
                "license": "fake license",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {m.name}\n',
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": m.details(),
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": 3_212_749_888,
                    f"{arch}.context_length": m.context_length,
                    f"{arch}.embedding_length": m.embedding_length,
                },
                "capabilities": ["embedding"] if m.embedding_only else ["completion", "tools", "vision"],
                "modified_at": _rfc3339(m.modified_at),
            }
        )

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise self.bad_request("invalid model name")
        model = _canonical(name)
        fault = await self.begin(request, model, body)
        with self._lock:
            known = model in self.installed or model in self.pullable
        digest = hashlib.sha256(model.encode()).hexdigest()
        total = 2_000_000
        progress: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if known:
            progress += [
                {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": total, "completed": done}
                for done in (0, total // 2, total)
            ]
            progress += [{"status": s} for s in ("verifying sha256 digest", "writing manifest")]
            terminal = {"status": "success"}
        else:
            terminal = {"error": "pull model manifest: file does not exist"}
        if body.get("stream") is False:
            if not known:
                return self.json(terminal, 500)
            self.install(model)
            return self.json(terminal)
        resp = await self.write_stream(
            request,
            [orjson.dumps(p) + b"\n" for p in progress],
            fault,
            terminal=orjson.dumps(terminal) + b"\n",
            malformed=b'{"status": "pulling\n',
            content_type="application/x-ndjson",
        )
        if known and (fault is None or (fault.cut_after is None and not fault.no_done)):
            self.install(model)
        return resp

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = self._model(body)
        info = self._installed(model)
        keep_alive = self._keep_alive(body)
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise self.bad_request(
                "json: cannot unmarshal " + _go_type(messages) + " into Go struct field ChatRequest.messages"
            )
        if not messages:  # load / unload
            return await self._load_or_unload(request, model, body, keep_alive, chat=True)
        if info.embedding_only:
            raise self.bad_request(f'"{body["model"]}" does not support chat')
        prompt = self._chat_prompt(model, messages, body)
        thinking = self._thinking(model, body.get("think"), prompt)
        fault = await self.begin(request, model, body)
        load_s = await self._ensure_loaded(model)
        reply = make_reply(prompt, script=self.scripted(prompt))
        self._touch(model, keep_alive)
        created = time.time()
        final = _final(model, created, reply, load_s)
        calls = self._tool_calls(reply)
        if body.get("stream") is False:
            final["message"] = {"role": "assistant", "content": reply.text or ""}
            if thinking:
                final["message"]["thinking"] = thinking
            if calls:
                final["message"]["tool_calls"] = calls
            return self.json(final)
        lines = [
            {
                "model": model,
                "created_at": _rfc3339(created),
                "message": {"role": "assistant", "content": p},
                "done": False,
            }
            for p in reply.pieces()
        ]
        if thinking:
            lines.insert(
                0,
                {
                    "model": model,
                    "created_at": _rfc3339(created),
                    "message": {"role": "assistant", "content": "", "thinking": thinking},
                    "done": False,
                },
            )
        if calls:
            lines.append(
                {
                    "model": model,
                    "created_at": _rfc3339(created),
                    "message": {"role": "assistant", "content": "", "tool_calls": calls},
                    "done": False,
                }
            )
        final["message"] = {"role": "assistant", "content": ""}
        return await self._stream(request, model, lines, final, fault)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = self._model(body)
        info = self._installed(model)
        keep_alive = self._keep_alive(body)
        text = body.get("prompt")
        if text is not None and not isinstance(text, str):
            raise self.bad_request(
                "json: cannot unmarshal "
                + _go_type(text)
                + " into Go struct field GenerateRequest.prompt of type string"
            )
        if not text:
            return await self._load_or_unload(request, model, body, keep_alive, chat=False)
        if info.embedding_only:
            raise self.bad_request(f'"{body["model"]}" does not support generate')
        system = body.get("system") if isinstance(body.get("system"), str) else ""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text, **({"images": body["images"]} if body.get("images") else {})}
        ]
        prompt = self._chat_prompt(model, messages, body)
        self._thinking(model, body.get("think"), prompt)  # validated (generate answers carry no thinking here)
        fault = await self.begin(request, model, body)
        load_s = await self._ensure_loaded(model)
        prompt.tools = []  # /api/generate has no tools
        reply = make_reply(prompt, script=self.scripted(prompt))
        self._touch(model, keep_alive)
        created = time.time()
        final = _final(model, created, reply, load_s)
        final["context"] = [1, 2, 3]
        if body.get("stream") is False:
            final["response"] = reply.text or ""
            return self.json(final)
        lines = [
            {"model": model, "created_at": _rfc3339(created), "response": p, "done": False} for p in reply.pieces()
        ]
        final["response"] = ""
        return await self._stream(request, model, lines, final, fault)

    async def _embed(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        model = self._model(body)
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(i, str) for i in raw):
            inputs = list(raw)
        elif raw is None:
            inputs = []
        else:
            raise self.bad_request("invalid input type")
        info = self._installed(model)
        keep_alive = self._keep_alive(body)
        dims = body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 0):
            raise self.bad_request("dimensions must be a non-negative integer")
        await self.begin(request, model, body)
        start = time.perf_counter()
        load_s = await self._ensure_loaded(model)
        self._touch(model, keep_alive)
        size = dims if dims and dims < info.embedding_length else info.embedding_length
        vectors = [fake_embedding(text, size) for text in inputs]
        return self.json(
            {
                "model": model,
                "embeddings": vectors,
                "total_duration": int((time.perf_counter() - start) * 1e9) + 1,
                "load_duration": int(load_s * 1e9) + 1,
                "prompt_eval_count": sum(count_tokens(t) + 2 for t in inputs),
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise self.bad_request("model is required")
        model = _canonical(name)
        info = self._installed(model)
        keep_alive = self._keep_alive(body)
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise self.bad_request(
                "json: cannot unmarshal " + _go_type(prompt) + " into Go struct field of type string"
            )
        await self.begin(request, model, body)
        await self._ensure_loaded(model)
        self._touch(model, keep_alive)
        if not prompt:
            return self.json({"embedding": []})
        return self.json({"embedding": fake_embedding(prompt, info.embedding_length)})

    # -- helpers -----------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not await request.read():
            raise self.bad_request("missing request body")
        body = await self.read_json(request)
        if not isinstance(body, dict):
            raise self.bad_request("json: cannot unmarshal " + _go_type(body) + " into Go value of type api.Request")
        return body

    def _model(self, body: dict[str, Any]) -> str:
        name = body.get("model")
        if not isinstance(name, str) or not name.strip():
            raise self.bad_request("model is required")
        return _canonical(name)

    async def _load_or_unload(
        self, request: web.Request, model: str, body: dict[str, Any], keep_alive: float, *, chat: bool
    ) -> web.Response:
        created = _rfc3339(time.time())
        out: dict[str, Any] = {"model": body["model"], "created_at": created}
        if chat:
            out["message"] = {"role": "assistant", "content": ""}
        else:
            out["response"] = ""
        if keep_alive == 0:
            self._unload(model)
            return self.json({**out, "done": True, "done_reason": "unload"})
        await self.begin(request, model, body)
        await self._ensure_loaded(model)
        self._touch(model, keep_alive)
        return self.json({**out, "done": True, "done_reason": "load"})

    def _thinking(self, model: str, think: Any, prompt: Prompt) -> str | None:
        """The reasoning the model writes for ``think``, refusing what Ollama refuses: a level for
        a model other than gpt-oss, thinking for a model that cannot think.  gpt-oss always thinks
        (it ignores true/false)."""
        name = model.split("/")[-1]
        oss = name.startswith("gpt-oss")
        thinks = oss or (name.startswith(_THINKERS) and not name.startswith("qwen3-coder"))
        if isinstance(think, str):
            if not oss:
                raise self.bad_request(f'think value "{think}" is not supported for this model')
            if think not in ("low", "medium", "high"):
                raise self.bad_request(
                    f'invalid think value: "{think}" (must be "high", "medium", "low", true, or false)'
                )
        elif think is not None and not isinstance(think, bool):
            raise self.bad_request(
                "json: cannot unmarshal " + _go_type(think) + " into Go struct field ChatRequest.think"
            )
        if think is True and not thinks:
            raise self.bad_request(f'"{model}" does not support thinking')
        if not (oss or think is True):
            return None
        return f"The user asks: {prompt.last_user_text or 'a follow-up'}. I will answer briefly."

    def _chat_prompt(self, model: str, messages: list[Any], body: dict[str, Any]) -> Prompt:
        prompt = Prompt(model=model, message_count=len(messages))
        texts: list[str] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise self.bad_request(f"json: cannot unmarshal {_go_type(m)} into Go struct field of type api.Message")
            role = m.get("role")
            if not isinstance(role, str) or role.lower() not in _ROLES:
                raise self.bad_request(f"invalid role {role!r} in messages[{i}]")
            content = m.get("content")
            if content is not None and not isinstance(content, str):
                raise self.bad_request(
                    f"json: cannot unmarshal {_go_type(content)} into Go struct field "
                    "Message.messages.content of type string"
                )
            for img in m.get("images") or []:
                if not isinstance(img, str):
                    raise self.bad_request("json: cannot unmarshal into Go struct field Message.messages.images")
                try:
                    base64.b64decode(img, validate=True)
                except (binascii.Error, ValueError):
                    raise self.bad_request("illegal base64 data at input byte 0") from None
                prompt.image_count += 1
            for call in m.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise self.bad_request(f"invalid tool call in messages[{i}]")
                if not isinstance(fn.get("arguments", {}), dict):
                    raise self.bad_request(
                        f"json: cannot unmarshal {_go_type(fn['arguments'])} into Go struct field "
                        "ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments"
                    )
            if role.lower() == "tool":
                prompt.has_tool_result = True
            elif role.lower() == "user":
                prompt.last_user_text = content or ""
                prompt.has_tool_result = False
            texts.append(content or "")
        prompt.all_text = " ".join(texts)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise self.bad_request("json: cannot unmarshal into Go struct field ChatRequest.options")
        _check_options(options, self.bad_request)
        predict = options.get("num_predict")
        if isinstance(predict, int | float) and predict > 0:
            prompt.max_tokens = int(predict)
        prompt.stop = list(options.get("stop") or [])
        for tool in body.get("tools") or []:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not fn.get("name"):
                raise self.bad_request("invalid tool: expected {type: 'function', function: {name, ...}}")
            prompt.tools.append((fn["name"], fn.get("parameters") or {}))
        fmt = body.get("format")
        if fmt == "json":
            prompt.json_mode = True
        elif isinstance(fmt, dict):
            prompt.json_schema = fmt
        elif fmt not in (None, ""):
            raise self.bad_request(
                f'invalid format: {orjson.dumps(fmt).decode()}; expected "json" or a valid JSON Schema'
            )
        return prompt

    def _tool_calls(self, reply: Reply) -> list[dict[str, Any]]:
        calls = []
        for i, (cid, name, args) in enumerate(reply.tool_calls):
            call: dict[str, Any] = {"function": {"index": i, "name": name, "arguments": args}}
            if self.tool_call_ids:
                call = {"id": "call_" + cid.removeprefix("call_")[:8], **call}
            calls.append(call)
        return calls

    async def _stream(
        self, request: web.Request, model: str, lines: list[dict[str, Any]], final: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        frames = [orjson.dumps(line) + b"\n" for line in lines]
        terminal: bytes | None = orjson.dumps(final) + b"\n"
        with self._lock:
            queue = self._stream_errors.get(model)
            err = queue[0] if queue else None
            if err is not None and err.times is not None:
                err.times -= 1
                if err.times <= 0 and queue:
                    queue.pop(0)
        if err is not None:
            frames = [*frames[: err.after], orjson.dumps({"error": err.message}) + b"\n"]
            terminal = None
        return await self.write_stream(
            request,
            frames,
            fault,
            terminal=terminal,
            malformed=b'{"model": "' + model.encode() + b'", "message": {"role": "assistant", "content": \n',
            content_type="application/x-ndjson",
        )


def _final(model: str, created: float, reply: Reply, load_s: float) -> dict[str, Any]:
    load_ns = int(load_s * 1e9) + 1
    prompt_ns = 1_000_000 * max(1, reply.input_tokens)
    eval_ns = 2_000_000 * max(1, reply.output_tokens)
    return {
        "model": model,
        "created_at": _rfc3339(created),
        "done": True,
        "done_reason": "length" if reply.finish == "length" else "stop",
        "total_duration": load_ns + prompt_ns + eval_ns,
        "load_duration": load_ns,
        "prompt_eval_count": reply.input_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": reply.output_tokens,
        "eval_duration": eval_ns,
    }


#: models that can think (besides gpt-oss, which always does)
_THINKERS = ("qwen3", "deepseek-r1", "qwq", "magistral")


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _check_options(options: dict[str, Any], bad: Any) -> None:
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS or key in _FLOAT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                kind = "integer" if key in _INT_OPTIONS else "float32"
                raise bad(f'option "{key}" must be of type {kind}')
        elif key in _BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise bad(f'option "{key}" must be of type boolean')
        elif key == "stop" and (not isinstance(value, list) or not all(isinstance(s, str) for s in value)):
            raise bad(f'option "{key}" must be of an array of strings')
