"""What every fake provider shares: the server lifecycle, fault injection, attempt counting,
the control endpoint and deterministic answers.

A fake is a real HTTP server on loopback.  Each wire format (``fake_openai``, ``fake_anthropic``,
``fake_gemini``, ``fake_ollama``) adds its own routes, request validation, response shapes and
stream framing on top of :class:`FakeServer`.

Faults are injected per model name (``"*"`` matches every model), from Python
(:meth:`FakeServer.inject`) or over HTTP::

    POST   /_fake/faults     {"model": "gpt-4o", "status": 429, "retry_after": "2", "times": 1}
    DELETE /_fake/faults     clear every fault
    POST   /_fake/script     {"model": "judge", "text": "0.2", "prompt": "optional: only this last user text"}
    POST   /_fake/profile    {"model": "gpt-4o", "ttft_s": [0.3, 1.0], "tokens_per_s": 40, "tokens": 40}
    GET    /_fake/attempts   {"attempts": {"gpt-4o": 3}}
    GET    /_fake/requests   the last 200 requests received: {path, model, body, auth}
    POST   /_fake/reset      clear faults, attempts and the request log
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import math
import random
import struct
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web

__all__ = ["FakeServer", "Fault", "Prompt", "Reply", "fake_embedding", "make_reply"]


@dataclass(slots=True)
class Fault:
    """A misbehaviour to apply to matching requests.

    Request-level faults act before any response header is sent; stream faults act on the body
    of a streamed answer.  ``times`` limits the fault to the next N matching requests.
    """

    #: answer with this HTTP error status, in the wire format's error shape
    status: int | None = None
    #: ``Retry-After`` header value sent with ``status`` (seconds or an HTTP date)
    retry_after: str | None = None
    #: error code/type in the error body, e.g. ``context_length_exceeded``, ``content_policy_violation``
    code: str | None = None
    message: str | None = None
    #: wait this long before answering at all
    delay_s: float = 0.0
    #: accept the request and never answer
    hang: bool = False
    #: reset the connection before sending any header
    reset: bool = False
    #: streams: send headers at once, then wait this long before the first chunk
    first_token_delay_s: float = 0.0
    #: streams: wait this long between chunks (a model writing at 1/chunk_delay_s tokens a second)
    chunk_delay_s: float = 0.0
    #: streams: send every frame in one write, as a server that flushes a batch does (the gateway
    #: then receives them together)
    together: bool = False
    #: streams: drop the connection after this many chunks
    cut_after: int | None = None
    #: streams: go silent for ``stall_s`` after this many chunks
    stall_after: int | None = None
    stall_s: float = 3600.0
    #: streams: send one malformed chunk after this many chunks
    malformed_after: int | None = None
    #: streams: end without the terminal event (``[DONE]``, ``message_stop``, ``done: true``)
    no_done: bool = False
    #: apply to the next N matching requests only (None: until cleared)
    times: int | None = None
    #: apply to each matching request with this probability (seeded: repeatable runs)
    probability: float = 1.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    @property
    def is_request_level(self) -> bool:
        return self.status is not None or self.hang or self.reset


@dataclass(slots=True)
class Prompt:
    """What a fake understood of a request, whatever its wire format."""

    model: str
    last_user_text: str = ""
    all_text: str = ""
    message_count: int = 0
    #: (name, JSON schema of the parameters)
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: "auto" | "none" | "required" | a tool name
    tool_choice: str = "auto"
    has_tool_result: bool = False
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    stop: Sequence[str] = ()
    image_count: int = 0
    #: the partial answer of a trailing assistant message (assistant prefill), which the reply continues
    prefill: str = ""
    #: extended thinking asked for (Anthropic ``thinking.budget_tokens``; 1 for adaptive); 0 when not
    thinking_budget: int = 0
    #: Anthropic ``output_config.effort`` asked for
    effort: str | None = None


@dataclass(slots=True, frozen=True)
class Profile:
    """How fast a fake model answers: a first token after ``ttft_s`` (uniform in the range), then
    ``tokens_per_s``; a non-streamed answer of about ``tokens`` tokens arrives all at once."""

    ttft_s: tuple[float, float] = (0.3, 1.0)
    tokens_per_s: float = 40.0
    tokens: int = 40


@dataclass(slots=True)
class Reply:
    text: str | None
    tool_calls: list[tuple[str, str, dict[str, Any]]]  # (id, name, arguments)
    finish: str  # "stop" | "length" | "tool_calls"
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0

    def pieces(self) -> list[str]:
        """The text split into stream deltas (one word, with its leading space, per chunk)."""
        if not self.text:
            return []
        words = self.text.split(" ")
        return [words[0]] + [" " + w for w in words[1:]]


def count_tokens(text: str) -> int:
    """The fakes' tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    """The subschema a local ``$ref`` (``#/$defs/Name``) points at; ``{}`` when it cannot be found."""
    node: Any = root
    if not ref.startswith("#"):
        return {}
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _value_for(schema: dict[str, Any], name: str = "value", root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """An instance valid for ``schema`` (the subset of JSON Schema that structured outputs use)."""
    root = schema if root is None else root
    if "$ref" in schema:
        if depth > 32:
            return None
        return _value_for(_resolve_ref(str(schema["$ref"]), root), name, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, dict)]
        if options:
            # the first non-null option; null once deep inside a recursive schema
            non_null = [o for o in options if o.get("type") != "null"]
            if (depth > 8 and len(non_null) < len(options)) or not non_null:
                return None
            return _value_for(non_null[0], name, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            part = _resolve_ref(str(sub["$ref"]), root) if isinstance(sub, dict) and "$ref" in sub else sub
            if isinstance(part, dict):
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                required = [*merged.get("required", []), *part.get("required", [])]
                had_required = "required" in merged or "required" in part
                merged.update(part)
                merged["properties"] = props
                if had_required:
                    merged["required"] = list(dict.fromkeys(required))
        return _value_for(merged, name, root, depth + 1)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: _value_for(props[k], k, root, depth + 1) for k in required if k in props}
    if kind == "array":
        if depth > 8 and not schema.get("minItems"):
            return []
        return [_value_for(schema.get("items", {}), name, root, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"example {name}"


def make_reply(prompt: Prompt, *, seen_before: bool = False, script: str | None = None) -> Reply:
    """A deterministic answer: a tool call when tools are offered and not yet answered, else text.

    Text answers are ``"<model> says: <last user text>"`` (JSON when JSON mode or a schema is
    asked for), or ``script`` (a scripted answer, see :meth:`FakeServer.script`), cut at the first
    stop sequence or at ``max_tokens`` words.
    """
    input_tokens = count_tokens(prompt.all_text) + 3 * prompt.message_count + 85 * prompt.image_count
    cached = (input_tokens // 128) * 128 if seen_before and input_tokens >= 1024 else 0
    if prompt.tools and prompt.tool_choice != "none" and not prompt.has_tool_result:
        wanted = prompt.tool_choice if prompt.tool_choice not in ("auto", "required") else prompt.tools[0][0]
        schema = dict(prompt.tools).get(wanted, {})
        args = _value_for(schema or {"type": "object"})
        call_id = "call_" + hashlib.sha256(f"{prompt.all_text}{wanted}".encode()).hexdigest()[:24]
        out = count_tokens(orjson.dumps(args).decode()) + 5
        return Reply(None, [(call_id, wanted, args)], "tool_calls", input_tokens, out, cached)
    if script is not None:
        text = script
    elif prompt.json_schema is not None:
        text = orjson.dumps(_value_for(prompt.json_schema)).decode()
    elif prompt.json_mode:
        text = orjson.dumps({"model": prompt.model, "answer": prompt.last_user_text}).decode()
    else:
        text = f"{prompt.model} says: {prompt.last_user_text}".strip()
        if prompt.prefill:
            text = f" (continued by {prompt.model})"
    finish = "stop"
    for stop in prompt.stop:
        if stop and stop in text:
            text = text[: text.index(stop)]
    words = text.split(" ")
    if prompt.max_tokens is not None and len(words) > prompt.max_tokens:
        text = " ".join(words[: prompt.max_tokens])
        finish = "length"
    return Reply(text, [], finish, input_tokens, count_tokens(text), cached)


def fake_embedding(text: str, dimensions: int = 16) -> list[float]:
    """A deterministic unit vector derived from the text."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    ints = struct.unpack(f"<{dimensions}i", raw[: dimensions * 4])
    vec = [i / 2**31 for i in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


def embedding_base64(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeServer:
    """Base class of the fake providers: lifecycle, faults, attempts, control endpoint."""

    kind: str = ""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._faults: dict[str, list[Fault]] = {}
        self._attempts: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=200)
        self._seen_prompts: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        #: (model, sha256 of the last user text or "*") -> a scripted answer
        self._scripts: dict[tuple[str, str], str] = {}
        #: model -> its latency profile (comparison runs and their bench)
        self._profiles: dict[str, Profile] = {}
        #: model requests (POST) being answered now, and the most at once since the last reset
        self.in_flight = 0
        self.peak_in_flight = 0

    # -- subclass hooks ------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_response(self, status: int, message: str, code: str | None) -> web.Response:
        """An error in this wire format's shape."""
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the server (``http://127.0.0.1:PORT``)."""
        return f"http://{self.host}:{self.port}"

    def inject(self, model: str = "*", fault: Fault | None = None, **kwargs: Any) -> None:
        """Apply a fault to requests for ``model`` (``"*"``: every model). Faults queue in order."""
        f = fault if fault is not None else Fault(**kwargs)
        with self._lock:
            self._faults.setdefault(model, []).append(f)

    def script(self, model: str, text: str, *, prompt: str | None = None) -> None:
        """Answer ``text`` to requests for ``model`` (only to those whose last user text is
        ``prompt``, when given: keyed by its SHA-256, as comparison fixtures do)."""
        key = hashlib.sha256(prompt.encode()).hexdigest() if prompt is not None else "*"
        with self._lock:
            self._scripts[(model, key)] = text

    def profile(self, model: str, profile: Profile | None = None, **kwargs: Any) -> None:
        """Answer ``model`` at a realistic pace (see :class:`Profile`); faults still take precedence."""
        p = profile if profile is not None else Profile(**kwargs)
        with self._lock:
            self._profiles[model] = p

    def scripted(self, prompt: Prompt) -> str | None:
        """The scripted answer for this prompt, if any (exact prompt first, then any prompt)."""
        if not self._scripts:
            return None
        key = hashlib.sha256(prompt.last_user_text.encode()).hexdigest()
        with self._lock:
            return self._scripts.get((prompt.model, key), self._scripts.get((prompt.model, "*")))

    def clear_faults(self, model: str | None = None) -> None:
        with self._lock:
            if model is None:
                self._faults.clear()
            else:
                self._faults.pop(model, None)

    def attempts(self, model: str | None = None) -> int:
        """Requests received for ``model`` (all models when None)."""
        with self._lock:
            if model is None:
                return sum(self._attempts.values())
            return self._attempts[model]

    def reset_peak(self) -> None:
        """Start counting the most requests in flight at once from now."""
        with self._lock:
            self.peak_in_flight = self.in_flight

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._attempts.clear()
            self.requests.clear()
            self._seen_prompts.clear()
            self._scripts.clear()
            self._profiles.clear()
            self.peak_in_flight = self.in_flight

    # -- lifecycle -----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        @web.middleware
        async def count_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method != "POST" or request.path.startswith("/_fake/"):
                return await handler(request)  # model listings (health checks) and control calls
            with self._lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                return await handler(request)  # a stream is written inside the handler
            finally:
                with self._lock:
                    self.in_flight -= 1

        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[count_in_flight, _middleware])
        app.router.add_post("/_fake/faults", self._ctl_add_fault)
        app.router.add_delete("/_fake/faults", self._ctl_clear_faults)
        app.router.add_post("/_fake/script", self._ctl_script)
        app.router.add_post("/_fake/profile", self._ctl_profile)
        app.router.add_get("/_fake/attempts", self._ctl_attempts)
        app.router.add_get("/_fake/requests", self._ctl_requests)
        app.router.add_post("/_fake/reset", self._ctl_reset)
        self.add_routes(app)
        return app

    async def start(self) -> Self:
        """Start serving in the running event loop."""
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> Self:
        """Start serving on a private event loop in a daemon thread (for sync code and tests)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"fake-{self.kind}", daemon=True)
        self._thread.start()
        ready.wait()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
        return self

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    # -- helpers for subclasses ----------------------------------------------------------

    async def begin(self, request: web.Request, model: str, body: Any) -> Fault | None:
        """Count the attempt, log it, and apply any request-level fault.

        Returns the fault to apply to a streamed body (or None).  Raises a ready-made error
        response (``web.HTTPException`` subclass) for status faults.
        """
        with self._lock:
            self._attempts[model] += 1
            auth = request.headers.get("authorization") or request.headers.get("x-api-key")
            auth = auth or request.headers.get("x-goog-api-key") or request.query.get("key")
            entry = {"path": request.path, "model": model, "body": body, "auth": auth}
            for name in ("traceparent", "anthropic-beta"):
                if name in request.headers:
                    entry[name] = request.headers[name]
            self.requests.append(entry)
            fault = self._take_fault(model)
            profile = self._profiles.get(model)
            if fault is None and profile is not None:
                ttft = self._rng.uniform(*profile.ttft_s)
                if isinstance(body, dict) and body.get("stream") is True:
                    fault = Fault(first_token_delay_s=ttft, chunk_delay_s=1.0 / profile.tokens_per_s)
                else:
                    fault = Fault(delay_s=ttft + profile.tokens / profile.tokens_per_s)
        if fault is None:
            return None
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.reset:
            if request.transport is not None:
                request.transport.abort()
            raise _Aborted()
        if fault.hang:
            assert self._closing is not None
            await self._closing.wait()
            raise _Aborted()
        if fault.status is not None:
            resp = self.error_response(
                fault.status, fault.message or _default_message(fault.status, fault.code), fault.code
            )
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = fault.retry_after
            raise _ErrorResponse(resp)
        return fault

    def seen_before(self, key: Any) -> bool:
        """True when an identical prompt was answered before (drives reported cached tokens)."""
        digest = hashlib.sha256(orjson.dumps(key, option=orjson.OPT_SORT_KEYS)).hexdigest()
        with self._lock:
            seen = digest in self._seen_prompts
            self._seen_prompts.add(digest)
        return seen

    async def write_stream(
        self,
        request: web.Request,
        frames: Sequence[bytes],
        fault: Fault | None,
        *,
        terminal: bytes | None,
        malformed: bytes,
        content_type: str = "text/event-stream",
    ) -> web.StreamResponse:
        """Send pre-encoded stream frames, applying stream faults; ``terminal`` ends a clean stream."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        f = fault or Fault()
        if f.first_token_delay_s:
            await asyncio.sleep(f.first_token_delay_s)
        if f.together:
            frames = [b"".join(frames) + (terminal if terminal is not None and not f.no_done else b"")]
            terminal = None
        for i, frame in enumerate(frames):
            if f.cut_after is not None and i == f.cut_after:
                if request.transport is not None:
                    request.transport.abort()
                return resp
            if f.stall_after is not None and i == f.stall_after:
                assert self._closing is not None
                try:
                    await asyncio.wait_for(self._closing.wait(), f.stall_s)
                except TimeoutError:
                    pass
                if self._closing.is_set():
                    return resp
            if f.malformed_after is not None and i == f.malformed_after:
                await resp.write(malformed)
            if f.chunk_delay_s and i:
                await asyncio.sleep(f.chunk_delay_s)
            try:
                await resp.write(frame)
            except (ConnectionResetError, RuntimeError):
                return resp
        if terminal is not None and not f.no_done:
            await resp.write(terminal)
        await resp.write_eof()
        return resp

    @staticmethod
    def json(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")

    async def read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _ErrorResponse(self.error_response(400, "request body is not valid JSON", None)) from None

    def bad_request(self, message: str, code: str | None = None, status: int = 400) -> Exception:
        """An exception a handler raises to answer with a validation error."""
        return _ErrorResponse(self.error_response(status, message, code))

    @staticmethod
    def answer_with(response: web.Response) -> Exception:
        """An exception a handler raises to answer with ``response`` (an error shaped by hand)."""
        return _ErrorResponse(response)

    # -- internals -----------------------------------------------------------------------

    def _take_fault(self, model: str) -> Fault | None:
        for key in (model, "*"):
            queue = self._faults.get(key)
            if not queue:
                continue
            fault = queue[0]
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
            return fault
        return None

    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
            if not isinstance(data, dict):
                raise TypeError("a fault must be a JSON object")
            model = data.pop("model", "*")
            self.inject(model, Fault.from_json(data))
        except (TypeError, ValueError) as exc:
            return self.json({"error": str(exc)}, 400)
        return self.json({"ok": True})

    async def _ctl_script(self, request: web.Request) -> web.Response:
        data = await self.read_json(request)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("model"), str)
            or not isinstance(data.get("text"), str)
        ):
            raise self.bad_request("a script needs a model and a text")
        prompt = data.get("prompt")
        self.script(data["model"], data["text"], prompt=prompt if isinstance(prompt, str) else None)
        return self.json({"ok": True})

    async def _ctl_profile(self, request: web.Request) -> web.Response:
        data = await self.read_json(request)
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            raise self.bad_request("a profile needs a model")
        try:
            ttft = tuple(float(x) for x in data.get("ttft_s", (0.3, 1.0)))
            profile = Profile((ttft[0], ttft[1]), float(data.get("tokens_per_s", 40.0)), int(data.get("tokens", 40)))
        except (TypeError, ValueError, IndexError) as exc:
            raise self.bad_request(f"bad profile: {exc}") from None
        self.profile(data["model"], profile)
        return self.json({"ok": True})

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return self.json({"ok": True})

    async def _ctl_attempts(self, request: web.Request) -> web.Response:
        with self._lock:
            return self.json({"attempts": dict(self._attempts)})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return self.json({"requests": list(self.requests)})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return self.json({"ok": True})


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except _ErrorResponse as exc:
        return exc.response
    except _Aborted:
        return web.Response(status=499)


class _ErrorResponse(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Aborted(Exception):
    pass


def _default_message(status: int, code: str | None) -> str:
    if code == "context_length_exceeded":
        return "This model's maximum context length is 4096 tokens. Please reduce the length of the messages."
    if code == "content_policy_violation":
        return "Your request was rejected as a result of our safety system."
    return {
        400: "Bad request",
        401: "Incorrect API key provided",
        403: "Permission denied",
        404: "The model does not exist",
        408: "Request timeout",
        429: "Rate limit reached for requests",
        500: "The server had an error while processing your request",
        502: "Bad gateway",
        503: "The engine is currently overloaded, please try again later",
        504: "Gateway timeout",
    }.get(status, f"Fake error {status}")
