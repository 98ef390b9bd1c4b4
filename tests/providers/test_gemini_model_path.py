"""D12: a Gemini model name is one path segment under ``models/`` or ``tunedModels/``; it cannot move the
request (and the ``x-goog-api-key`` sent with it) to another path of the base URL."""

from __future__ import annotations

import pytest

from modelyard.errors import InvalidRequestError
from modelyard.providers.gemini import model_path


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("models/gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("tunedModels/my-model-123", "tunedModels/my-model-123"),
        ("a/b", "models/a%2Fb"),
        ("x?injected=1#f", "models/x%3Finjected%3D1%23f"),
        ("gemini-pro@001", "models/gemini-pro@001"),
    ],
)
def test_the_name_is_one_encoded_segment(model: str, path: str) -> None:
    assert model_path(model) == path
    assert "/../" not in model_path(model) + "/"


@pytest.mark.parametrize(
    "model", ["..", ".", "", "models/..", "tunedModels/.", "models/", "../../../PATHTRAV", "models/../../x", "a/./b"]
)
def test_dot_segments_are_refused(model: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        model_path(model)
    assert info.value.param == "model"
