"""What the router asks of state shared between replicas (``state: redis://``).

Every replica keeps its own limiter and breaker per model (the fast path, and what still holds
when the shared store is away). With a :class:`Coordinator`, the router also:

* takes a shared **admission** after the local slot: the model's rpm/tpm over one window for the
  whole fleet, and a concurrency **lease** that expires if its replica dies (released with the
  slot);
* lets one replica only send the **half-open probe** of a breaker;
* tells the others when a breaker **opens or closes** (:meth:`Coordinator.watch` hooks the
  model's breaker), so one replica's failures keep every replica off the model.

The Redis implementation is :class:`modelyard.storage.coordinator.RedisCoordinator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from modelyard.routing.deployment import Deployment

__all__ = ["Admission", "Coordinator"]


@dataclass(slots=True)
class Admission:
    """A shared admission: granted (with a lease to release), or refused and why."""

    granted: bool
    #: the scope and lease id to release (granted only)
    scope: str = ""
    lease: str = ""
    #: why it was refused: "concurrency", "rpm", "tpm", or "tpm_never" (more than the limit)
    reason: str | None = None
    #: seconds until the refused limit is likely to admit the request (None: unknown)
    retry_after: float | None = None


class Coordinator(Protocol):
    """Shared limits and breakers; every method fails open (see the implementation's docs)."""

    async def admit(
        self,
        scope: str,
        *,
        rpm: int | None,
        tpm: int | None,
        max_concurrency: int | None,
        est_tokens: int,
    ) -> Admission: ...

    def release(self, admission: Admission, actual_tokens: int | None = None) -> None: ...

    def watch(self, dep: Deployment) -> None:
        """Hook ``dep``'s breaker so its transitions reach the other replicas (idempotent)."""
        ...

    async def claim_probe(self, dep: Deployment) -> bool:
        """True when this replica may send ``dep``'s half-open probe (no other replica is)."""
        ...
