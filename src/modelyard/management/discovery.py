"""Discovery: what the providers offer, against the configured catalog.

``new``: upstream models no configured model points at; ``updated``: configured models whose
configured prices differ from the price table's; ``deprecated``: configured models their
provider no longer lists.  Applying a selection is one revision (source ``discovery``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelyard.config.prices import lookup_price
from modelyard.errors import InvalidRequestError, ModelyardError
from modelyard.management import edits
from modelyard.runtime import Runtime
from modelyard.scrub import scrub

__all__ = ["Discovery", "discover"]

#: the longest one provider's listing may take
LIST_TIMEOUT_S = 10.0


@dataclass(slots=True)
class Discovery:
    new: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    deprecated: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"new": self.new, "updated": self.updated, "deprecated": self.deprecated, "errors": self.errors}

    def selection(self, *, add: list[str], update: list[str], remove: list[str]) -> Callable[[dict[str, Any]], None]:
        """One mutation applying the chosen findings (each must be one of this discovery's)."""
        new = {n["id"]: n for n in self.new}
        updated = {u["model"]: u for u in self.updated}
        deprecated = {d["model"] for d in self.deprecated}
        for what, chosen, known in (("add", add, new), ("update", update, updated), ("remove", remove, deprecated)):
            unknown = [c for c in chosen if c not in known]
            if unknown:
                raise InvalidRequestError(
                    f"{', '.join(map(repr, unknown))} not among discovery's findings (GET /admin/discovery)", param=what
                )
        if not (add or update or remove):
            raise InvalidRequestError("choose something to add, update or remove", param="add")

        def mutate(doc: dict[str, Any]) -> None:
            models = doc.setdefault("models", {})
            for item_id in add:
                item = new[item_id]
                name = item["model"] if item["model"] not in models else item["id"]
                entry: dict[str, Any] = {"provider": item["provider"]}
                if name != item["model"]:
                    entry["model"] = item["model"]
                models[name] = entry
            for name in update:
                u = updated[name]
                models[name]["input_cost_per_mtok"] = u["table"]["input_per_mtok"]
                models[name]["output_cost_per_mtok"] = u["table"]["output_per_mtok"]
            for name in remove:
                edits.delete_model(name, force=False)(doc)

        return mutate


async def _listing(rt: Runtime, name: str) -> tuple[str, list[str] | str]:
    try:
        async with asyncio.timeout(LIST_TIMEOUT_S):
            return name, [m.id for m in await rt.providers[name].list_models()]
    except TimeoutError:
        return name, "timed out"
    except ModelyardError as exc:
        return name, exc.message
    except Exception as exc:
        return name, scrub(f"{type(exc).__name__}: {exc}")


async def discover(rt: Runtime, document: dict[str, Any]) -> Discovery:
    found = Discovery()
    listings = dict(await asyncio.gather(*(_listing(rt, name) for name in rt.providers)))
    configured = document.get("models") or {}
    for pname, listed in sorted(listings.items()):
        if isinstance(listed, str):
            found.errors[pname] = listed
            continue
        ours = {n: d for n, d in rt.models.items() if d.provider.name == pname}
        upstreams = {d.upstream for d in ours.values()}
        for upstream in sorted(set(listed) - upstreams):
            price = lookup_price(upstream)
            found.new.append(
                {
                    "id": f"{pname}:{upstream}",
                    "provider": pname,
                    "model": upstream,
                    "price": {"input_per_mtok": price.input, "output_per_mtok": price.output} if price else None,
                }
            )
        listed_set = set(listed)
        for name, dep in sorted(ours.items()):
            if listed and dep.upstream not in listed_set and f"{dep.upstream}:latest" not in listed_set:
                found.deprecated.append({"model": name, "provider": pname, "upstream": dep.upstream})
            price = lookup_price(dep.upstream)
            raw = configured.get(name) or {}
            set_in = raw.get("input_cost_per_mtok")
            set_out = raw.get("output_cost_per_mtok")
            priced = set_in is not None or set_out is not None
            if price is not None and priced and (set_in, set_out) != (price.input, price.output):
                found.updated.append(
                    {
                        "model": name,
                        "provider": pname,
                        "configured": {"input_per_mtok": set_in, "output_per_mtok": set_out},
                        "table": {"input_per_mtok": price.input, "output_per_mtok": price.output},
                    }
                )
    return found
