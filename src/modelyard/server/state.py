"""The HTTP server's state: the runtime holder, the config source, the services and reloads."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelyard.config.source import ConfigSource
from modelyard.errors import ConfigError, StartupError
from modelyard.gateway.pipeline import Pipeline
from modelyard.gateway.services import Services
from modelyard.management.alerts import AlertWatcher
from modelyard.management.events import EventBus
from modelyard.management.manager import ConfigManager
from modelyard.observability.tracing import Tracing
from modelyard.routing.router import Router
from modelyard.runtime import RuntimeHolder
from modelyard.storage.comparisons import ComparisonStore

if TYPE_CHECKING:
    from modelyard.compare.graders import PythonGrader
    from modelyard.compare.service import ComparisonService

__all__ = ["AppState"]

log = logging.getLogger("modelyard.server")


@dataclass(slots=True)
class AppState:
    """Everything the HTTP layer needs; one per process, held by the app (no module globals).

    (The SDK's in-process front end is :class:`modelyard.Gateway`; this is the server's state.)
    """

    holder: RuntimeHolder
    source: ConfigSource
    router: Router = field(default_factory=Router)
    watch: bool = False
    reloads: asyncio.Queue[str] | None = None
    #: database, keys, usage, budgets, cache, metrics (started in the app's lifespan)
    services: Services | None = None
    #: False: run without the database and accounting (the SDK and a few tests)
    with_services: bool = True
    #: the request pipeline every endpoint uses (rebuilt by :meth:`start_pipeline` once services are up)
    pipeline: Pipeline = field(init=False)
    #: config revisions and the management API (with the database and a master key; see docs/management.md)
    manager: ConfigManager | None = None
    #: OpenTelemetry traces (tracing.otlp_endpoint; None: off)
    tracing: Tracing | None = None
    #: admin events (GET /admin/events)
    events: EventBus = field(default_factory=EventBus)
    #: provider health and breaker changes as events, and the configured alerts (GET /admin/alerts)
    alerts: AlertWatcher | None = None
    #: set on SIGTERM: /ready answers 503 while requests in flight finish (see cli.serve)
    draining: bool = False
    #: why the start-up stopped, when it was an operator's problem (``modelyard serve`` prints it)
    startup_error: StartupError | ConfigError | None = None
    #: comparison runs (POST /admin/comparisons; with the database): made by :meth:`comparison_service`
    comparisons: ComparisonService | None = None
    #: the comparisons' store and Python graders, set at start-up (None: no database, no comparisons)
    _comparison_store: ComparisonStore | None = field(default=None, init=False)
    _graders: dict[str, PythonGrader] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.start_pipeline()

    def start_pipeline(self) -> None:
        self.pipeline = Pipeline(self.holder, self.router, self.services, self.tracing)

    @property
    def max_body(self) -> int:
        return int(self.holder.current.config.server.max_body_mb * 1024 * 1024)

    def start_alerts(self) -> AlertWatcher:
        """The alert watcher: fed by every finished request, the health monitor and the budgets."""
        services = self.services
        watcher = AlertWatcher(self.holder, self.events, audit=services.audit.record if services else None)
        if services is not None:
            services.metrics.listeners.append(watcher.observe)
            services.budget_listeners.append(lambda e: watcher.budget(e.budget, e.scope, e.fraction, e.message))
        watcher.start()
        self.alerts = watcher
        return watcher

    async def stop_alerts(self) -> None:
        if self.alerts is not None:
            await self.alerts.aclose()
            self.alerts = None

    async def start_manager(self) -> None:
        """Config revisions need the database and the credential store (so a master key)."""
        services = self.services
        if services is None or services.credentials is None:
            return
        manager = ConfigManager(
            holder=self.holder,
            source=self.source,
            revisions=services.revisions,
            audit=services.audit,
            credentials=services.credentials,
            events=self.events,
            on_swap=services.refresh_budgets,
            usage_sink=services.writer.submit,
        )
        await manager.start()
        self.manager = manager

    async def stop_manager(self) -> None:
        if self.manager is not None:
            await self.manager.aclose()
            self.manager = None

    async def start_comparisons(self) -> None:
        """Runs a stopped gateway left running are marked failed; the service itself (and the
        comparison package) is made on the first request that needs it (:meth:`comparison_service`)."""
        services = self.services
        if services is None:
            return
        self._graders = {}
        configured = self.holder.current.config.compare.graders
        if configured:
            from modelyard.compare.graders import GraderError, load_python_grader

            for name, target in configured.items():
                try:
                    self._graders[name] = load_python_grader(target)
                except GraderError as exc:
                    log.error("compare.graders.%s: %s (not available to comparisons)", name, exc)
        store = ComparisonStore(services.database)
        stale = await store.fail_unfinished()
        if stale:
            log.warning("%d comparison run(s) were left running by a stopped gateway: marked failed", stale)
        self._comparison_store = store

    def comparison_service(self) -> ComparisonService | None:
        """The comparison runs' service (None without the database), made on first use."""
        if self.comparisons is None and self._comparison_store is not None and self.services is not None:
            from modelyard.compare.service import ComparisonService

            self.comparisons = ComparisonService(self.pipeline, self._comparison_store, self._graders)
        return self.comparisons

    async def stop_comparisons(self) -> None:
        self._comparison_store = None
        if self.comparisons is not None:
            await self.comparisons.aclose()
            self.comparisons = None

    async def reload(self, reason: str) -> bool:
        """Load the config again and swap it in; a bad config is logged and the old one keeps serving.

        With the management plane running, the file becomes a revision under ``config.source``."""
        if self.manager is not None:
            return await self.manager.file_changed(reason)
        try:
            config = await self.source.aload()
            await self.holder.swap(config)
            if self.services is not None:
                await self.services.refresh_budgets(config)
        except ConfigError as exc:
            log.error(
                "config reload (%s) rejected, still serving version %d: %s", reason, self.holder.current.version, exc
            )
            return False
        except Exception:
            log.exception("config reload (%s) failed, still serving version %d", reason, self.holder.current.version)
            return False
        return True
