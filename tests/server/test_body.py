"""D15 (issue #11): a large request body is decoded and parsed off the event loop.

Parsing a 20 MB body on the loop stalled every other request (``/health`` included) for 1.4 s.
The check is structural (which thread parsed), never a timing: the stall itself is a bench figure.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from modelyard.server.body import OFFLOAD_BYTES, parse_body


def _body(size: int) -> bytes:
    text = "x" * size
    return orjson.dumps({"model": "gpt", "messages": [{"role": "user", "content": text}]})


async def test_a_large_body_is_parsed_in_a_worker_thread() -> None:
    seen: list[threading.Thread] = []

    def parse(data: Any) -> int:
        seen.append(threading.current_thread())
        return len(data["messages"][0]["content"])

    assert await parse_body(_body(OFFLOAD_BYTES + 10), parse) == OFFLOAD_BYTES + 10
    assert seen and seen[0] is not threading.main_thread()


async def test_a_small_body_is_parsed_inline() -> None:
    seen: list[threading.Thread] = []

    def parse(data: Any) -> str:
        seen.append(threading.current_thread())
        return str(data["model"])

    assert await parse_body(_body(100), parse) == "gpt"
    assert seen == [threading.main_thread()]
