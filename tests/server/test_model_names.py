"""The model-name rule (modelyard.validators.names): what real model ids look like passes, paths,
header breakers and huge names do not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidRequestError
from modelyard.validators import MAX_MODEL_NAME, check_model_name, model_name_problem

GOOD = [
    "gpt-4o",
    "ollama:llama3:8b-instruct-q4_K_M",
    "meta-llama/Llama-3.1-8B-Instruct",
    "ft:gpt-4o-mini-2024-07-18:acme::abc123",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "claude-3-5-sonnet@20240620",
    "models/gemini-2.5-flash",
    "gem:tunedModels/my-model-123",
    "openrouter:anthropic/claude-3.5-sonnet",
    "local:gemma3-270m",
    "x" * MAX_MODEL_NAME,
    "a+b",
    ":gpt-4o",
]

BAD = [
    "",
    "local:/abs/path",
    "local:/etc/shadow",
    "local:../x",
    "local:~/x",
    "gem:../../../X",
    "gem:models/../../x",
    "../../etc/passwd",
    "/etc/passwd",
    "fake:a\r\nX-Injected: 1",
    "fake:x\nb",
    "fake:x\x00",
    "fake:模型",
    "fake:café",
    "fake:" + "z" * 30_000,
    "x" * (MAX_MODEL_NAME + 1),
    "fake:a b",
    "fake:x?injected=1#f",
    "models/",
    "a//b",
    "fake:..",
    "..",
    "fake:./x",
]


@pytest.mark.parametrize("name", GOOD)
def test_accepts_real_model_ids(name: str) -> None:
    assert model_name_problem(name) is None
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", BAD, ids=lambda n: repr(n[:40]))
def test_refuses_paths_header_breakers_and_huge_names(name: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_model_name(name, "modelyard.route")
    assert info.value.param == "modelyard.route"
    assert info.value.status == 400
    # the message never echoes the name (it may be huge or unprintable)
    assert len(info.value.message) < 300
    if len(name) > 3:
        assert name not in info.value.message


@pytest.mark.parametrize("value", [None, 3, ["gpt"], {"a": 1}, 1.5])
def test_refuses_non_strings(value: object) -> None:
    assert model_name_problem(value) is not None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_never_accepts_dot_segments_control_characters_or_non_ascii(name: str) -> None:
    if model_name_problem(name) is not None:
        return
    assert 1 <= len(name) <= MAX_MODEL_NAME
    assert name.isascii() and name.isprintable()
    assert not any(c in name for c in "\r\n\x00 ~?#%\\")
    segments = [seg for part in name.split(":") for seg in part.split("/")]
    assert ".." not in segments
    assert not name.startswith("/") and ":/" not in name


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.:/", max_size=12))
def test_never_accepts_dot_segments_from_a_path_alphabet(name: str) -> None:
    if model_name_problem(name) is None:
        segments = [seg for part in name.split(":") for seg in part.split("/")]
        assert ".." not in segments and "." not in segments
        assert not name.startswith("/") and ":/" not in name and "//" not in name
