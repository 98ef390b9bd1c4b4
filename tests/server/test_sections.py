"""The endpoints built on first use (server/sections.py): each request builds the section that
serves it, and the routes end up where they always were."""

from __future__ import annotations

import itertools

import pytest
from fastapi import APIRouter
from starlette.routing import BaseRoute, Mount, Route

from modelyard.config import parse_config
from modelyard.config.source import ConfigSource
from modelyard.runtime import RuntimeHolder
from modelyard.server.app import FastPath, create_app
from modelyard.server.sections import SECTIONS, owners
from modelyard.server.state import AppState


def _app() -> FastPath:
    cfg = parse_config(
        {
            "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"}},
            "models": {"gpt": {"provider": "o"}},
        }
    )
    return create_app(AppState(holder=RuntimeHolder(cfg), source=ConfigSource(None)))


def _paths(route: BaseRoute) -> list[str]:
    """The paths a route (or an included router, or a mount) answers."""
    if isinstance(route, Route | Mount):
        return [route.path]
    included = getattr(route, "original_router", None)
    return [p for sub in getattr(included, "routes", ()) for p in _paths(sub)]


def _signature(fp: FastPath) -> list[tuple[str, list[str]]]:
    return [(type(r).__name__, _paths(r)) for r in fp.app.router.routes]


def test_each_section_owns_the_prefixes_of_all_its_routes() -> None:
    fp = _app()
    assert fp.more is not None
    for i, (router, _) in enumerate(SECTIONS):
        paths = [p for r in router(fp.gw).routes for p in _paths(r)]
        assert paths
        for path in paths:
            assert owners(path) == [i], f"{router.__name__}: {path} is under {owners(path)}, not [{i}]"
            assert "{" not in "/".join(path.split("/")[:3]), f"{path}: a parameter in the prefix"


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(SECTIONS))))[::17])
def test_the_routes_keep_their_order_whatever_is_built_first(order: tuple[int, ...]) -> None:
    whole = _app()
    assert whole.more is not None
    whole.more.build()
    fp = _app()
    assert fp.more is not None
    for i in order:
        fp.more.for_path(SECTIONS[i][1][0] + "/x")
        assert fp.more.built[i] is not None
    assert fp.more.complete
    assert _signature(fp) == _signature(whole)


def test_a_request_builds_only_its_section() -> None:
    fp = _app()
    assert fp.more is not None
    fp.more.for_path("/v1/status")  # an endpoint every app has: nothing to build
    assert fp.more.built == [None] * len(SECTIONS)
    fp.more.for_path("/admin/keys")
    assert [b is not None for b in fp.more.built] == [True] + [False] * (len(SECTIONS) - 1)


def test_a_section_that_fails_to_build_leaves_the_routes_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelyard.server import sections

    fp = _app()
    assert fp.more is not None
    fp.more.for_path("/ui/login")
    before = _signature(fp)
    ok, prefixes = sections.SECTIONS[1]

    def broken(gw: AppState) -> APIRouter:
        router = ok(gw)
        fp.app.include_router(router)  # half done: its routes are in, then it fails
        raise RuntimeError("boom")

    monkeypatch.setattr(sections, "SECTIONS", (sections.SECTIONS[0], (broken, prefixes), *sections.SECTIONS[2:]))
    with pytest.raises(RuntimeError):
        fp.more.build()
    assert _signature(fp) == before and fp.more.built[1] is None and not fp.more.complete
    monkeypatch.undo()
    fp.more.build()
    whole = _app()
    assert whole.more is not None
    whole.more.build()
    assert _signature(fp) == _signature(whole)
