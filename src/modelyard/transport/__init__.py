"""Upstream HTTP transports behind one interface (:class:`~modelyard.transport.base.Transport`).

* :class:`~modelyard.transport.fast.HttpClient`: the default, for direct HTTP/HTTPS; a lean
  httptools client (see docs/performance.md for why);
* :class:`~modelyard.transport.aiohttp.AiohttpTransport`: when a proxy applies to the upstream,
  or a client certificate is configured (mutual TLS).

The choice is made once, by :func:`plan_transport`, when a provider is built (never per
request): the fast path costs nothing for having an alternative.

Layering: this package imports only :mod:`modelyard.config`, :mod:`modelyard.errors`,
:mod:`modelyard.types`, the standard library and third-party packages; providers and accounting
import it, never the other way round.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from modelyard.config.schema import TLSConfig
from modelyard.transport.base import (
    ConnectTimeout,
    Headers,
    Lease,
    ProxyError,
    RequestBuildError,
    Response,
    ResponseCutOff,
    Transport,
)
from modelyard.transport.proxy import ProxyPolicy, is_loopback
from modelyard.transport.tls import needs_client_cert, ssl_context

__all__ = [
    "ConnectTimeout",
    "Headers",
    "Lease",
    "ProxyError",
    "ProxyPolicy",
    "RequestBuildError",
    "Response",
    "ResponseCutOff",
    "Transport",
    "TransportPlan",
    "is_loopback",
    "make_transport",
    "plan_transport",
]

TransportKind = Literal["fast", "aiohttp"]


@dataclass(frozen=True, slots=True)
class TransportPlan:
    """Which transport, with which TLS context and proxies: decided once, built on each (re)open."""

    kind: TransportKind
    ssl_context: ssl.SSLContext
    proxies: ProxyPolicy
    #: why this kind was chosen (shown in logs and tests)
    reason: str

    def build(self, *, headers: Mapping[str, str] | None = None, max_connections: int = 256) -> Transport:
        if self.kind == "fast":
            from modelyard.transport.fast import HttpClient

            return HttpClient(headers=headers, max_connections=max_connections, ssl_context=self.ssl_context)
        from modelyard.transport.aiohttp import AiohttpTransport

        return AiohttpTransport(
            headers=headers, max_connections=max_connections, ssl_context=self.ssl_context, proxies=self.proxies
        )


def plan_transport(
    url: str | None = None,
    *,
    proxy: str | None = None,
    tls: TLSConfig | None = None,
    name: str = "",
    kind: TransportKind | None = None,
) -> TransportPlan:
    """The transport for requests to ``url`` (a provider's base URL; None: any URL, like webhooks).

    ``proxy`` is the ``proxy:`` setting (None: the environment; "" or "none": no proxy); ``kind``
    forces an implementation.  The fast client is chosen unless a proxy applies to ``url`` (to
    any URL when ``url`` is None) or a client certificate is configured.
    """
    proxies = ProxyPolicy.resolve(proxy)
    ctx = ssl_context(tls, name=name)
    if kind is not None:
        return TransportPlan(kind, ctx, proxies, "forced")
    if needs_client_cert(tls):
        return TransportPlan("aiohttp", ctx, proxies, "client certificate")
    if url is None:
        if proxies.active:
            return TransportPlan("aiohttp", ctx, proxies, "proxy")
    elif proxies.proxy_for(url) is not None:
        return TransportPlan("aiohttp", ctx, proxies, "proxy")
    return TransportPlan("fast", ctx, proxies, "direct")


def make_transport(
    url: str | None = None,
    *,
    proxy: str | None = None,
    tls: TLSConfig | None = None,
    headers: Mapping[str, str] | None = None,
    max_connections: int = 256,
    kind: TransportKind | None = None,
) -> Transport:
    """A transport for ``url`` (see :func:`plan_transport`)."""
    return plan_transport(url, proxy=proxy, tls=tls, kind=kind).build(headers=headers, max_connections=max_connections)
