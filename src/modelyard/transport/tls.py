"""SSL contexts from a provider's ``tls:`` settings.

* default: the operating system's trust store through ``truststore`` (the same CAs the OS and
  browsers trust, on Linux, macOS and Windows; no certifi bundle to keep up to date);
* ``ca_bundle``: only the CAs in that PEM file (a private CA);
* ``verify: false``: no certificate or host name check at all (a warning is logged once);
* ``client_cert`` (+ ``client_key``): the certificate presented for mutual TLS.
"""

from __future__ import annotations

import logging
import ssl
from functools import cache

import truststore

from modelyard.config.schema import TLSConfig

__all__ = ["needs_client_cert", "ssl_context"]

log = logging.getLogger("modelyard.transport")

_warned_no_verify = False


@cache
def _system_context() -> ssl.SSLContext:
    """The shared default context (built once: loading the system's CAs costs milliseconds)."""
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def ssl_context(tls: TLSConfig | None, *, name: str = "") -> ssl.SSLContext:
    """The context for HTTPS upstreams under these settings (None or defaults: the shared system one)."""
    global _warned_no_verify
    if tls is None or (tls.verify and tls.ca_bundle is None and tls.client_cert is None):
        return _system_context()
    ctx: ssl.SSLContext
    if not tls.verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if not _warned_no_verify:
            _warned_no_verify = True
            log.warning(
                "TLS certificate verification is off%s (tls.verify: false): upstream identities are not checked",
                f" for provider {name!r}" if name else "",
            )
    elif tls.ca_bundle is not None:
        ctx = ssl.create_default_context(cafile=tls.ca_bundle)
    else:
        ctx = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.client_cert is not None:
        ctx.load_cert_chain(tls.client_cert, tls.client_key)
    return ctx


def needs_client_cert(tls: TLSConfig | None) -> bool:
    return tls is not None and tls.client_cert is not None
