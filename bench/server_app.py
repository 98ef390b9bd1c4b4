"""Launchers for bench/servers.py: modelyard's app under server settings ``modelyard serve`` does not expose.

    python bench/server_app.py serve --config C --host H --port P [--transport aiohttp]   # modelyard serve
    python bench/server_app.py uvicorn --config C --port P [--loop asyncio] [--http h11]   # other uvicorn settings
    granian --interface asgi --factory server_app:app      # (bench/ on PYTHONPATH; MODELYARD_CONFIG set)

``serve`` is ``modelyard serve`` itself (``modelyard.cli.main``), optionally with every provider's upstream
client forced to one ``Transport`` kind (``--transport`` or ``MODELYARD_BENCH_TRANSPORT``): the bench's way to
put the aiohttp transport on a direct upstream, which the code only picks for a proxy or a client certificate.
``uvicorn`` builds the same app and runs it through the same drain (``server/drain.py``) with the options
``modelyard serve`` passes, except ``--loop`` and ``--http`` (``guarded``: modelyard's httptools protocol with
its limits, as served; ``httptools``: uvicorn's own; ``h11``). ``app`` is an ASGI app factory (reads
``MODELYARD_CONFIG``, as ``modelyard.server.factory:app_from_env`` does) that applies the transport override.

Nothing here is imported by modelyard; it exists for measurements only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

ENV_TRANSPORT = "MODELYARD_BENCH_TRANSPORT"


def force_transport(kind: str | None) -> None:
    """Make every provider plan ``kind`` ("fast" or "aiohttp") for its upstream (None/"": leave the choice)."""
    if not kind:
        return
    import modelyard.providers.base as providers_base
    import modelyard.transport as transport

    original = transport.plan_transport

    def plan(url: str | None = None, **options: Any) -> transport.TransportPlan:
        options["kind"] = kind
        return original(url, **options)

    providers_base.plan_transport = plan  # type: ignore[assignment]


def app() -> Any:
    """ASGI app factory (granian ``--factory``): MODELYARD_CONFIG, plus MODELYARD_BENCH_TRANSPORT if set."""
    force_transport(os.environ.get(ENV_TRANSPORT))
    from modelyard.server.factory import app_from_env

    return app_from_env()


def run_uvicorn(args: argparse.Namespace) -> None:
    """``modelyard serve`` for one worker, with ``--loop`` and ``--http`` chosen here."""
    from modelyard.config.source import ConfigSource
    from modelyard.runtime import RuntimeHolder
    from modelyard.server.app import create_app
    from modelyard.server.drain import run
    from modelyard.server.protocol import Limits, protocol_for
    from modelyard.server.state import AppState

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    force_transport(args.transport)
    source = ConfigSource(args.config)
    cfg = source.load()
    http: Any = {"guarded": protocol_for(Limits.from_config(cfg.server)), "httptools": "httptools", "h11": "h11"}
    gateway = AppState(holder=RuntimeHolder(cfg, source=source.describe()), source=source, watch=False)
    run(
        create_app(gateway),
        gateway,
        cfg.server.drain_s,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        loop=args.loop,
        http=http[args.http],
        timeout_keep_alive=cfg.server.keep_alive_s,
        timeout_graceful_shutdown=30,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        ap = argparse.ArgumentParser(prog="server_app.py serve", add_help=False)
        ap.add_argument("--transport", choices=["fast", "aiohttp"], default=os.environ.get(ENV_TRANSPORT))
        known, rest = ap.parse_known_args(argv[1:])
        force_transport(known.transport)
        from modelyard.cli import main as cli_main

        sys.argv = ["modelyard", "serve", *rest]
        cli_main()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="modelyard serve [--transport fast|aiohttp] ...")
    uv = sub.add_parser("uvicorn", help="modelyard's app under uvicorn with --loop/--http of your choice")
    uv.add_argument("--config", required=True)
    uv.add_argument("--host", default="127.0.0.1")
    uv.add_argument("--port", type=int, required=True)
    uv.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    uv.add_argument("--http", choices=["guarded", "httptools", "h11"], default="guarded")
    uv.add_argument("--transport", choices=["fast", "aiohttp"], default=os.environ.get(ENV_TRANSPORT))
    uv.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    run_uvicorn(args)


if __name__ == "__main__":
    main()
