"""The ``modelyard`` command's entry point (``modelyard.cli:main``).

A plain ``modelyard serve [options]`` starts the gateway straight away (``modelyard.cli_serve``),
with the cyclic garbage collector off until the app is up (the start-up makes about 90,000 objects
that live as long as the process, and the collector would walk them again and again: about 45 ms of
a cold start; ``tune_gc`` in server/app.py freezes them and turns it back on).  Every other command,
``--help`` and any option the fast path does not read go to the Typer app (``modelyard.cli_app``).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["main"]


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["serve"]:
        from modelyard.cli_serve import parse_serve_args

        options = parse_serve_args(args[1:])
        if options is not None:
            import gc

            from modelyard.cli_serve import serve

            gc.disable()
            try:
                serve(**options)
            except KeyboardInterrupt:  # as Typer (click) reports a Ctrl-C before the server took over
                print("\nAborted!", file=sys.stderr)
                raise SystemExit(1) from None
            return
    from modelyard.cli_app import app

    app()


def __getattr__(name: str) -> Any:
    """``modelyard.cli.app``: the Typer app, imported when asked for."""
    if name == "app":
        from modelyard.cli_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
