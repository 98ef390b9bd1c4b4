"""The runtime: one immutable config turned into providers, deployments and routes, swapped atomically.

``RuntimeHolder.current`` is read once per request; a reload builds a complete new
:class:`Runtime` first (a bad config never replaces a good one), then swaps the reference.
Requests in flight keep the runtime they started with; providers the new runtime no longer
uses are closed when the last of those requests finishes.  Providers and per-model state
(breakers, limiters, figures) whose config did not change are carried over, so connection
pools stay warm and an open breaker stays open across a reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from pydantic import SecretStr

from modelyard.config.capabilities import capabilities_of
from modelyard.config.prices import lookup_price
from modelyard.config.schema import Config, ModelConfig, ProviderConfig, RouteConfig
from modelyard.errors import ConfigError, InvalidRequestError, NotFoundError
from modelyard.local.manager import LocalModelManager
from modelyard.local.settings import ModelSettings, merge_settings, model_settings
from modelyard.providers import build_provider
from modelyard.providers.base import CallOptions, Provider
from modelyard.routing.auto import AutoRoute, Tier
from modelyard.routing.breaker import BreakerSettings, CircuitBreaker
from modelyard.routing.deployment import Deployment, ModelState, Route
from modelyard.routing.limiter import ModelLimiter
from modelyard.routing.strategies import make_strategy
from modelyard.scrub import Scrubber
from modelyard.validators import build_validators, check_model_name

if TYPE_CHECKING:
    from modelyard.classify.model import Classifier

__all__ = ["Runtime", "RuntimeHolder", "sync_runtime"]

log = logging.getLogger("modelyard.runtime")

_ADHOC_LIMIT = 1024


def _new_state(name: str, cfg: ModelConfig) -> ModelState:
    b = cfg.breaker
    settings = BreakerSettings(
        failure_threshold=b.failure_threshold,
        error_rate=b.error_rate,
        window_s=b.window_s,
        min_requests=b.min_requests,
        cooldown_s=b.cooldown_s,
    )
    return ModelState(
        breaker=CircuitBreaker(settings),
        limiter=ModelLimiter(
            name,
            max_concurrency=cfg.max_concurrency,
            max_queue=cfg.max_queue,
            queue_timeout_s=cfg.queue_timeout_s,
            rpm=cfg.rpm,
            tpm=cfg.tpm,
        ),
    )


def _secrets(config: Config) -> list[str]:
    """Every secret value of a config: provider keys and header values, the master key."""
    out: list[str] = []
    for pcfg in config.providers.values():
        if pcfg.api_key is not None:
            out.append(pcfg.api_key.get_secret_value())
        out.extend(pcfg.headers.values())
    for alert in config.alerts:
        if alert.secret is not None:
            out.append(alert.secret.get_secret_value())
    master = config.master_key()
    if master:
        out.append(master)
    return out


def _probe_model(config: Config, provider: str) -> str | None:
    """The upstream name of the provider's cheapest configured chat model (for chat probes)."""
    best: tuple[float, str] | None = None
    for name, m in config.models.items():
        if m.provider != provider or m.mode != "chat":
            continue
        upstream = m.model or name
        price = lookup_price(upstream)
        inp = m.input_cost_per_mtok if m.input_cost_per_mtok is not None else (price.input if price else None)
        out = m.output_cost_per_mtok if m.output_cost_per_mtok is not None else (price.output if price else None)
        cost = (inp or 0.0) + (out or 0.0) if inp is not None or out is not None or m.free else float("inf")
        if best is None or cost < best[0]:
            best = (cost, upstream)
    return best[1] if best is not None else None


class Runtime:
    """Everything a request needs, precomputed from one config version."""

    def __init__(
        self,
        config: Config,
        *,
        previous: Runtime | None = None,
        version: int = 1,
        org_keys: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.config = config
        self.version = version
        #: the version of the runtime this one was built on (it carries that one's providers over)
        self.based_on = previous.version if previous is not None else None
        #: the config revision this runtime runs (set by the management plane; None: unmanaged)
        self.revision: int | None = None
        self.active = 0
        self.retired = False
        self._closed = False
        self.providers: dict[str, Provider] = {}
        for name, pcfg in config.providers.items():
            old = previous.providers.get(name) if previous else None
            self.providers[name] = old if old is not None and old.config == pcfg else build_provider(name, pcfg)
        self.models: dict[str, Deployment] = {
            name: self._deployment(name, mcfg, previous) for name, mcfg in config.models.items()
        }
        #: the prompt classifiers of the auto routes, by weights file ("" the shipped one), loaded once
        self._classifiers: dict[str, Classifier] = dict(previous._classifiers) if previous is not None else {}
        self.routes: dict[str, Route] = {name: self._route(name, rcfg) for name, rcfg in config.routes.items()}
        self._adhoc: OrderedDict[str, Route] = OrderedDict()
        self.default_route = config.default_route
        #: bring your own key: provider name -> organisation -> that organisation's own provider
        #: (the provider's ``credential:NAME`` stored with the organisation's id; see docs/management.md)
        self.org_providers: dict[str, dict[str, Provider]] = {}
        org_secrets: list[str] = []
        for pname, by_org in (org_keys or {}).items():
            base = self.providers.get(pname)
            if base is None:
                continue
            for org, secret in by_org.items():
                pcfg = cast(ProviderConfig, base.config.model_copy(update={"api_key": SecretStr(secret)}))
                old = previous.org_providers.get(pname, {}).get(org) if previous else None
                provider = old if old is not None and old.config == pcfg else build_provider(pname, pcfg)
                provider.probe_model = base.probe_model
                self.org_providers.setdefault(pname, {})[org] = provider
                org_secrets.append(secret)
        #: (organisation, route name) -> (the route, that organisation's version of it)
        self._org_routes: OrderedDict[tuple[str, str], tuple[Route, Route]] = OrderedDict()
        #: removes this config's secrets from every error message (see modelyard.scrub)
        self.scrubber = Scrubber(_secrets(config) + org_secrets)
        for name, provider in self.providers.items():
            provider.probe_model = _probe_model(config, name)

    def _deployment(self, name: str, cfg: ModelConfig, previous: Runtime | None) -> Deployment:
        provider = self.providers[cfg.provider]
        pcfg = provider.config
        old = previous.models.get(name) if previous else None
        state = old.state if old is not None and old.config == cfg else _new_state(name, cfg)
        capabilities = capabilities_of(cfg, pcfg.kind, cfg.model or name)
        return Deployment(
            name=name,
            provider=provider,
            upstream=cfg.model or name,
            config=cfg,
            call=CallOptions(
                timeout_s=cfg.timeout_s or pcfg.timeout_s,
                connect_timeout_s=cfg.connect_timeout_s or pcfg.connect_timeout_s,
                reasoning=capabilities["reasoning"],
            ),
            ttft_timeout_s=cfg.ttft_timeout_s,
            stall_timeout_s=cfg.stall_timeout_s,
            state=state,
            capabilities=frozenset(k for k, v in capabilities.items() if v),
        )

    def _route(self, name: str, cfg: RouteConfig) -> Route:
        return Route(
            name=name,
            pool=[self.models[m] for m in cfg.models if self.models[m].config.enabled],
            fallbacks=[self.models[m] for m in cfg.fallbacks if self.models[m].config.enabled],
            strategy=make_strategy(cfg.strategy),
            config=cfg,
            validators=build_validators(cfg.validators, json_schema=cfg.json_schema),
            auto=self._auto(name, cfg),
        )

    def _auto(self, name: str, cfg: RouteConfig) -> AutoRoute | None:
        auto = cfg.auto
        if auto is None:
            return None
        key = auto.classifier or ""
        classifier = self._classifiers.get(key)
        if classifier is None:
            from modelyard.classify.model import Classifier, ClassifierError  # only for auto routes

            try:
                classifier = Classifier.load(auto.classifier)
            except ClassifierError as exc:
                raise ConfigError(str(exc), path=f"routes.{name}.auto.classifier") from None
            self._classifiers[key] = classifier
        return AutoRoute(
            tiers=tuple(Tier(t.name, t.max_complexity, t.models) for t in auto.tiers),
            classifier=classifier,
            min_expected_quality=auto.min_expected_quality,
            judge=auto.judge,
        )

    # -- resolution ----------------------------------------------------------------------

    def resolve(self, target: str) -> Route:
        """A route for what the client asked for: a route, a model, or ``provider:upstream-model``."""
        route = self.routes.get(target)
        if route is not None:
            return route
        route = self._adhoc.get(target)
        if route is not None:
            self._adhoc.move_to_end(target)
            return route
        dep = self.models.get(target)
        if dep is not None and not dep.config.enabled:
            raise NotFoundError(f"model {target!r} is disabled (POST /admin/models/.../enable)", param="model")
        if dep is None:
            # the last guard before a client's string becomes an upstream model (and a metric
            # label, a response header, a usage record): the parsers check it too
            check_model_name(target, "model")
            provider_name, sep, upstream = target.partition(":")
            provider = self.providers.get(provider_name) if sep else None
            if provider is None or not upstream:
                raise NotFoundError(self._not_found_message(target), param="model")
            cfg = ModelConfig(provider=provider_name, model=upstream)
            dep = self._deployment(target, cfg, None)
        route = Route(
            name=target,
            pool=[dep],
            fallbacks=[],
            strategy=make_strategy("priority"),
            config=RouteConfig(models=(target,)),
        )
        self._adhoc[target] = route
        if len(self._adhoc) > _ADHOC_LIMIT:
            self._adhoc.popitem(last=False)
        return route

    def for_org(self, route: Route, org_id: str | None) -> Route:
        """The route as ``org_id``'s requests run it: its own provider where it brought its own key."""
        if org_id is None or not self.org_providers:
            return route
        key = (org_id, route.name)
        cached = self._org_routes.get(key)
        if cached is not None and cached[0] is route:
            return cached[1]

        def own(dep: Deployment) -> Deployment:
            provider = self.org_providers.get(dep.provider.name, {}).get(org_id)
            return dep if provider is None else replace(dep, provider=provider)

        pool = [own(d) for d in route.pool]
        fallbacks = [own(d) for d in route.fallbacks]
        if all(a is b for a, b in zip(pool + fallbacks, route.pool + route.fallbacks, strict=True)):
            result = route
        else:
            result = replace(route, pool=pool, fallbacks=fallbacks)
        self._org_routes[key] = (route, result)
        if len(self._org_routes) > _ADHOC_LIMIT:
            self._org_routes.popitem(last=False)
        return result

    def pinned(self, route: Route, model: str, org_id: str | None = None) -> Route:
        """``route`` with ``model`` as its only candidate (no fallback, no strategy), keeping the
        route's name, validators, limits and deadline: a shadow's or a canary's call."""
        dep = self.for_org(self.resolve(model), org_id).pool[0]
        return Route(
            name=route.name,
            pool=[dep],
            fallbacks=[],
            strategy=make_strategy("priority"),
            config=route.config,
            validators=route.validators,
        )

    def model_for(self, model: str, org_id: str | None) -> Deployment:
        """The deployment of a configured model as ``org_id``'s requests use it (its own provider key)."""
        return self.for_org(self.resolve(model), org_id).pool[0]

    def for_task(self, route: Route, task: str) -> Route:
        """The route a task type picks: the route's ``tasks`` map, else a route named after the task."""
        ref = route.config.tasks.get(task)
        if ref is not None:
            return self.resolve(ref)
        if task in self.routes:
            return self.routes[task]
        known = sorted(set(route.config.tasks) | set(self.routes))
        raise InvalidRequestError(
            f"unknown task {task!r} for route {route.name!r} (known: {', '.join(known) or 'none'})",
            param="modelyard.task",
            code="invalid_value",
        )

    def _not_found_message(self, target: str) -> str:
        if not self.providers:
            return (
                f"unknown model {target!r}: no provider is configured. Set OPENAI_API_KEY, ANTHROPIC_API_KEY, "
                "GEMINI_API_KEY or OLLAMA_HOST, or write modelyard.yaml (see README)."
            )
        names = sorted(self.routes) + sorted(self.models)
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        return (
            f"unknown model or route {target!r}. Use a route or model ({shown or 'none configured'}) "
            f"or provider:model with a configured provider ({', '.join(sorted(self.providers))}); "
            "GET /v1/models lists them."
        )

    # -- lifecycle -----------------------------------------------------------------------

    def all_providers(self) -> list[Provider]:
        return [*self.providers.values(), *(p for by_org in self.org_providers.values() for p in by_org.values())]

    async def close_unused(self, successor: Runtime | None) -> None:
        """Close providers that ``successor`` does not carry over."""
        if self._closed:
            return
        self._closed = True
        keep = {id(p) for p in successor.all_providers()} if successor else set()
        for provider in self.all_providers():
            if id(provider) not in keep:
                await provider.aclose()


class RuntimeHolder:
    """Holds the current runtime; the one way configuration changes at run time."""

    def __init__(self, config: Config, *, source: str | None = None) -> None:
        self.current = Runtime(config)
        self.source = source
        self._lock = asyncio.Lock()
        self._pending_close: set[asyncio.Task[None]] = set()

    def use(self) -> _Pinned:
        """Pin the current runtime for the duration of one request (streams included).

        ``async with holder.use() as rt:`` (a plain class, not ``@asynccontextmanager``: this runs
        for every request, and a generator-based context manager costs several times as much).
        """
        return _Pinned(self)

    def pin(self) -> Runtime:
        """The current runtime, pinned until :meth:`unpin` (for what outlives one block: streams)."""
        rt = self.current
        rt.active += 1
        return rt

    def unpin(self, rt: Runtime) -> None:
        rt.active -= 1
        if rt.retired and rt.active == 0:
            self._schedule_close(rt)

    def prepare(self, config: Config, *, org_keys: Mapping[str, Mapping[str, str]] | None = None) -> Runtime:
        """A runtime for ``config``, built on the current one but not made current (for probing
        it first).  Hand it to :meth:`swap`, or close it with :meth:`discard`."""
        old = self.current
        return Runtime(config, previous=old, version=old.version + 1, org_keys=org_keys)

    async def discard(self, prepared: Runtime) -> None:
        """Close what a prepared runtime opened that the current one does not use."""
        await prepared.close_unused(self.current)

    async def swap(
        self,
        config: Config,
        *,
        prepared: Runtime | None = None,
        revision: int | None = None,
        org_keys: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Runtime:
        """Build a runtime from ``config`` (or take ``prepared``, if built on the current one) and make
        it current.  Raises (and keeps the old one) on error."""
        async with self._lock:
            old = self.current
            if prepared is not None and prepared.based_on == old.version and prepared.config is config:
                new = prepared
            else:
                if prepared is not None:
                    await prepared.close_unused(old)
                new = Runtime(config, previous=old, version=old.version + 1, org_keys=org_keys)
            new.revision = revision
            self.current = new
            old.retired = True
            if old.active == 0:
                self._schedule_close(old)
            log.info(
                "config version %d is live (%d providers, %d models, %d routes)",
                new.version,
                len(new.providers),
                len(new.models),
                len(new.routes),
            )
            return new

    def release(self, rt: Runtime) -> None:
        """Called when the last request pinned to a retired runtime ends."""
        self._schedule_close(rt)

    def _schedule_close(self, rt: Runtime) -> None:
        task = asyncio.get_running_loop().create_task(rt.close_unused(self.current))
        self._pending_close.add(task)
        task.add_done_callback(self._pending_close.discard)

    async def aclose(self) -> None:
        if self._pending_close:
            await asyncio.gather(*self._pending_close, return_exceptions=True)
        await self.current.close_unused(None)


class _Pinned:
    __slots__ = ("_holder", "_rt")

    def __init__(self, holder: RuntimeHolder) -> None:
        self._holder = holder
        self._rt: Runtime | None = None

    async def __aenter__(self) -> Runtime:
        rt = self._rt = self._holder.pin()
        return rt

    async def __aexit__(self, *exc: object) -> None:
        if self._rt is not None:
            self._holder.unpin(self._rt)
            self._rt = None


def sync_runtime(runtime: Runtime) -> list[LocalModelManager]:
    """Hand each local provider of ``runtime`` the settings of the models configured on it.

    Call it whenever a runtime becomes current (the status endpoints do, and so does their
    watcher).  Returns the managers of the runtime's local providers.
    """
    managers: list[LocalModelManager] = []
    for provider in runtime.providers.values():
        manager = provider.lifecycle
        if manager is None:
            continue
        grouped: dict[str, list[ModelSettings]] = {}
        for name, dep in runtime.models.items():
            if dep.provider is not provider:
                continue
            try:
                settings = model_settings(name, dep.config, manager.defaults)
            except ConfigError as exc:
                log.error("%s; using the provider's keep_alive for model %r", exc, name)
                settings = model_settings(name, dep.config.model_copy(update={"keep_alive": None}), manager.defaults)
            grouped.setdefault(dep.upstream, []).append(settings)
        manager.configure({upstream: merge_settings(items) for upstream, items in grouped.items()})
        managers.append(manager)
    return managers
