"""Which proxy, if any, a request goes through.

* a provider's ``proxy:`` setting wins: a URL sends every request of that provider through it
  (loopback upstreams included); ``none`` or an empty string turns proxies off;
* otherwise the standard environment variables apply, read once when the provider is built:
  ``HTTP_PROXY`` for ``http://`` upstreams, ``HTTPS_PROXY`` for ``https://`` ones (lower-case
  forms too, and they win), minus the hosts ``NO_PROXY`` matches and minus loopback upstreams
  (127.0.0.0/8, ``::1``, ``localhost``): a local Ollama never goes through a corporate proxy.

A ``user:pass@`` in the proxy URL is sent as ``Proxy-Authorization: Basic ...``; HTTPS
upstreams are reached through a ``CONNECT`` tunnel.
"""

from __future__ import annotations

import ipaddress
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["ProxyPolicy", "is_loopback", "no_proxy_matches"]


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ProxyPolicy:
    """The proxy decision for one provider (or one transport): fixed, from the environment, or none."""

    #: a proxy URL for every request (the provider's ``proxy:`` setting)
    fixed: str | None = None
    #: scheme -> proxy URL, plus ``no`` (NO_PROXY), from the environment; empty: no proxies
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(cls, setting: str | None) -> ProxyPolicy:
        """The policy for a ``proxy:`` setting: None -> the environment, "" or "none" -> no proxy."""
        if setting is None:
            return cls(env=_env_proxies())
        if setting.strip().lower() in ("", "none"):
            return cls()
        return cls(fixed=setting)

    @property
    def active(self) -> bool:
        """True when some URL may go through a proxy."""
        return self.fixed is not None or any(k in ("http", "https") for k in self.env)

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL for a request to ``url`` (None: connect directly)."""
        if self.fixed is not None:
            return self.fixed
        if not self.env:
            return None
        parts = urlsplit(url)
        proxy = self.env.get(parts.scheme.lower())
        if not proxy or is_loopback(parts.hostname):
            return None
        try:
            port = parts.port
        except ValueError:
            port = None
        if no_proxy_matches(self.env.get("no", ""), parts.hostname or "", port):
            return None
        if "://" not in proxy:  # HTTP_PROXY=proxy:3128 is common shorthand
            proxy = "http://" + proxy
        return proxy


def no_proxy_matches(no_proxy: str, host: str, port: int | None) -> bool:
    """True when NO_PROXY (``*``, or comma-separated ``host``, ``.domain``, ``host:port``) covers the host.

    The same rules as the standard library's ``proxy_bypass_environment``: an entry matches the
    host itself and every subdomain; an entry with a port matches only that port.
    """
    host = host.strip("[]").lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port: int | None = None
        name, sep, tail = entry.rpartition(":")
        if sep and tail.isdigit() and not name.endswith(":"):  # host:port (not a bare IPv6 address)
            entry, entry_port = name, int(tail)
        entry = entry.strip("[]").lstrip(".").rstrip(".")
        if entry_port is not None and entry_port != port:
            continue
        if host == entry or host.endswith("." + entry):
            return True
    return False


def _env_proxies() -> dict[str, str]:
    proxies = urllib.request.getproxies_environment()
    return {k: v for k, v in proxies.items() if k in ("http", "https", "no") and v}
