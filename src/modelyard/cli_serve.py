"""``modelyard serve``: the gateway's start-up, without the CLI framework.

``modelyard.cli.main`` reads the options of a plain ``modelyard serve ...`` itself
(:func:`parse_serve_args`) and calls :func:`serve`: importing Typer and building the CLI's
commands and their option parsers is about a tenth of a cold start (issue #20).  Anything it
does not read (``--help``, an unknown option, a value that is not a number) goes to the Typer
app (``modelyard.cli_app``), whose ``serve`` command calls :func:`serve` with the same options
and reports the mistake.  The helpers here are also the other commands' (``config check``).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from modelyard.errors import ConfigError, StartupError

if TYPE_CHECKING:  # rich is imported where it prints: `serve` prints its banner without it (~3 MB, 25 ms)
    from rich.console import Console

    from modelyard.config.schema import Config

__all__ = ["console", "parse_serve_args", "serve"]

#: ``modelyard serve`` options: name -> (keyword of :func:`serve`, converter); a flag has no converter
_OPTIONS: Mapping[str, tuple[str, Callable[[str], Any] | None]] = MappingProxyType(
    {
        "--config": ("config", Path),
        "-c": ("config", Path),
        "--host": ("host", str),
        "--port": ("port", int),
        "--workers": ("workers", int),
        "--log-level": ("log_level", str),
        "--watch": ("watch", None),
        "--no-watch": ("watch", None),
    }
)


def parse_serve_args(args: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`serve` for the options after ``serve``, read the way the
    Typer command reads them (``--port 8000`` or ``--port=8000``, the last one wins); None for
    anything else, which the Typer app then answers (``--help``, errors)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        option = _OPTIONS.get(name)
        if option is None or (eq and not name.startswith("--")):
            return None  # unknown, or -c=x (Click reads "=x"): Typer's reading
        keyword, convert = option
        if convert is None:
            if eq:
                return None
            out[keyword] = name == "--watch"
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                return None  # a missing value (or one that looks like an option: Typer decides)
            value = args[i + 1]
            i += 1
        i += 1
        if not value:
            return None
        try:
            out[keyword] = convert(value)
        except ValueError:
            return None
    if out.get("workers", 1) < 1:
        return None
    return out


def console(*, stderr: bool = False) -> Console:
    """Rich output for every command; when not on a terminal (a pipe, a log, CI) lines are never
    wrapped, so an error stays one line a program (or grep) can read."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, soft_wrap=True, width=10_000)


def _default_config(path: Path | None) -> Path | None:
    if path is not None:
        return path
    candidate = Path("modelyard.yaml")
    return candidate if candidate.exists() else None


def _fail(out: Console, exc: ConfigError | StartupError, *, debug: bool = False) -> NoReturn:
    """One line saying what failed and what to do, and its exit code (modelyard.startup); the
    cause's traceback only with ``--log-level debug``."""
    from modelyard.startup import describe

    label, message, code = describe(exc)
    if debug and exc.__cause__ is not None:
        import traceback

        print("".join(traceback.format_exception(exc.__cause__)), file=sys.stderr, end="", flush=True)
    out.print(f"[bold red]{label}[/]: {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def serve(
    config: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    watch: bool = False,
    log_level: str = "info",
) -> None:
    """Start the gateway (``modelyard serve``). An operator's problem (the config, a port in use,
    the database away) is one line and its own exit code (modelyard.startup), not a traceback."""
    from modelyard.config.source import ConfigSource

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    debug = log_level.lower() == "debug"
    path = _default_config(config)
    source_ = ConfigSource(path)
    try:
        cfg = source_.load()  # validate before binding; the workers build the gateway themselves
    except ConfigError as exc:
        _fail(console(stderr=True), exc, debug=debug)
    bind_host = host or cfg.server.host
    bind_port = port or cfg.server.port
    if not _is_loopback(bind_host) and not cfg.master_key():
        console(stderr=True).print(
            f"[bold red]refusing to listen on {bind_host}[/]: without a master key anyone who can reach it could use "
            "your providers. Set MODELYARD_MASTER_KEY (or server.master_key), or bind to 127.0.0.1.",
            highlight=False,
        )
        raise SystemExit(2)
    problem = _startup_problem(bind_host, bind_port, cfg)
    if problem is not None:
        _fail(console(stderr=True), problem, debug=debug)
    if workers == 1:  # (the workers build their own, and report what fails)
        from modelyard.runtime import RuntimeHolder

        try:
            holder = RuntimeHolder(cfg, source=source_.describe())  # TLS files are loaded here
        except ConfigError as exc:
            _fail(console(stderr=True), exc, debug=debug)
    source = str(path.resolve()) if path else "environment (no modelyard.yaml)"
    print(
        f"modelyard on http://{bind_host}:{bind_port}  config: {source}  database: {_database_label(cfg)}  "
        f"providers: {', '.join(cfg.providers) or 'none'}  routes: {', '.join(cfg.routes) or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    if not cfg.providers:
        console(stderr=True).print(
            "[yellow]No provider is configured.[/] Set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or "
            "OLLAMA_HOST, or write modelyard.yaml (see README: 'Configure'), then restart or send SIGHUP.",
            highlight=False,
        )
    for line in _config_warnings(cfg):
        console(stderr=True).print(f"[yellow]warning[/]: {line}", highlight=False)
    shared = _per_process_warning(cfg, workers)
    if shared:
        console(stderr=True).print(f"[yellow]warning[/]: {shared}", highlight=False)
    from modelyard.server.protocol import ENV_LIMITS, Limits, protocol_for

    limits = Limits.from_config(cfg.server)

    common = {
        "host": bind_host,
        "port": bind_port,
        "log_level": log_level.lower(),
        "access_log": False,
        # modelyard never uses the client's address, so X-Forwarded-* need not be parsed per request
        "proxy_headers": False,
        "server_header": False,  # no "server: uvicorn" on every answer
        "loop": _loop(),
        # uvicorn's httptools protocol with header limits and read timeouts (server/protocol.py)
        "http": protocol_for(limits),
        "timeout_keep_alive": cfg.server.keep_alive_s,
        "timeout_graceful_shutdown": 30,
    }
    from modelyard.server.factory import ENV_CONFIG, ENV_WATCH

    if workers == 1:
        from modelyard.server.app import create_app
        from modelyard.server.drain import run
        from modelyard.server.state import AppState

        gateway = AppState(holder=holder, source=source_, watch=watch)
        try:
            run(create_app(gateway), gateway, cfg.server.drain_s, **common)
        except SystemExit:
            if gateway.startup_error is not None:  # the lifespan stopped on an operator's problem
                _fail(console(stderr=True), gateway.startup_error, debug=debug)
            raise
        return
    gc.enable()  # this process only supervises the workers (main() turned the collector off for the start-up)
    os.environ[ENV_CONFIG] = str(path.resolve()) if path else ""
    os.environ[ENV_WATCH] = "1" if watch else "0"
    os.environ[ENV_LIMITS] = limits.to_env()
    common["http"] = "modelyard.server.protocol:EnvLimitedProtocol"  # a class cannot cross to a spawned worker
    _serve_workers(workers, common)


def _serve_workers(workers: int, options: dict[str, Any]) -> None:
    """uvicorn's supervisor and ``workers`` processes (as ``uvicorn.run`` starts them).  A worker
    that cannot start stops the supervisor (uvicorn's rule); its reason (modelyard.startup.report)
    is then this process's line and exit code, and never a 0."""
    import tempfile

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from modelyard.startup import ENV_REPORT, EXIT_UNEXPECTED, read_report

    fd, report_path = tempfile.mkstemp(prefix="modelyard-startup-")
    os.close(fd)
    os.unlink(report_path)  # a worker writes it when it cannot start
    os.environ[ENV_REPORT] = report_path
    config = uvicorn.Config("modelyard.server.factory:app_from_env", factory=True, workers=workers, **options)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    try:
        supervisor.run()
    finally:
        reported = read_report(report_path)
    # a worker still in the supervisor's list that ended with uvicorn's start-up code stopped it;
    # a SIGTERM ends them otherwise, and a restart (SIGHUP) that failed keeps the old ones
    if not any(getattr(getattr(p, "process", p), "exitcode", None) == EXIT_UNEXPECTED for p in supervisor.processes):
        return
    label, message, code = reported or ("cannot start", "a worker failed to start (see above)", EXIT_UNEXPECTED)
    console(stderr=True).print(f"[bold red]{label}[/]: {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def _database_label(cfg: Config) -> str:
    from modelyard.config.paths import sqlite_file

    file = sqlite_file(cfg.database.url)
    if file is not None:
        return str(file.resolve())
    return cfg.database.url.split("@")[-1]  # host/database of a server URL, without credentials


def _startup_problem(host: str, port: int, cfg: Config) -> StartupError | None:
    """What would make the server fail right after saying it started: checked before."""
    from modelyard.config.paths import sqlite_file
    from modelyard.startup import database_path_error, spill_path_error

    problem = _cannot_bind(host, port, f"modelyard serve --port {port + 1}")
    metrics = cfg.server.metrics_port
    if problem is None and metrics is not None:
        problem = _cannot_bind("127.0.0.1", metrics, "set server.metrics_port to a free port")
    if problem is not None:
        return problem
    file = sqlite_file(cfg.database.url)
    problem = database_path_error(file, cfg.database.url) if file is not None else None
    return problem or spill_path_error(Path(cfg.usage.spill_path).expanduser())


def _cannot_bind(host: str, port: int, change: str) -> StartupError | None:
    import socket

    from modelyard.startup import listen_error

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            return listen_error(host, port, exc, change=change)
    return None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _per_process_warning(cfg: Config, workers: int) -> str | None:
    """Several processes without shared state: say what each of them keeps to itself."""
    if cfg.state != "memory":
        return None
    if workers > 1:
        who = f"each of the {workers} workers"
    elif not cfg.database.url.startswith("sqlite"):
        who = "each replica (the database is shared, so there may be several)"
    else:
        return None
    return (
        f"state: memory: rate and concurrency limits, budgets, breakers and health checks are kept by {who} "
        "on its own, so every limit applies once per process; set state: redis://... to share them "
        "(docs/deployment.md)"
    )


def _config_warnings(cfg: Config) -> list[str]:
    """What is valid but probably wrong: unpriced models, renamed keys."""
    from modelyard.config.prices import unpriced_models

    renamed = [
        f"providers.{name}.health_check_interval_s is the old name of health.interval_s (still honoured); rename it"
        for name, p in cfg.providers.items()
        if "health_check_interval_s" in p.model_fields_set
    ]
    return renamed + [
        f"models.{name}: no price for {cfg.models[name].model or name!r}: its calls count as $0 in costs and "
        "budgets; set input_cost_per_mtok/output_cost_per_mtok, or free: true if it costs nothing"
        for name in unpriced_models(cfg)
    ]
