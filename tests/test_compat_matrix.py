"""The compatibility matrix in docs/api.md is the one the tests' compat marks make (tests/compat.py)."""

from __future__ import annotations

from tests import compat


def test_every_mark_names_a_known_client_and_feature() -> None:
    cells = compat.collect()
    assert cells, "no compat marks found under tests/e2e"
    unknown = sorted({k for k in cells if k[0] not in compat.CLIENTS or k[1] not in compat.FEATURES})
    assert not unknown, f"add these to tests/compat.py CLIENTS / FEATURES: {unknown}"


def test_the_docs_matrix_is_generated_from_the_marks() -> None:
    assert compat.current() == compat.render(compat.collect()), "run `make compat-matrix` and commit docs/api.md"


def test_each_client_is_proven_on_the_apis_it_speaks() -> None:
    cells = compat.collect()
    speaks = {
        "openai": ("Chat Completions", "Responses API"),
        "langchain-openai": ("Chat Completions", "Responses API"),
        "anthropic": ("Messages API",),
        "langchain-anthropic": ("Messages API",),
        "pydantic-ai": ("Chat Completions", "Responses API", "Messages API"),
    }
    missing = [(client, api) for client, apis in speaks.items() for api in apis if (client, api) not in cells]
    assert not missing
