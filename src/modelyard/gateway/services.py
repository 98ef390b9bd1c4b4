"""The server's stateful services: database, keys, usage writer, budgets, cache, metrics.

Started once in the app's lifespan (migrations run first) and closed on shutdown, where the
usage writer flushes every queued record before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelyard.accounting.budgets import BudgetEvent, BudgetLedger, make_ledger
from modelyard.accounting.seeding import seed_budgets
from modelyard.accounting.service import Accountant
from modelyard.accounting.writer import UsageWriter
from modelyard.cache.base import ResponseCache, make_cache
from modelyard.config.schema import BudgetConfig, Config
from modelyard.errors import WrongMasterKeyError
from modelyard.gateway.auth import Authenticator
from modelyard.observability.metrics import Metrics
from modelyard.runtime import Runtime
from modelyard.startup import master_key_error
from modelyard.storage.db import Database
from modelyard.storage.events import BudgetEvent as StoredEvent
from modelyard.storage.events import BudgetEventStore
from modelyard.storage.keys import KeyStore
from modelyard.storage.migrate import migrate
from modelyard.storage.redis_errors import is_redis_url
from modelyard.storage.revisions import AuditStore, RevisionStore
from modelyard.storage.usage import UsageStore

if TYPE_CHECKING:  # imported in start(), with a master key only (cryptography itself loads on first use)
    from modelyard.storage.coordinator import RedisCoordinator
    from modelyard.storage.credentials import CredentialStore
    from modelyard.storage.responses import ResponseStore

__all__ = ["CoreServices", "Services", "master_key_of"]

log = logging.getLogger("modelyard.server")


def master_key_of(config: Config) -> str | None:
    return config.master_key()


@dataclass(slots=True)
class CoreServices:
    """The services of a gateway without a database (the SDK with ``database=None``).

    Budgets (in memory, or shared in Redis with ``state:``), the response cache and accounting as
    the server has them; no usage records, no virtual keys, no stored credentials.
    """

    ledger: BudgetLedger
    cache: ResponseCache
    accountant: Accountant
    auth: Authenticator
    config_budgets: tuple[BudgetConfig, ...] = ()

    @classmethod
    async def start(cls, config: Config) -> CoreServices:
        ledger = make_ledger(config.budgets, config.state)
        services = cls(
            ledger=ledger,
            cache=make_cache(config.cache, config.state),
            accountant=Accountant(ledger=ledger),
            auth=Authenticator(master_key_of(config), None),
        )
        await services.refresh_budgets(config)
        return services

    async def refresh_budgets(self, config: Config | None = None) -> None:
        if config is not None:
            self.config_budgets = config.budgets
        self.ledger.reconfigure(list(self.config_budgets))
        self.accountant.has_budgets = bool(self.config_budgets)

    async def aclose(self) -> None:
        await self.accountant.aclose()
        await self.cache.aclose()


@dataclass(slots=True)
class Services:
    database: Database
    keys: KeyStore
    usage: UsageStore
    events: BudgetEventStore
    credentials: CredentialStore | None
    ledger: BudgetLedger
    cache: ResponseCache
    writer: UsageWriter
    accountant: Accountant
    metrics: Metrics
    auth: Authenticator
    revisions: RevisionStore
    audit: AuditStore
    config_budgets: tuple[BudgetConfig, ...] = ()
    #: limits, breakers, health checks and key changes shared with the other replicas (state: redis://)
    shared: RedisCoordinator | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _periodic: asyncio.Task[None] | None = None
    _rolling: asyncio.Task[None] | None = None
    _budget_figures: list[dict[str, Any]] = field(default_factory=list)
    #: called with every budget alert or stop (the alert watcher)
    budget_listeners: list[Callable[[BudgetEvent], None]] = field(default_factory=list)
    _responses: ResponseStore | None = None

    @property
    def responses(self) -> ResponseStore:
        """Stored Responses-API responses (``previous_response_id``): the store is made on first use."""
        if self._responses is None:
            from modelyard.storage.responses import ResponseStore

            self._responses = ResponseStore(self.database)
        return self._responses

    @classmethod
    async def start(cls, config: Config, runtime: Callable[[], Runtime]) -> Services:
        database = Database(config.database.url, statement_cache=config.database.statement_cache)
        try:
            await database.check()  # unreachable: one line and exit 5 (modelyard.startup), not a traceback
            await migrate(database)
        except Exception:
            await database.aclose()
            raise
        master = master_key_of(config)
        keys = KeyStore(database, cache_ttl_s=config.keys.cache_ttl_s, stale_ttl_s=config.keys.stale_ttl_s)
        usage = UsageStore(database)
        events = BudgetEventStore(database)
        credentials: CredentialStore | None = None
        if master:
            from modelyard.storage.credentials import CredentialStore

            try:
                credentials = await CredentialStore.open(database, master)
            except WrongMasterKeyError as exc:
                await database.aclose()
                raise master_key_error(exc) from exc
        ledger = make_ledger(config.budgets, config.state)
        cache = make_cache(config.cache, config.state)
        writer = UsageWriter.from_config(usage, config.usage)
        await writer.start()
        services: Services
        metrics = Metrics(runtime, lambda: services.live_figures())
        accountant = Accountant(ledger=ledger, writer=writer, metrics=metrics)
        services = cls(
            database=database,
            keys=keys,
            usage=usage,
            events=events,
            credentials=credentials,
            ledger=ledger,
            cache=cache,
            writer=writer,
            accountant=accountant,
            metrics=metrics,
            auth=Authenticator(master, keys),
            revisions=RevisionStore(database),
            audit=AuditStore(database),
            config_budgets=config.budgets,
        )
        accountant.event_sink = services._store_event
        if is_redis_url(config.state):
            services.shared = _coordinator(config.state, runtime, keys)
            services.auth.shared = services.shared
        await services.refresh_budgets()
        services._periodic = asyncio.get_running_loop().create_task(services._every_minute())
        return services

    # -- budgets: config budgets plus each key's own -------------------------------------------

    async def refresh_budgets(self, config: Config | None = None) -> None:
        if config is not None:
            self.config_budgets = config.budgets
        key_budgets = [
            BudgetConfig(name=f"key:{k.id}", scope="key", target=k.id, limit_usd=k.budget_usd, period="total")
            for k in await self.keys.list_keys()
            if k.budget_usd
        ]
        budgets = [*self.config_budgets, *key_budgets]
        self.ledger.reconfigure(budgets)
        self.accountant.has_budgets = bool(budgets)
        await self.rebuild_budgets(budgets)

    async def rebuild_budgets(self, budgets: Sequence[BudgetConfig]) -> int:
        """Seed the budget counters from the spend recorded in their period (see
        :mod:`modelyard.accounting.seeding`): on start, and after every change of the budgets.

        Without it a process that starts (or a budget that is added) with ``state: memory``, or a
        Redis that lost its keys, would begin every budget at 0, and a ``total`` budget would start
        again after each restart.  Nothing is added twice, however often this runs, on however
        many replicas.  Returns the number of counters seeded now."""
        return await seed_budgets(self.ledger, self.usage, budgets)

    def _store_event(self, event: BudgetEvent) -> None:
        for listener in self.budget_listeners:
            listener(event)
        stored = StoredEvent(
            ts=datetime.now(UTC),
            budget=event.budget,
            scope_key=event.scope,
            period_start=_period_start(event.period),
            kind=event.kind,
            fraction=event.threshold,
            message=event.message,
            org_id=event.scope.removeprefix("organization:") if event.scope.startswith("organization:") else None,
        )
        task = asyncio.get_running_loop().create_task(self._record(stored))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, event: StoredEvent) -> None:
        try:
            await self.events.record(event)
        except Exception as exc:  # the store is down: the event is in the log already
            log.warning("could not store budget event %s: %s", event.budget, type(exc).__name__)

    async def _every_minute(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(15)
            ticks += 1
            if self.accountant.has_budgets:
                try:
                    self._budget_figures = [
                        {"name": b.budget, "scope_key": b.scope, "fraction": b.fraction}
                        for b in await self.ledger.usage()
                    ]
                except Exception as exc:
                    log.warning("could not read budget use: %s", type(exc).__name__)
            if ticks % 4 == 0:
                try:
                    await self.keys.flush_last_used()
                except Exception as exc:
                    log.warning("could not record key use: %s", type(exc).__name__)
            if ticks % 4 == 1 and (self._rolling is None or self._rolling.done()):
                # the usage rollups: 15 s after start-up, then every minute, in a task of their
                # own (rolling up the history after an upgrade takes a while)
                self._rolling = asyncio.get_running_loop().create_task(self._roll_up())

    async def _roll_up(self) -> None:
        try:
            hours = await self.usage.rollups.run(datetime.now(UTC))
        except Exception as exc:
            log.warning("could not roll up usage: %s", type(exc).__name__)
        else:
            if hours:
                log.debug("rolled up %d hours of usage", hours)

    def live_figures(self) -> dict[str, Any]:
        """For the metrics scrape: the usage backlog, and budget use as of the last 15 s tick."""
        return {"usage_backlog": self.writer.backlog, "budgets": self._budget_figures}

    async def aclose(self) -> None:
        for task in (self._periodic, self._rolling):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.accountant.aclose()  # flushes every queued usage record
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.keys.flush_last_used()
        except Exception as exc:
            log.warning("could not record key use: %s", type(exc).__name__)
        await self.cache.aclose()
        if self.shared is not None:
            await self.shared.aclose()
        await self.database.aclose()


def _coordinator(url: str, runtime: Callable[[], Runtime], keys: KeyStore) -> RedisCoordinator:
    """The shared-state coordinator (imported here: only a gateway with ``state: redis://`` loads it)."""
    from modelyard.storage.coordinator import RedisCoordinator
    from modelyard.storage.redis import redis_client

    shared = RedisCoordinator(
        redis_client(url, max_connections=64),
        url=url,
        deployments=lambda: runtime().models,
        providers=lambda: runtime().providers,
        owns_client=True,
    )
    keys.on_change.append(shared.keys_changed)
    shared.on_keys_changed.append(keys.invalidate)
    shared.start()
    return shared


def _period_start(period: str) -> datetime:
    try:
        if len(period) == 10:
            return datetime.strptime(period, "%Y-%m-%d").replace(tzinfo=UTC)
        if len(period) == 7:
            return datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        pass
    return datetime(1970, 1, 1, tzinfo=UTC)
