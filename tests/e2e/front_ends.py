"""Two front ends with one interface, for the parity suite (``test_front_ends.py``).

- :class:`HttpFront`: a real ``modelyard serve`` subprocess, called with the official ``openai`` SDK
  (the admin API creates keys; ``SIGHUP`` reloads a rewritten config file);
- :class:`SdkFront`: ``modelyard.Gateway`` in-process, built from the same config dict, called
  through its synchronous API (its own event loop thread), keys created in its own database.

Both take the same OpenAI request body and report an :class:`Outcome`, so a test body is written
once and a difference between the two front ends fails it.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import openai

from modelyard import Gateway
from modelyard.config import parse_config
from modelyard.errors import ModelyardError
from modelyard.sdk import StreamResult
from tests.helpers import ServerProcess, wait_for

MASTER = "master-key-front-ends-0123456789"

#: the SDK takes api_key= and raise_on_error= (it is built on the pipeline); False only when the
#: suite is pointed at the code from before it (wave2-base), to show which tests fail there
_PIPELINE_SDK = "api_key" in inspect.signature(Gateway.chat).parameters


@dataclass
class Outcome:
    """What a caller saw: the status (200 or the error's), the answering model, the error code."""

    status: int
    model: str | None = None
    fallback: bool = False
    attempts: int = 0
    code: str | None = None
    content: str | None = None


class Front(Protocol):
    name: str
    workdir: Path

    def chat(self, body: dict[str, Any], key: str | None = None) -> Outcome: ...

    def stream(self, body: dict[str, Any], key: str | None = None, stop_after: int | None = None) -> Outcome: ...

    def chat_cancelled(self, body: dict[str, Any], after_s: float) -> None:
        """Send a chat and give up on it after ``after_s`` (the HTTP client hangs up, the SDK call
        is cancelled), while the upstream is still working on it (a stream: before its first token)."""
        ...

    def budget(self, name: str) -> tuple[float, float]:
        """(used, reserved) USD of budget ``name`` in its current period."""
        ...

    def reload(self, config: dict[str, Any]) -> None: ...

    def new_key(self, **limits: Any) -> str: ...

    def close(self) -> None: ...


def usage_rows(db: Path, route: str) -> list[dict[str, Any]]:
    """The usage records of ``route`` in a front end's SQLite database, oldest first."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM usage_requests WHERE route = ? ORDER BY ts", (route,)).fetchall()
        except sqlite3.OperationalError:  # the table is not there yet
            return []
    return [dict(r) for r in rows]


def attempt_rows(db: Path, request_id: str) -> list[dict[str, Any]]:
    """The attempt rows of one request, in order."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM usage_attempts WHERE request_id = ? ORDER BY attempt_number", (request_id,)
        ).fetchall()
    return [dict(r) for r in rows]


def wait_rows(db: Path, route: str, count: int) -> list[dict[str, Any]]:
    assert wait_for(lambda: len(usage_rows(db, route)) >= count, timeout=10), (
        f"expected {count} usage records for route {route!r}, found {len(usage_rows(db, route))}"
    )
    return usage_rows(db, route)


def _split(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rest = dict(body)
    messages = rest.pop("messages")
    rest.pop("stream", None)
    return messages, rest


class HttpFront:
    name = "http"

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        self.server = ServerProcess(config, workdir)
        self.db = workdir / "modelyard.db"
        self._org = False

    def _client(self, key: str | None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.url + "/v1", api_key=key or MASTER, max_retries=0, timeout=30)

    @staticmethod
    def _error(exc: openai.APIStatusError) -> Outcome:
        try:
            code = exc.response.json()["error"]["code"]
        except Exception:  # pragma: no cover - the gateway always answers in OpenAI's error shape
            code = None
        return Outcome(status=exc.status_code, code=code)

    def chat(self, body: dict[str, Any], key: str | None = None) -> Outcome:
        messages, rest = _split(body)
        extra = {"modelyard": rest.pop("modelyard")} if "modelyard" in rest else None
        try:
            raw = self._client(key).chat.completions.with_raw_response.create(
                messages=messages,  # type: ignore[arg-type]
                extra_body=extra,
                **rest,
            )
        except openai.APIStatusError as exc:
            return self._error(exc)
        resp = raw.parse()
        h = raw.headers
        return Outcome(
            status=200,
            model=h.get("x-modelyard-model"),
            fallback=h.get("x-modelyard-fallback") == "true",
            attempts=int(h.get("x-modelyard-attempts", "0")),
            content=resp.choices[0].message.content,
        )

    def stream(self, body: dict[str, Any], key: str | None = None, stop_after: int | None = None) -> Outcome:
        messages, rest = _split(body)
        extra = {"modelyard": rest.pop("modelyard")} if "modelyard" in rest else None
        parts: list[str] = []
        try:
            with self._client(key).chat.completions.with_streaming_response.create(
                messages=messages,  # type: ignore[arg-type]
                extra_body=extra,
                stream=True,
                **rest,
            ) as raw:
                h = raw.headers
                for chunk in raw.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                        if stop_after is not None and len(parts) >= stop_after:
                            break  # leaving the block closes the connection: the client hangs up
        except openai.APIStatusError as exc:
            return self._error(exc)
        return Outcome(
            status=200,
            model=h.get("x-modelyard-model"),
            fallback=h.get("x-modelyard-fallback") == "true",
            attempts=int(h.get("x-modelyard-attempts", "0")),
            content="".join(parts),
        )

    def chat_cancelled(self, body: dict[str, Any], after_s: float) -> None:
        messages, rest = _split(body)
        extra = {"modelyard": rest.pop("modelyard")} if "modelyard" in rest else None
        client = openai.OpenAI(base_url=self.server.url + "/v1", api_key=MASTER, max_retries=0, timeout=after_s)
        try:
            client.chat.completions.create(
                messages=messages,  # type: ignore[arg-type]
                extra_body=extra,
                stream=bool(body.get("stream")),
                **rest,
            )
        except openai.APITimeoutError:
            return  # the client gave up: its connection is closed
        raise AssertionError("the call was answered before the client gave up on it")

    def budget(self, name: str) -> tuple[float, float]:
        auth = {"Authorization": f"Bearer {MASTER}"}
        rows = httpx.get(self.server.url + "/admin/budgets", headers=auth, timeout=10).json()["data"]
        row = next(r for r in rows if r["budget"] == name)
        return float(row["used_usd"]), float(row["reserved_usd"])

    def reload(self, config: dict[str, Any]) -> None:
        self.server.write_config(config)
        before = httpx.get(self.server.url + "/ready", timeout=5).text
        self.server.signal(signal.SIGHUP)
        # the reload is visible in /ready's config version; wait for it to change
        assert wait_for(lambda: httpx.get(self.server.url + "/ready", timeout=5).text != before, timeout=10)

    def new_key(self, **limits: Any) -> str:
        auth = {"Authorization": f"Bearer {MASTER}"}
        if not self._org:
            resp = httpx.post(self.server.url + "/admin/orgs", json={"name": "Parity", "id": "parity"}, headers=auth)
            assert resp.status_code == 201, resp.text
            self._org = True
        resp = httpx.post(
            self.server.url + "/admin/keys", json={"org_id": "parity", "name": "k", **limits}, headers=auth
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])

    def close(self) -> None:
        self.server.stop()


class SdkFront:
    name = "sdk"

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        self.db = workdir / "modelyard.db"
        try:
            self.gw = Gateway.from_config(config, database=f"sqlite:///{self.db}")
        except TypeError:  # an SDK from before the pipeline (wave2-base) has no services to configure
            self.gw = Gateway.from_config(config)
        self._org = False

    def chat(self, body: dict[str, Any], key: str | None = None) -> Outcome:
        messages, rest = _split(body)
        extra: dict[str, Any] = {"api_key": key, "raise_on_error": True} if _PIPELINE_SDK else {}
        try:
            result = self.gw.chat_sync(messages, **extra, **rest)
        except ModelyardError as exc:
            return Outcome(status=exc.status, code=exc.code)
        if result.error is not None:  # the SDK of wave2-base reports failures only as text
            return Outcome(status=0, code=result.error)
        return Outcome(
            status=200,
            model=result.model_used,
            fallback=result.is_fallback,
            attempts=len(result.attempts),
            content=result.content,
        )

    def stream(self, body: dict[str, Any], key: str | None = None, stop_after: int | None = None) -> Outcome:
        messages, rest = _split(body)
        into = StreamResult()
        parts: list[str] = []
        extra: dict[str, Any] = {"api_key": key} if _PIPELINE_SDK else {}
        deltas: Iterator[str] = self.gw.stream_sync(messages, into=into, **extra, **rest)
        try:
            for delta in deltas:
                parts.append(delta)
                if stop_after is not None and len(parts) >= stop_after:
                    break
        except ModelyardError as exc:
            return Outcome(status=exc.status, code=exc.code)
        finally:
            close = getattr(deltas, "close", None)
            if close is not None:
                close()  # leaving early, as an HTTP client hanging up
        result = into.result
        return Outcome(
            status=200,
            model=result.model_used if result else None,
            fallback=result.is_fallback if result else False,
            attempts=len(result.attempts) if result else 0,
            content="".join(parts),
        )

    def chat_cancelled(self, body: dict[str, Any], after_s: float) -> None:
        messages, rest = _split(body)

        async def cancelled() -> None:
            call = anext(self.gw.stream(messages, **rest)) if body.get("stream") else self.gw.chat(messages, **rest)
            try:
                # wait_for cancels the call when the time is up, as an application cancelling it does
                await asyncio.wait_for(call, after_s)
            except TimeoutError:
                return
            raise AssertionError("the call was answered before it was cancelled")

        self.gw._run(cancelled())

    def budget(self, name: str) -> tuple[float, float]:
        services = self.gw.services
        assert services is not None, "the SDK runs without budgets"
        rows = self.gw._run(services.ledger.usage())
        row = next(r for r in rows if r.budget == name)
        return row.used_usd, row.reserved_usd

    def reload(self, config: dict[str, Any]) -> None:
        self.gw._run(self.gw.reload(parse_config(config)))

    def new_key(self, **limits: Any) -> str:
        async def create() -> str:
            pipeline = await self.gw.pipeline()
            del pipeline
            services = self.gw.services
            keys = getattr(services, "keys", None)
            assert keys is not None, "the SDK runs without a key store"
            if not self._org:
                await keys.create_org("Parity", org_id="parity")
                self._org = True
            plaintext, record = await keys.create_key("parity", "k", **limits)
            if record.budget_usd:  # what POST /admin/keys does after creating a key with a budget
                await services.refresh_budgets()  # type: ignore[union-attr]
            return str(plaintext)

        return self.gw._run(create())

    def close(self) -> None:
        self.gw.close()


def start(kind: str, config: dict[str, Any], workdir: Path) -> Front:
    front: Front = HttpFront(config, workdir) if kind == "http" else SdkFront(config, workdir)
    return front


def settle() -> None:
    """Usage records are written in batches (every 50 ms in these configs)."""
    time.sleep(0.2)
