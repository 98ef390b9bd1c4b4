"""The endpoints a gateway needs least at start-up, built on the first request for them.

FastAPI builds a route's validators when the route is added: for the ``/admin`` API (keys,
management, comparisons), accounting and the dashboard that is about a third of a second, and
their modules (the comparison package, the dashboard) are more.  A gateway answers its first
completion without them.  Each section is built on the first request under one of its path
prefixes, and the OpenAPI document builds them all; a section's routes take the place they
always had among the app's routes, so which route answers a request does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from starlette.routing import BaseRoute

    from modelyard.server.state import AppState

__all__ = ["SECTIONS", "LazyRouters", "owners"]


def _admin(gw: AppState) -> APIRouter:
    from modelyard.server.admin import admin_router

    return admin_router(gw)


def _manage(gw: AppState) -> APIRouter:
    from modelyard.server.manage_api import manage_router

    return manage_router(gw)


def _compare(gw: AppState) -> APIRouter:
    from modelyard.server.compare_api import compare_router

    return compare_router(gw)


def _accounting(gw: AppState) -> APIRouter:
    from modelyard.server.accounting_api import accounting_router

    return accounting_router(gw)


def _ui(gw: AppState) -> APIRouter:
    from modelyard.server.ui import ui_router

    return ui_router(gw)


#: (router, the path prefixes of all its routes), in the order the app includes them; a prefix is
#: whole path segments, and no two sections share one (tests/server/test_sections.py checks both)
SECTIONS: tuple[tuple[Callable[[AppState], APIRouter], tuple[str, ...]], ...] = (
    (_admin, ("/admin/budget-events", "/admin/budgets", "/admin/credentials", "/admin/keys", "/admin/orgs")),
    (
        _manage,
        (
            "/admin/alerts",
            "/admin/audit",
            "/admin/config",
            "/admin/discovery",
            "/admin/events",
            "/admin/models",
            "/admin/providers",
            "/admin/routes",
        ),
    ),
    (_compare, ("/admin/comparisons", "/admin/recommendations")),
    (_accounting, ("/v1/budgets", "/v1/estimate", "/v1/stats")),
    (_ui, ("/ui",)),
)


def owners(path: str) -> list[int]:
    """The sections (indexes into :data:`SECTIONS`) with a prefix that ``path`` falls under."""
    return [
        i for i, (_, prefixes) in enumerate(SECTIONS) if any(path == p or path.startswith(p + "/") for p in prefixes)
    ]


class LazyRouters:
    """The sections of one app: where their routes go, and which are built."""

    def __init__(self, app: FastAPI, gw: AppState) -> None:
        self.app = app
        self.gw = gw
        #: the sections' routes go here, after the routes the app had when this was made
        self.at = len(app.router.routes)
        self.built: list[list[BaseRoute] | None] = [None] * len(SECTIONS)
        self.complete = False

    def for_path(self, path: str) -> None:
        """Build the section that serves ``path``, if it is one of theirs (a request is about to be routed)."""
        if not self.complete:
            self._build(owners(path))

    def build(self) -> None:
        """Build every section (for the OpenAPI document)."""
        if not self.complete:
            self._build(range(len(SECTIONS)))

    def _build(self, which: Iterable[int]) -> None:
        todo = [i for i in which if self.built[i] is None]
        if not todo:
            return
        routes = self.app.router.routes
        previously = sum(len(b) for b in self.built if b is not None)  # at routes[at : at + previously]
        new: dict[int, list[BaseRoute]] = {}
        for i in todo:  # include_router appends: take its routes off the end (also when it fails)
            start = len(routes)
            try:
                self.app.include_router(SECTIONS[i][0](self.gw))
                new[i] = routes[start:]
            finally:
                del routes[start:]
        self.built = [new.get(i, b) for i, b in enumerate(self.built)]
        routes[self.at : self.at + previously] = [r for b in self.built if b is not None for r in b]
        self.complete = all(b is not None for b in self.built)
