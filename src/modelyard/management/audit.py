"""Writing the audit log: one entry per change, and an ``audit`` admin event for it.

Every audited change goes through :func:`write_audit`: config changes (the config manager),
organisations, keys and credentials (the admin API), local model load and unload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from modelyard.management.events import EventBus
from modelyard.scrub import scrub
from modelyard.storage.revisions import AuditEntry, AuditStore

__all__ = ["Actor", "write_audit"]

log = logging.getLogger("modelyard.management")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change, and from where (for revisions and the audit log)."""

    name: str
    org_id: str | None = None
    request_id: str | None = None
    client: str | None = None


async def write_audit(
    store: AuditStore,
    events: EventBus,
    actor: Actor,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    revision_id: int | None = None,
) -> None:
    """Record one change.  The change is made already: a store failure is logged, never raised."""
    entry = AuditEntry(
        actor=actor.name,
        action=action,
        target=target,
        before=before,
        after=after,
        org_id=actor.org_id,
        revision_id=revision_id,
        request_id=actor.request_id,
        client=actor.client,
    )
    try:
        await store.record(entry)
    except Exception as exc:
        log.error("could not write the audit entry for %s %s: %s", action, target, scrub(str(exc)))
    events.publish("audit", {"action": action, "target": target, "actor": actor.name}, org_id=actor.org_id)
