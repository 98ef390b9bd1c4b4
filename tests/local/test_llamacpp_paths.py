"""D3: a request names a llama.cpp model only by a configured name/path or a ``.gguf`` file directly
inside ``models_dir``; never a path of its choosing, and never with a file-existence oracle."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.config.schema import LlamaCppProviderConfig
from modelyard.errors import UpstreamStatusError
from modelyard.providers import build_provider
from modelyard.providers.llamacpp.provider import LlamaCppProvider


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[LlamaCppProvider, Path]]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.gguf").write_bytes(b"GGUF")
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    p = build_provider("local", LlamaCppProviderConfig(models_dir=str(models)))
    assert isinstance(p, LlamaCppProvider)
    try:
        yield p, tmp_path
    finally:
        asyncio.run(p.aclose())


def refused(p: LlamaCppProvider, name: str) -> str:
    with pytest.raises(UpstreamStatusError) as info:
        p.resolve(name)
    err = info.value
    assert err.upstream_status == 404 and err.code == "model_not_found"
    return err.message.replace(repr(name), "<name>")


def test_files_of_models_dir_by_name(layout: tuple[LlamaCppProvider, Path]) -> None:
    p, root = layout
    assert p.resolve("tiny") == root / "models" / "tiny.gguf"
    assert p.resolve("tiny.gguf") == root / "models" / "tiny.gguf"


def test_no_path_from_a_request_and_no_file_existence_oracle(layout: tuple[LlamaCppProvider, Path]) -> None:
    p, root = layout
    names = [
        str(root / "outside.gguf"),  # exists
        str(root / "missing.gguf"),  # does not
        "/etc/passwd",
        "/etc/nonexistent-modelyard",
        "../outside",
        "../outside.gguf",
        "../missing",
        "~/outside",
        "models/../../outside",
        "..\\outside",
        ".hidden",
        "",
    ]
    messages = {refused(p, name) for name in names}
    assert len(messages) == 1, messages  # the same answer whether or not the file exists


def test_absolute_paths_from_the_config_still_work(layout: tuple[LlamaCppProvider, Path]) -> None:
    p, root = layout
    path = str(root / "outside.gguf")
    p.lifecycle.configure({path: p.lifecycle.defaults})
    assert p.resolve(path) == root / "outside.gguf"
    refused(p, str(root / "other.gguf"))  # only the configured one
