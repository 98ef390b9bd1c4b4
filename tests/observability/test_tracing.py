"""OpenTelemetry traces (#15 point 6): GenAI-convention spans per request and attempt, the
incoming traceparent continued and sent upstream, OTLP export from a real server, and nothing of
the OpenTelemetry SDK loaded while tracing is off.

In process, spans are read with the OpenTelemetry SDK's in-memory exporter; from the server, the
OTLP/HTTP export is received by a collector on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelyard import Gateway
from modelyard.config import parse_config
from modelyard.errors import ModelyardError
from modelyard.observability.tracing import INCOMING_TRACEPARENT
from modelyard.testing import FakeServer, fake_class
from tests.helpers import ServerProcess, free_port

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    f = fake_class("openai")().start_in_thread()
    yield f
    f.stop_thread()


def _config(fake: FakeServer, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"o": {"kind": "openai", "base_url": fake.base_url, "api_key": "sk-t"}},  # type: ignore[attr-defined]
        "models": {
            "gpt": {"provider": "o", "model": "gpt-4o", "input_cost_per_mtok": 2, "output_cost_per_mtok": 8},
            "mini": {"provider": "o", "model": "gpt-4o-mini"},
        },
        "routes": {"main": {"models": ["gpt"], "fallbacks": ["mini"], "retries": 0}},
        **extra,
    }


async def test_a_request_is_a_span_with_its_attempts(fake: FakeServer) -> None:
    exporter = InMemorySpanExporter()
    fake.reset()
    fake.inject("gpt-4o", status=500, times=1)
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = INCOMING_TRACEPARENT.set(incoming)  # what the HTTP front end does with the header
    try:
        async with Gateway(
            parse_config(_config(fake)), database=None, span_processor=SimpleSpanProcessor(exporter)
        ) as gw:
            result = await gw.chat(MSG, route="main")
            assert result.model_used == "mini"
            with pytest.raises(ModelyardError):
                await gw.chat(MSG, model="nope", raise_on_error=True)
            stream = gw.stream(MSG, route="main")
            text = "".join([d async for d in stream])
            assert text
    finally:
        INCOMING_TRACEPARENT.reset(token)
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.kind.name == "SERVER"]
    assert [s.name for s in requests] == ["chat main", "chat nope", "chat main"]
    first = requests[0]
    a = dict(first.attributes or {})
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "main"
    assert a["gen_ai.response.model"] == "mini" and a["gen_ai.provider.name"] == "o"
    assert a["modelyard.fallback"] is True and a["modelyard.attempts"] == 2 and a["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.input.messages" not in a  # no prompt text without capture_content
    # the incoming traceparent is continued: same trace id, its span as the parent
    assert f"{first.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert first.parent is not None and f"{first.parent.span_id:016x}" == "b7ad6b7169203331"
    attempts = [s for s in spans if s.parent is not None and s.parent.span_id == first.context.span_id]
    assert [(s.name, s.status.status_code.name) for s in attempts] == [("chat gpt", "ERROR"), ("chat mini", "UNSET")]
    assert dict(attempts[0].attributes or {})["http.response.status_code"] == 500
    failed = dict(requests[1].attributes or {})
    assert failed["error.type"] == "model_not_found" and requests[1].status.status_code.name == "ERROR"
    assert dict(requests[2].attributes or {})["gen_ai.usage.output_tokens"] > 0  # the stream's span ends at close
    # the upstream got our request span as its parent
    sent = [r for r in fake.requests if r.get("traceparent")]
    assert sent and all(r["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c" for r in sent)
    assert sent[0]["traceparent"].split("-")[2] == f"{first.context.span_id:016x}"


async def test_capture_content(fake: FakeServer) -> None:
    exporter = InMemorySpanExporter()
    cfg = parse_config(_config(fake, tracing={"capture_content": True}))
    async with Gateway(cfg, database=None, span_processor=SimpleSpanProcessor(exporter)) as gw:
        await gw.chat(MSG, model="gpt")
    span = next(s for s in exporter.get_finished_spans() if s.kind.name == "SERVER")
    attrs = dict(span.attributes or {})
    assert "hello there" in str(attrs["gen_ai.input.messages"]) and attrs["gen_ai.output.messages"]


def test_off_means_no_sdk_and_no_header(fake: FakeServer, tmp_path: Path) -> None:
    script = tmp_path / "off.py"
    script.write_text(
        "import asyncio, sys, yaml\n"
        "from modelyard import Gateway\n"
        "from modelyard.config import parse_config\n"
        f"cfg = parse_config({_config(fake)!r})\n"
        "async def main():\n"
        "    async with Gateway(cfg, database=None) as gw:\n"
        "        await gw.chat([{'role': 'user', 'content': 'x'}], model='gpt')\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    fake.reset()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.strip().splitlines()[-1]
    assert "opentelemetry.sdk" not in loaded, loaded
    assert not any("traceparent" in r for r in fake.requests)


class Collector:
    """An OTLP/HTTP receiver on loopback: keeps every POSTed export."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_server_exports_over_otlp_and_continues_the_trace(fake: FakeServer, tmp_path: Path) -> None:
    collector = Collector()
    try:
        srv = ServerProcess(
            _config(fake, tracing={"otlp_endpoint": collector.url, "service_name": "gw-test"}), tmp_path
        )
        try:
            fake.reset()
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
            r = httpx.post(
                f"{srv.url}/v1/chat/completions",
                json={"model": "main", "messages": MSG},
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
                timeout=30,
            )
            assert r.status_code == 200
            assert fake.requests[-1]["traceparent"].split("-")[1] == trace_id
        finally:
            srv.stop()  # shutdown flushes the batch
        deadline = time.monotonic() + 10
        while not collector.bodies and time.monotonic() < deadline:
            time.sleep(0.1)
        body = b"".join(collector.bodies)
        assert bytes.fromhex(trace_id) in body and b"gw-test" in body and b"gen_ai.request.model" in body
    finally:
        collector.close()
