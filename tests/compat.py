"""The client x feature compatibility matrix of docs/api.md, generated from the tests' marks.

A test marked ``@pytest.mark.compat(client, feature, ...)`` drives the gateway with that client
library and proves those features.  :func:`render` turns the marks into the table; ``make
compat-matrix`` (``python -m tests.compat --write``) writes it into docs/api.md between the
``compat-matrix`` comments, and tests/test_compat_matrix.py fails when the two differ or a mark
names a client or feature not listed here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api.md"
BEGIN, END = "<!-- compat-matrix:begin -->", "<!-- compat-matrix:end -->"

#: columns: the client libraries, as their users know them
CLIENTS = ("openai", "anthropic", "langchain-openai", "langchain-anthropic", "pydantic-ai")
#: rows
FEATURES = (
    "Chat Completions",
    "Messages API",
    "Responses API",
    "streaming",
    "async",
    "tools",
    "structured output",
    "images",
    "reasoning",
    "prompt caching",
    "embeddings",
    "typed errors",
    "model listing",
)


def collect() -> dict[tuple[str, str], list[str]]:
    """(client, feature) -> the tests that prove it, from every module under tests/e2e."""
    cells: dict[tuple[str, str], list[str]] = {}
    for path in sorted((ROOT / "tests" / "e2e").glob("test_*.py")):
        module = importlib.import_module(f"tests.e2e.{path.stem}")
        for name, obj in vars(module).items():
            if not name.startswith("test_") or not callable(obj):
                continue
            for mark in _marks(obj):
                client, *features = mark.args
                for feature in features:
                    cells.setdefault((client, feature), []).append(f"{path.name}::{name}")
    return cells


def _marks(fn: Callable[..., Any]) -> list[Any]:
    return [m for m in getattr(fn, "pytestmark", []) if m.name == "compat"]


def render(cells: dict[tuple[str, str], list[str]]) -> str:
    head = "| feature | " + " | ".join(f"`{c}`" for c in CLIENTS) + " |"
    rule = "| --- |" + " :---: |" * len(CLIENTS)
    rows = [
        f"| {feature} | " + " | ".join("yes" if (c, feature) in cells else "—" for c in CLIENTS) + " |"
        for feature in FEATURES
    ]
    return "\n".join([BEGIN, head, rule, *rows, END])


def current() -> str:
    text = DOC.read_text()
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def write() -> None:
    text = DOC.read_text()
    DOC.write_text(text.replace(current(), render(collect())))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(render(collect()))
