"""Start-up failures: the one place that says what failed, what to do, and with which exit code.

``modelyard serve`` (and ``modelyard fake-provider``) stop on an ordinary operator problem with one
line on standard error and an exit code of its own, never a traceback:

==== =====================================================================================
exit cause
==== =====================================================================================
0    stopped (SIGTERM, SIGINT)
1    an unexpected error outside the start-up (a traceback)
2    the config: invalid, unreadable, a file it names missing or unreadable (TLS files),
     a public address without a master key (``config error: ...``), a master key that
     is not the one the stored credentials were encrypted with, or a ``usage.spill_path``
     that cannot be written
3    an unexpected exception while starting (uvicorn's code; the traceback is printed)
4    cannot listen: the port (or ``server.metrics_port``) is in use or cannot be bound
5    the database cannot be reached, opened or created
==== =====================================================================================

The errors are :class:`~modelyard.errors.StartupError` (made here) and
:class:`~modelyard.errors.ConfigError`; :func:`describe` gives the line and the exit code of either.
Each error keeps its cause (``raise ... from exc``): ``--log-level debug`` prints its traceback.
With ``--workers N`` a worker that cannot start writes its line to the file named by
:data:`ENV_REPORT` (:func:`report`) and exits with uvicorn's start-up code, which stops the
parent; the parent prints the line and exits with its code (:func:`read_report`).  Once a worker
is up (:func:`mark_started`), a worker that fails also logs its line: a restart on SIGHUP that
fails leaves the running workers serving, and the parent prints nothing.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from modelyard.errors import ConfigError, ModelyardError, StartupError
from modelyard.scrub import redact_url, scrub

__all__ = [
    "ENV_REPORT",
    "EXIT_CONFIG",
    "EXIT_DATABASE",
    "EXIT_LISTEN",
    "EXIT_UNEXPECTED",
    "database_error",
    "database_path_error",
    "describe",
    "listen_error",
    "mark_started",
    "master_key_error",
    "read_report",
    "report",
    "spill_path_error",
]

EXIT_CONFIG = 2
#: uvicorn's STARTUP_FAILURE: an exception nobody expected, with its traceback
EXIT_UNEXPECTED = 3
EXIT_LISTEN = 4
EXIT_DATABASE = 5

#: set by ``modelyard serve --workers N`` for its workers: where a worker reports why it cannot start
ENV_REPORT = "MODELYARD_STARTUP_REPORT"


def listen_error(host: str, port: int, exc: OSError, *, change: str) -> StartupError:
    """``host:port`` cannot be bound; ``change`` says how to pick another port."""
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"port {port} on {host} is already in use (another modelyard or program is listening); "
            f"stop it, or use another port: {change}",
            exit_code=EXIT_LISTEN,
        )
    return StartupError(
        f"cannot listen on {host}:{port}: {exc.strerror or exc}; check the address and port ({change})",
        exit_code=EXIT_LISTEN,
    )


def database_error(url: str, exc: BaseException) -> StartupError:
    """The database of ``url`` cannot be reached or opened (``exc``: the driver's error)."""
    shown = redact_url(url)
    reason = _reason(exc)
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    if url.startswith("sqlite"):
        return StartupError(
            f"the database {shown} cannot be opened: {reason}; check the path and its permissions, "
            "or point database at a writable place",
            exit_code=EXIT_DATABASE,
        )
    return StartupError(
        f"the database {shown} cannot be reached: {reason}; check that it is running and accepts "
        "connections, or point database at another one",
        exit_code=EXIT_DATABASE,
    )


def database_path_error(file: Path, url: str) -> StartupError | None:
    """Why the SQLite file ``file`` (of ``url``) could not be created or written, or None."""
    reason = _not_writable(file)
    if reason is None:
        return None
    if file.is_dir():
        advice = "point database at a file, e.g. sqlite:///./modelyard.db"
    elif reason == _NOT_WRITABLE:
        advice = "fix its permissions or point database at a writable place"
    else:
        advice = "point database at a writable place"
    return StartupError(f"the database {file.resolve()} {reason} (database: {url}); {advice}", exit_code=EXIT_DATABASE)


def spill_path_error(file: Path) -> StartupError | None:
    """Why the usage spill file ``file`` (``usage.spill_path``) could not be written, or None.  The
    usage records a database outage leaves are kept there: found out at start, not in the outage."""
    reason = _not_writable(file)
    if reason is None:
        return None
    return StartupError(
        f"usage.spill_path: the spill file {file.resolve()} {reason}; point usage.spill_path at a "
        "writable file (the usage records a database outage leaves are kept there)",
        exit_code=EXIT_CONFIG,
    )


def _not_writable(file: Path) -> str | None:
    """Why ``file`` cannot be created or appended to (missing folders are created), or None."""
    if file.is_dir():
        return "is a folder, not a file"
    folder = file.resolve().parent
    while not folder.exists() and folder != folder.parent:  # missing folders are created
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot be created: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK) or (file.exists() and not os.access(file, os.W_OK)):
        return _NOT_WRITABLE
    return None


_NOT_WRITABLE = "is not writable"


def master_key_error(exc: ModelyardError) -> StartupError:
    """The master key is not the one the stored credentials were sealed with (``exc`` says so)."""
    return StartupError(exc.message, exit_code=EXIT_CONFIG)


def describe(exc: ConfigError | StartupError) -> tuple[str, str, int]:
    """``(label, message, exit code)``: the line is ``label: message``."""
    if isinstance(exc, ConfigError):
        return "config error", exc.message, EXIT_CONFIG
    return "cannot start", exc.message, exc.exit_code


def report(exc: BaseException) -> bool:
    """A worker's start-up failure, for its parent (nothing without :data:`ENV_REPORT`: a single
    process prints its own).  False when the caller should log the line itself: a worker started
    after the first one was up (a restart on SIGHUP, which the parent survives: it prints nothing)."""
    path = os.environ.get(ENV_REPORT)
    if not path:
        return True
    if isinstance(exc, ConfigError | StartupError):
        label, message, code = describe(exc)
    else:
        label, message, code = (
            "cannot start",
            scrub(f"a worker failed to start: {type(exc).__name__}: {exc} (its traceback is above)"),
            EXIT_UNEXPECTED,
        )
    tmp = Path(f"{path}.{os.getpid()}")
    tmp.write_text(f"{code}\n{label}\n{message}", encoding="utf-8")
    tmp.replace(path)  # whole, whichever worker wrote last
    return not Path(f"{path}.started").exists()


def mark_started() -> None:
    """A worker is up: a later failing start (a restart on SIGHUP) is not the parent's to report."""
    path = os.environ.get(ENV_REPORT)
    if path:
        Path(f"{path}.started").touch()


def read_report(path: str) -> tuple[str, str, int] | None:
    """``(label, message, exit code)`` a worker reported in ``path``, or None; removes the files."""
    try:
        code, label, message = Path(path).read_text(encoding="utf-8").split("\n", 2)
        reported: tuple[str, str, int] | None = (label, message, int(code))
    except (OSError, ValueError):
        reported = None
    for file in (Path(path), Path(f"{path}.started")):
        file.unlink(missing_ok=True)
    return reported


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError: the driver's own error
    if isinstance(orig, BaseException):
        exc = orig
    if isinstance(exc, TimeoutError):
        return "no answer in time (timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename:
            text += f": {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split("\n(Background on this error")[0].split())


def _password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None
