"""The config manager: every config change (file, admin API, rollback, another replica) goes here.

A change is a function of the active document.  The manager applies it to a copy, moves literal
secrets into the credential store, validates the result with the same schema and YAML-path
errors as a file, optionally probes every new or changed model through a runtime built for the
new config (not yet current), stores the revision with a compare-and-set on the revision it was
based on, and swaps the runtime exactly like a reload: requests in flight finish on the old one.
One lock serialises this process's changes; the compare-and-set serialises replicas.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.accounting.service import probe_record
from modelyard.config.defaults import env_document
from modelyard.config.loader import parse_config, read_document
from modelyard.config.paths import resolve_paths
from modelyard.config.schema import Config
from modelyard.config.source import ConfigSource
from modelyard.errors import (
    ConfigError,
    ConfigRejectedError,
    ConflictError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelyardError,
    NotFoundError,
)
from modelyard.management.audit import Actor, write_audit
from modelyard.management.document import content_hash, diff, externalise_secrets, references, resolve_secrets
from modelyard.management.events import EventBus
from modelyard.management.probe import ProbeResult, probe_model
from modelyard.routing.deployment import Deployment
from modelyard.runtime import Runtime, RuntimeHolder
from modelyard.scrub import scrub
from modelyard.storage.credentials import CredentialStore
from modelyard.storage.records import RequestRecord
from modelyard.storage.revisions import AuditStore, Revision, RevisionStore, StaleRevisionError

__all__ = ["Actor", "ChangeResult", "ConfigManager"]

log = logging.getLogger("modelyard.management")

#: revision sources that count as "the API changed the config" for the file-vs-API rule
API_SOURCES = ("api", "rollback", "discovery")
#: the Redis channel revisions are announced on (with ``state: redis://``)
CHANNEL = "modelyard:config:activated"


FILE_ACTOR = Actor("file")


@dataclass(slots=True)
class ChangeResult:
    revision: Revision | None
    #: False when the change left the document as it was (nothing stored)
    changed: bool
    probes: list[ProbeResult] = field(default_factory=list)
    diff: str = ""
    warnings: list[str] = field(default_factory=list)


Mutation = Callable[[dict[str, Any]], None]


#: how often an import is decided again when another process activated a revision meanwhile
_IMPORT_TRIES = 5


class ConfigManager:
    def __init__(
        self,
        *,
        holder: RuntimeHolder,
        source: ConfigSource,
        revisions: RevisionStore,
        audit: AuditStore,
        credentials: CredentialStore,
        events: EventBus,
        on_swap: Callable[[Config], Awaitable[None]] | None = None,
        env: Mapping[str, str] | None = None,
        usage_sink: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.holder = holder
        self.source = source
        self.revisions = revisions
        self.audit = audit
        self.credentials = credentials
        self.events = events
        self.on_swap = on_swap
        self._env = env
        self._lock = asyncio.Lock()
        self._base_dir = source.path.parent.resolve() if source.path is not None else Path.cwd()
        #: the process's master key: it decrypts the credentials, so no revision may change it
        self._master = holder.current.config.server.master_key
        #: the active revision this process runs, and its document
        self.revision: Revision | None = None
        #: set when a changed file was not applied because the API changed the config since
        self.file_conflict: dict[str, Any] | None = None
        self._loops: list[asyncio.Task[None]] = []
        #: with ``state: redis://``, activations are published there (replicas switch at once)
        self._redis: Any = None
        #: upstream models scheduled discovery has already announced
        self._announced: set[str] | None = None
        #: where probe usage records go (the usage writer), with ``source: probe`` and no org
        self.usage_sink = usage_sink

    @property
    def env(self) -> Mapping[str, str]:
        return self.source.env if self._env is None else self._env

    @property
    def policy(self) -> str:
        return self.holder.current.config.config.source

    # -- start, file changes, other replicas ----------------------------------------------------

    async def start(self) -> None:
        """Import the file (or environment) as a revision when it changed, then run the active one."""
        async with self._lock:
            await self._import_source(reason="start")
            active = await self.revisions.active()
            if active is not None and (self.revision is None or self.revision.id != active.id):
                await self._run(active, reason="start")
            elif active is not None:
                self.holder.current.revision = active.id
        config = self.holder.current.config
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._poll(config.config.poll_interval_s))]
        if config.state.startswith(("redis://", "rediss://", "unix://")):
            self._loops.append(loop.create_task(self._listen(config.state)))
        if config.config.discovery_interval_s:
            self._loops.append(loop.create_task(self._discover_every(config.config.discovery_interval_s)))

    async def aclose(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def file_changed(self, reason: str) -> bool:
        """SIGHUP or ``--watch``: import the file under the ``config.source`` rule."""
        try:
            async with self._lock:
                return await self._import_source(reason=reason)
        except (ConfigError, ModelyardError) as exc:
            log.error("config reload (%s) rejected, still serving revision %s: %s", reason, self._rid(), exc)
            return False

    async def _import_source(self, *, reason: str) -> bool:
        if self.source.path is not None:
            raw = await asyncio.to_thread(read_document, self.source.path)
            origin = "file"
        else:
            raw = env_document(self.env)
            origin = "env"
        doc, _ = await externalise_secrets(raw, self._store_secret)
        digest = content_hash(doc)
        for _ in range(_IMPORT_TRIES - 1):
            try:
                return await self._import_document(doc, digest, origin, reason)
            except StaleRevisionError:
                # Another process activated a revision between this one's read and its write: the
                # workers of one `modelyard serve --workers N`, or replicas, starting together on a
                # fresh database or after the file changed, each import the same document.  Decide
                # again against what is active now (usually: that document, so nothing to do).
                continue
        return await self._import_document(doc, digest, origin, reason)  # the last try's error stands

    async def _import_document(self, doc: dict[str, Any], digest: str, origin: str, reason: str) -> bool:
        """Import ``doc`` (the file's or the environment's document) under the ``config.source`` rule."""
        active = await self.revisions.active()
        last = await self.revisions.last(origin)
        if active is not None and active.content_hash == digest:
            self.revision = self.revision or active
            self.file_conflict = None
            return False  # the running config already is this document (also: another replica imported it)
        if last is not None and last.content_hash == digest and active is not None:
            return False  # this file was imported before; the API has changed the config since
        if active is not None and self.policy == "api":
            log.warning("config.source is 'api': the changed %s is not applied (revision %d stays)", origin, active.id)
            return False
        if (
            active is not None
            and self.policy == "both"
            and last is not None
            and await self.revisions.changed_since(last.id, API_SOURCES)
        ):
            self.file_conflict = {"file_hash": digest, "active_revision": active.id, "last_file_revision": last.id}
            self.events.publish("config.file_conflict", dict(self.file_conflict))
            log.warning(
                "the config file changed, but revision %d was made through the admin API since the file's "
                "last import (revision %d): the file is not applied (config.source: both). Deploy it with "
                "'modelyard config deploy', or roll back to a file revision.",
                active.id,
                last.id,
            )
            return False
        config = await self._build(doc, rejected=ConfigError)
        rev = await self._commit(
            doc,
            config,
            base=active.id if active else None,
            source=origin,
            actor=FILE_ACTOR,
            message=f"{origin} import ({reason})",
            before=active.document if active else None,
        )
        self.file_conflict = None
        return rev is not None

    async def _poll(self, interval_s: float) -> None:
        """Replicas sharing the database converge on the active revision."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception as exc:
                log.warning("could not check the active config revision: %s", scrub(str(exc)))

    async def _listen(self, url: str) -> None:
        """Redis pub/sub: another replica's activation is run at once (polling stays as the fallback)."""
        from modelyard.storage.redis import redis_client

        self._redis = redis_client(url, max_connections=4)
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                try:
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None:
                            await self.sync()
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: polling still converges; try again shortly
                log.warning("config revisions: Redis pub/sub unavailable (%s); polling only", type(exc).__name__)
                await asyncio.sleep(5)

    async def _publish(self, revision_id: int) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.publish(CHANNEL, str(revision_id))
        except Exception as exc:
            log.warning("could not publish revision %d to Redis: %s", revision_id, type(exc).__name__)

    async def _discover_every(self, interval_s: float) -> None:
        """Scheduled discovery: a ``discovery.new`` event when a provider lists a model not seen before."""
        from modelyard.management.discovery import discover

        while True:
            await asyncio.sleep(interval_s)
            if self.revision is None:
                continue
            try:
                found = await discover(self.holder.current, self.document())
            except Exception as exc:
                log.warning("scheduled discovery failed: %s", scrub(str(exc)))
                continue
            ids = {n["id"] for n in found.new}
            if self._announced is not None and ids - self._announced:
                new = [n for n in found.new if n["id"] not in self._announced]
                self.events.publish("discovery.new", {"models": new})
                log.info("discovery: %d new upstream models (GET /admin/discovery)", len(new))
            self._announced = ids if self._announced is None else self._announced | ids

    async def sync(self) -> bool:
        """Run the active revision if another replica activated a newer one."""
        rid = await self.revisions.active_id()
        if rid is None or (self.revision is not None and self.revision.id == rid):
            return False
        async with self._lock:
            active = await self.revisions.active()
            if active is None or (self.revision is not None and self.revision.id == active.id):
                return False
            await self._run(active, reason="activated by another replica")
            return True

    async def credentials_changed(self) -> None:
        """A stored credential changed: rebuild the active revision's runtime (next request uses it)."""
        async with self._lock:
            if self.revision is not None:
                await self._run(self.revision, reason="credential changed", publish=False)

    # -- reading -------------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        if self.revision is None:
            raise NotFoundError("no config revision is active yet", code="revision_not_found")
        return copy.deepcopy(self.revision.document)

    async def get(self, revision_id: int) -> Revision:
        rev = await self.revisions.get(revision_id)
        if rev is None:
            raise NotFoundError(f"no config revision {revision_id}", code="revision_not_found")
        return rev

    # -- changing ------------------------------------------------------------------------------

    async def validate(self, doc: dict[str, Any]) -> tuple[Config, list[str]]:
        """A dry run: the document's config and its warnings, or ConfigRejectedError (nothing stored)."""
        config = await self._build(doc, rejected=ConfigRejectedError)
        return config, _warnings(config)

    async def change(
        self,
        mutate: Mutation,
        *,
        base: int,
        actor: Actor,
        action: str,
        target: str,
        message: str = "",
        probe: bool = False,
        probe_load: bool = False,
        source: str = "api",
    ) -> ChangeResult:
        """Apply ``mutate`` to a copy of the active document and activate the result."""
        if self.policy == "file":
            raise MethodNotAllowedError(
                "config.source is 'file': change the config file (and send SIGHUP), or set config.source to "
                "'both' or 'api' to change it through the admin API"
            )
        async with self._lock:
            active = self.revision
            if active is None:
                raise NotFoundError("no config revision is active yet", code="revision_not_found")
            if base != active.id:
                raise StaleRevisionError(base, active.id)
            raw = copy.deepcopy(active.document)
            mutate(raw)
            doc, stored = await externalise_secrets(raw, self._store_secret)
            if content_hash(doc) == active.content_hash:
                return ChangeResult(active, changed=False)
            config = await self._build(doc, rejected=ConfigRejectedError)
            probes: list[ProbeResult] = []
            prepared = self.holder.prepare(config, org_keys=await self._org_keys(doc))
            try:
                if probe:
                    probes = await self._probe_changes(prepared, self.holder.current.config, config, load=probe_load)
                    failed = [p for p in probes if not p.ok]
                    if failed:
                        first = failed[0]
                        await self._audit(
                            actor,
                            f"{action}_rejected",
                            target,
                            active.document,
                            doc,
                            None,
                            extra={"probes": [p.public() for p in probes]},
                        )
                        err = ConflictError(
                            f"probe of model {first.model!r} failed: {first.error}; nothing was changed "
                            "(send probe: false to deploy without probing)",
                            param=f"models.{first.model}",
                            code="probe_failed",
                        )
                        raise err
                rev = await self._commit(
                    doc,
                    config,
                    base=base,
                    source=source,
                    actor=actor,
                    message=message or f"{action} {target}",
                    before=active.document,
                    prepared=prepared,
                )
            except BaseException:
                await self.holder.discard(prepared)
                raise
            assert rev is not None
            await self._audit(actor, action, target, active.document, doc, rev.id, extra={"credentials": stored})
            return ChangeResult(
                rev,
                changed=True,
                probes=probes,
                diff=diff(active.document, doc, f"r{active.id}", f"r{rev.id}"),
                warnings=_warnings(config),
            )

    async def rollback(self, *, to: int | None, base: int, actor: Actor) -> ChangeResult:
        """A new revision with the document of ``to`` (default: the active revision's parent)."""
        active = self.revision
        if active is None:
            raise NotFoundError("no config revision is active yet", code="revision_not_found")
        target_id = to if to is not None else active.parent_id
        if target_id is None:
            raise InvalidRequestError("the active revision has no parent to roll back to", param="revision")
        target = await self.get(target_id)
        _, missing = await resolve_secrets(target.document, self._lookup_secret)
        if missing:
            path, name = missing[0]
            raise ConflictError(
                f"revision {target_id} needs credential {name!r} ({path}), which no longer exists: store it with "
                "POST /admin/credentials first",
                param=path,
                code="credential_missing",
            )
        document = target.document

        def replace(doc: dict[str, Any]) -> None:
            doc.clear()
            doc.update(copy.deepcopy(document))

        return await self.change(
            replace,
            base=base,
            actor=actor,
            action="config.rollback",
            target=f"revision:{target_id}",
            message=f"rollback to revision {target_id}",
            source="rollback",
        )

    # -- internals -----------------------------------------------------------------------------

    def _rid(self) -> int | None:
        return self.revision.id if self.revision is not None else None

    async def _store_secret(self, name: str, secret: str) -> None:
        await self.credentials.put(name.split(".", 1)[0], name, secret)

    async def _lookup_secret(self, name: str) -> str | None:
        return await self.credentials.secret_by_name(name)

    async def _build(self, doc: dict[str, Any], *, rejected: type[ModelyardError]) -> Config:
        resolved, missing = await resolve_secrets(doc, self._lookup_secret)
        if missing:
            path, name = missing[0]
            message = f"unknown credential {name!r} (store it with POST /admin/credentials)"
            if rejected is ConfigError:
                raise ConfigError(message, path=path)
            raise ConfigRejectedError(message, param=path)
        try:
            config = parse_config(resolved, env=self.env, source=None)
        except ConfigError as exc:
            if rejected is ConfigError:
                raise
            raise ConfigRejectedError.of(exc) from None
        config = resolve_paths(config, self._base_dir)
        if config.server.master_key != self._master:  # process-level: see management.document
            config = config.model_copy(update={"server": config.server.model_copy(update={"master_key": self._master})})
        return config

    async def _commit(
        self,
        doc: dict[str, Any],
        config: Config,
        *,
        base: int | None,
        source: str,
        actor: Actor,
        message: str,
        before: dict[str, Any] | None,
        prepared: Runtime | None = None,
    ) -> Revision | None:
        rev = await self.revisions.commit(
            doc, content_hash=content_hash(doc), source=source, actor=actor.name, message=message, base=base
        )
        await self._activate(rev, config, prepared=prepared, reason=message)
        await self._publish(rev.id)
        if source in ("file", "env"):
            await self._audit(actor, f"config.{source}_import", "config", before, doc, rev.id)
        return rev

    async def _run(self, rev: Revision, *, reason: str, publish: bool = True) -> None:
        config = await self._build(rev.document, rejected=ConfigError)
        await self._activate(rev, config, reason=reason, publish=publish)

    async def _org_keys(self, doc: dict[str, Any]) -> dict[str, dict[str, str]]:
        """Bring your own key: provider -> organisation -> the organisation's own secret of the
        credential the provider's ``api_key: credential:NAME`` names."""
        by_name: dict[str, list[str]] = {}
        for path, name in references(doc).items():
            parts = path.split(".")
            if len(parts) == 3 and parts[0] == "providers" and parts[2] == "api_key":
                by_name.setdefault(name, []).append(parts[1])
        out: dict[str, dict[str, str]] = {}
        for org_id, name, secret in await self.credentials.org_secrets(by_name):
            for provider in by_name[name]:
                out.setdefault(provider, {})[org_id] = secret
        return out

    async def _activate(
        self, rev: Revision, config: Config, *, reason: str, prepared: Runtime | None = None, publish: bool = True
    ) -> None:
        previous = self.revision
        org_keys = await self._org_keys(rev.document)
        await self.holder.swap(config, prepared=prepared, revision=rev.id, org_keys=org_keys)
        self.revision = rev
        if self.on_swap is not None:
            await self.on_swap(config)
        log.info("config revision %d is active (%s)", rev.id, reason)
        if publish:
            self.events.publish(
                "config.changed",
                {
                    "revision": rev.id,
                    "previous": previous.id if previous is not None else None,
                    "source": rev.source,
                    "actor": rev.actor,
                    "message": rev.message,
                },
            )

    async def _audit(
        self,
        actor: Actor,
        action: str,
        target: str,
        before: Any,
        after: Any,
        revision_id: int | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        b, a = _delta(before, after)
        if extra and any(extra.values()):
            # beside the changed sections, under keys no config section has
            a = {**(a if isinstance(a, dict) else {}), **{f"_{k}": v for k, v in extra.items() if v}}
        await write_audit(self.audit, self.events, actor, action, target, before=b, after=a, revision_id=revision_id)

    async def _probe_changes(self, prepared: Runtime, old: Config, new: Config, *, load: bool) -> list[ProbeResult]:
        names = [
            name
            for name, m in new.models.items()
            if old.models.get(name) != m or old.providers.get(m.provider) != new.providers.get(m.provider)
        ]
        timeout = new.config.probe_timeout_s
        results = await asyncio.gather(*(probe_model(prepared.models[n], timeout_s=timeout, load=load) for n in names))
        for result in results:
            self.record_probe(prepared.models[result.model], result)
        return list(results)

    def record_probe(self, dep: Deployment, result: ProbeResult) -> None:
        """A probe is a usage record (``source: probe``, charged to no organisation)."""
        if self.usage_sink is None or result.method == "presence":
            return
        self.usage_sink(
            probe_record(
                dep, dep.provider.name, dep.upstream, result.usage, result.latency_ms, ok=result.ok, route="probe"
            )
        )


def _warnings(config: Config) -> list[str]:
    from modelyard.config.prices import unpriced_models

    return [f"model {name!r} has no price: its cost is recorded as 0" for name in unpriced_models(config)]


def _delta(before: Any, after: Any) -> tuple[Any, Any]:
    """Only what changed between two documents (top-level sections, then their entries)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return before, after
    b: dict[str, Any] = {}
    a: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        x, y = before.get(key), after.get(key)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            for sub in sorted(set(x) | set(y)):
                if x.get(sub) != y.get(sub):
                    if sub in x:
                        b.setdefault(key, {})[sub] = x[sub]
                    if sub in y:
                        a.setdefault(key, {})[sub] = y[sub]
        else:
            if x is not None:
                b[key] = x
            if y is not None:
                a[key] = y
    return b, a
