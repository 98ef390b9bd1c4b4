"""Serving with a drain on SIGTERM: ``/ready`` turns 503 at once, requests keep being served for
``server.drain_s`` (the load balancer takes the replica out), then uvicorn stops accepting and
finishes what is in flight (streams included, up to its graceful-shutdown timeout).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import uvicorn

from modelyard.server.state import AppState

__all__ = ["run"]

log = logging.getLogger("modelyard.server")


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: AppState, drain_s: float) -> None:
        super().__init__(config)
        self._gateway = gateway
        self._drain_s = drain_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self._gateway.draining:
            self._gateway.draining = True
            if self._drain_s > 0:
                log.warning("SIGTERM: /ready answers 503; stopping in %.3g s (server.drain_s)", self._drain_s)
                timer = threading.Timer(self._drain_s, super().handle_exit, (sig, frame))
                timer.daemon = True
                timer.start()
                return
        super().handle_exit(sig, frame)


def run(app: Any, gateway: AppState, drain_s: float, **options: Any) -> None:
    """``uvicorn.run(app, **options)`` for one process, with the drain above."""
    _DrainingServer(uvicorn.Config(app, **options), gateway, drain_s).run()
