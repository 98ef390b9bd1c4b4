"""Changes to a config document: the admin API's providers, models and routes, one function each.

Each returns a mutation (a function that edits a document in place) for
:meth:`~modelyard.management.manager.ConfigManager.change`, which validates the result as a
whole.  What a change cannot do without breaking something else (deleting a provider that
models use, a model that routes use) is a 409 naming the users, unless ``force`` is given:
then the users are edited too (and routes left with no model are removed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from modelyard.errors import ConflictError, NotFoundError

__all__ = [
    "delete_model",
    "delete_provider",
    "delete_route",
    "merge",
    "put_entry",
    "set_enabled",
    "switch_route",
    "users_of_model",
    "users_of_route",
]

Mutation = Callable[[dict[str, Any]], None]


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    part = doc.get(name)
    if not isinstance(part, dict):
        part = doc[name] = {}
    return part


def _entry(doc: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    entry = _section(doc, section).get(name)
    if not isinstance(entry, dict):
        what = section[:-1]
        raise NotFoundError(f"no {what} {name!r}", param=f"{section}.{name}", code=f"{what}_not_found")
    return entry


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): ``null`` removes a key, objects merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def put_entry(section: str, name: str, body: dict[str, Any], *, create: bool, patch: bool = False) -> Mutation:
    """Create (``create``: 409 if it exists), replace, or merge-patch one provider, model or route."""

    def mutate(doc: dict[str, Any]) -> None:
        part = _section(doc, section)
        exists = isinstance(part.get(name), dict)
        if create and exists:
            raise ConflictError(
                f"{section[:-1]} {name!r} exists already: change it with PUT or PATCH", param=f"{section}.{name}"
            )
        if not create and not exists:
            _entry(doc, section, name)  # raises 404
        part[name] = merge(part[name], body) if patch and exists else copy.deepcopy(body)

    return mutate


def users_of_model(doc: dict[str, Any], model: str) -> list[str]:
    """The YAML paths that name ``model``."""
    users: list[str] = []
    for rname, route in _section(doc, "routes").items():
        if not isinstance(route, dict):
            continue
        for key in ("models", "fallbacks"):
            if model in (route.get(key) or ()):
                users.append(f"routes.{rname}.{key}")
        for task, ref in (route.get("tasks") or {}).items():
            if ref == model:
                users.append(f"routes.{rname}.tasks.{task}")
        if route.get("baseline_model") == model:
            users.append(f"routes.{rname}.baseline_model")
    if doc.get("default_route") == model:
        users.append("default_route")
    return users


def users_of_route(doc: dict[str, Any], route: str) -> list[str]:
    users = [
        f"routes.{rname}.tasks.{task}"
        for rname, r in _section(doc, "routes").items()
        if isinstance(r, dict)
        for task, ref in (r.get("tasks") or {}).items()
        if ref == route
    ]
    if doc.get("default_route") == route:
        users.append("default_route")
    return users


def _in_use(what: str, name: str, users: list[str]) -> ConflictError:
    return ConflictError(
        f"{what} {name!r} is in use by {', '.join(users)}: change those first, or delete with ?force=true "
        "(which removes it from them too)",
        param=users[0],
        code="in_use",
    )


def _drop_model_refs(doc: dict[str, Any], model: str) -> None:
    routes = _section(doc, "routes")
    for rname in list(routes):
        route = routes[rname]
        if not isinstance(route, dict):
            continue
        for key in ("models", "fallbacks"):
            if key in route:
                route[key] = [m for m in route[key] if m != model]
        if "tasks" in route:
            route["tasks"] = {t: r for t, r in route["tasks"].items() if r != model}
        if route.get("baseline_model") == model:
            del route["baseline_model"]
        if not route.get("models"):
            if route.get("fallbacks"):
                route["models"], route["fallbacks"] = route["fallbacks"][:1], route["fallbacks"][1:]
            else:
                del routes[rname]
                _drop_route_refs(doc, rname)
    if doc.get("default_route") == model:
        del doc["default_route"]


def _drop_route_refs(doc: dict[str, Any], route: str) -> None:
    for r in _section(doc, "routes").values():
        if isinstance(r, dict) and "tasks" in r:
            r["tasks"] = {t: ref for t, ref in r["tasks"].items() if ref != route}
    if doc.get("default_route") == route:
        del doc["default_route"]


def delete_provider(name: str, *, force: bool) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        _entry(doc, "providers", name)
        models = _section(doc, "models")
        users = sorted(m for m, cfg in models.items() if isinstance(cfg, dict) and cfg.get("provider") == name)
        if users and not force:
            raise _in_use("provider", name, [f"models.{m}" for m in users])
        for m in users:
            del models[m]
            _drop_model_refs(doc, m)
        del doc["providers"][name]

    return mutate


def delete_model(name: str, *, force: bool) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        _entry(doc, "models", name)
        users = users_of_model(doc, name)
        if users and not force:
            raise _in_use("model", name, users)
        del doc["models"][name]
        _drop_model_refs(doc, name)

    return mutate


def delete_route(name: str, *, force: bool) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        _entry(doc, "routes", name)
        users = users_of_route(doc, name)
        if users and not force:
            raise _in_use("route", name, users)
        del doc["routes"][name]
        _drop_route_refs(doc, name)

    return mutate


def set_enabled(name: str, enabled: bool) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        entry = _entry(doc, "models", name)
        if enabled:
            entry.pop("enabled", None)
        else:
            entry["enabled"] = False

    return mutate


def switch_route(name: str, model: str, *, keep_previous: bool = True) -> Mutation:
    """Make ``model`` the route's only primary model (the "feature assignment" switch).

    The models it had before become its first fallbacks (``keep_previous``), so a failure of the
    new model still has somewhere to go; ``model`` leaves the fallbacks if it was one."""

    def mutate(doc: dict[str, Any]) -> None:
        route = _entry(doc, "routes", name)
        if model not in _section(doc, "models"):
            raise NotFoundError(f"no model {model!r} to switch route {name!r} to", param="model")
        previous = [m for m in route.get("models") or () if m != model]
        fallbacks = [m for m in route.get("fallbacks") or () if m != model]
        route["models"] = [model]
        if keep_previous:
            fallbacks = previous + [m for m in fallbacks if m not in previous]
        if fallbacks:
            route["fallbacks"] = fallbacks
        else:
            route.pop("fallbacks", None)

    return mutate
