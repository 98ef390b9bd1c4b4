"""The scrubber (modelyard.scrub): configured secrets and common key shapes never survive into a message."""

from __future__ import annotations

import asyncio

import pytest

from modelyard.errors import UpstreamStatusError
from modelyard.scrub import MARK, Scrubber, scrub, use


@pytest.mark.parametrize(
    "leak",
    [
        "sk-abcdefghijklmnopqrstuvwxyz012345",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx_123",
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx-123",
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
        "gsk_abcdefghijklmnopqrstuvwx",
        "Bearer abcdefghijklmnop.qrstuvwxyz",
    ],
)
def test_common_key_shapes_are_removed(leak: str) -> None:
    text = f"Incorrect API key provided: {leak}. See https://example.com"
    out = Scrubber()(text)
    assert leak not in out and MARK in out and out.startswith("Incorrect API key provided: ")


@pytest.mark.parametrize("assignment", ["api_key=abcdefgh12345", "key: 'abcdefgh12345'", "token=abcdefgh12345"])
def test_assignments_keep_the_name_and_lose_the_value(assignment: str) -> None:
    out = Scrubber()(f"GET /v1/models?{assignment}&x=1 failed")
    assert "abcdefgh12345" not in out and MARK in out


def test_configured_secrets_of_any_shape_are_removed() -> None:
    s = Scrubber(["plain-secret-42", "zz-other-777"])
    assert s("the key plain-secret-42 and zz-other-777 were refused") == f"the key {MARK} and {MARK} were refused"


def test_ordinary_text_is_untouched() -> None:
    text = "openai returned 400 for 'gpt-4o': 'messages' must be a non-empty array (tokens: 12)"
    assert Scrubber(["abc"])(text) == text  # a secret shorter than 6 characters is never matched literally


async def test_the_current_scrubber_follows_the_task() -> None:
    use(Scrubber(["task-secret-1"]))
    assert scrub("x task-secret-1 y") == f"x {MARK} y"

    async def other() -> str:
        return scrub("task-secret-1")

    assert await asyncio.create_task(other()) == MARK  # a task started here inherits it
    err = UpstreamStatusError("upstream said: key task-secret-1 is invalid", upstream_status=401)
    assert "task-secret-1" not in err.message and "task-secret-1" not in str(err)


def test_without_a_config_only_patterns_apply() -> None:
    assert asyncio.run(_fresh()) == "plain-secret-42 " + MARK


async def _fresh() -> str:
    return scrub("plain-secret-42 sk-abcdefghijklmnopqrstuvwxyz")
