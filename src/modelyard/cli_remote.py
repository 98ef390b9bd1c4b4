"""CLI commands against a running gateway's management API (``--url``, the key from the environment).

``modelyard providers|routes list``, ``providers test``, ``routes switch``, ``models list --url``,
``models enable|disable``, ``config revisions|diff|deploy|rollback|export``.  The key is
``MODELYARD_MASTER_KEY`` (or the variable named by ``--key-env``); the URL ``--url``, else
``MODELYARD_URL``, else ``http://127.0.0.1:4000``.  Standard library HTTP only: the CLI needs no
client dependency.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelyard.cli_serve import console

if TYPE_CHECKING:
    pass

__all__ = ["Remote", "config_remote", "providers_app", "remote_models", "routes_app"]

UrlOpt = Annotated[
    str | None, typer.Option("--url", help="The gateway (default: $MODELYARD_URL, else http://127.0.0.1:4000).")
]
KeyEnvOpt = Annotated[str, typer.Option("--key-env", help="The environment variable that holds the master key.")]


class RemoteError(Exception):
    pass


class Remote:
    """A tiny JSON client for the admin API."""

    def __init__(self, url: str | None, key_env: str = "MODELYARD_MASTER_KEY", timeout_s: float = 60.0) -> None:
        self.url = (url or os.environ.get("MODELYARD_URL") or "http://127.0.0.1:4000").rstrip("/")
        self.key = os.environ.get(key_env)
        if not self.key:
            raise RemoteError(f"set {key_env} to the gateway's master key (the admin API needs it)")
        self.timeout_s = timeout_s

    def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[Any, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/admin{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
                head = {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
                where = f" ({err['param']})" if err.get("param") else ""
                message = f"{exc.code}: {err['message']}{where}"
            except (ValueError, KeyError, TypeError):
                message = f"{exc.code}: {raw[:300].decode(errors='replace')}"
            raise RemoteError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach {self.url}: {reason} (is the gateway running? --url)") from None
        if head.get("content-type", "").startswith("application/json"):
            return json.loads(raw), head
        return raw.decode(), head

    def get(self, path: str) -> Any:
        return self.call("GET", path)[0]

    def active(self) -> int:
        _, head = self.call("GET", "/config")
        return int(head["etag"].strip('"'))


def _run(fn: Any) -> None:
    try:
        fn()
    except RemoteError as exc:
        console().print(f"[bold red]error[/]: {exc}", highlight=False)
        raise typer.Exit(1) from None


def _change_summary(result: dict[str, Any]) -> None:
    out = console()
    rev = result["revision"]
    if not result["changed"]:
        out.print(f"nothing changed (revision {rev['id']} stays active)")
        return
    out.print(f"revision [bold]{rev['id']}[/] is active ({rev['source']}: {rev['message']})", highlight=False)
    for probe in result.get("probes", []):
        state = "ok" if probe["ok"] else f"failed: {probe['error']}"
        out.print(f"  probe {probe['model']}: {state} ({probe['latency_ms']} ms)", highlight=False)
    for warning in result.get("warnings", []):
        out.print(f"  [yellow]warning[/]: {warning}", highlight=False)


# -- providers ---------------------------------------------------------------------------------

providers_app = typer.Typer(help="Providers of a running gateway.", no_args_is_help=True)


@providers_app.command("list")
def providers_list(url: UrlOpt = None, key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY") -> None:
    """The providers, their kind, health and models."""

    def go() -> None:
        from rich.table import Table

        data = Remote(url, key_env).get("/providers")["data"]
        table = Table(title="providers")
        for col in ("name", "kind", "base_url", "health", "models"):
            table.add_column(col)
        for p in data:
            table.add_row(
                p["name"],
                p.get("kind", ""),
                str(p["config"].get("base_url") or "(default)"),
                p.get("health", ""),
                ", ".join(p.get("models", [])),
            )
        console().print(table)

    _run(go)


@providers_app.command("test")
def providers_test(name: str, url: UrlOpt = None, key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY") -> None:
    """Connect, authenticate, list models and send a 1-token probe."""

    def go() -> None:
        r = Remote(url, key_env).call("POST", f"/providers/{urllib.parse.quote(name, safe='')}/test")[0]
        out = console()
        out.print(
            f"{r['provider']}: reachable={r['reachable']} auth_ok={r['auth_ok']} models={r['model_count']} "
            f"latency={r['latency_ms']} ms",
            highlight=False,
        )
        if r.get("probe"):
            p = r["probe"]
            out.print(
                f"  probe {p['model']}: {'ok' if p['ok'] else p['error']} ({p['latency_ms']} ms)", highlight=False
            )
        if r.get("error"):
            out.print(f"  [red]error[/]: {r['error']}", highlight=False)
            raise typer.Exit(1)

    _run(go)


# -- models (the remote side of `modelyard models`) ---------------------------------------------


def remote_models(url: str | None, key_env: str) -> None:
    def go() -> None:
        from rich.table import Table

        data = Remote(url, key_env).get("/models")["data"]
        table = Table(title="models")
        for col in (
            "name",
            "provider",
            "upstream",
            "enabled",
            "in $/Mtok",
            "out $/Mtok",
            "breaker",
            "health",
            "routes",
        ):
            table.add_column(col)
        for m in data:
            price = m.get("price") or {}
            table.add_row(
                m["name"],
                m.get("provider", ""),
                m.get("upstream", ""),
                "yes" if m.get("enabled", True) else "no",
                "" if price.get("input_per_mtok") is None else f"{price['input_per_mtok']:g}",
                "" if price.get("output_per_mtok") is None else f"{price['output_per_mtok']:g}",
                m.get("breaker", ""),
                m.get("provider_health", ""),
                ", ".join(m.get("routes", [])),
            )
        console().print(table)

    _run(go)


def set_model_enabled(name: str, enabled: bool, url: str | None, key_env: str) -> None:
    def go() -> None:
        remote = Remote(url, key_env)
        path = f"/models/{urllib.parse.quote(name, safe='')}/{'enable' if enabled else 'disable'}"
        _change_summary(remote.call("POST", path, headers={"If-Match": str(remote.active())})[0])

    _run(go)


# -- routes -------------------------------------------------------------------------------------

routes_app = typer.Typer(help="Routes of a running gateway.", no_args_is_help=True)


@routes_app.command("list")
def routes_list(url: UrlOpt = None, key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY") -> None:
    """The routes, their models, fallbacks and strategy."""

    def go() -> None:
        from rich.table import Table

        data = Remote(url, key_env).get("/routes")["data"]
        table = Table(title="routes")
        for col in ("name", "models", "fallbacks", "strategy"):
            table.add_column(col)
        for r in data:
            table.add_row(
                r["name"], ", ".join(r.get("primary", [])), ", ".join(r.get("fallbacks", [])), r.get("strategy", "")
            )
        console().print(table)

    _run(go)


@routes_app.command("switch")
def routes_switch(
    route: str,
    model: str,
    drop_previous: Annotated[bool, typer.Option(help="Do not keep the previous models as fallbacks.")] = False,
    url: UrlOpt = None,
    key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
) -> None:
    """Switch ROUTE to MODEL (the next request uses it)."""

    def go() -> None:
        remote = Remote(url, key_env)
        body = {"model": model, "keep_previous": not drop_previous, "base_revision": remote.active()}
        _change_summary(remote.call("POST", f"/routes/{urllib.parse.quote(route, safe='')}/switch", body)[0])

    _run(go)


# -- config revisions ---------------------------------------------------------------------------


def config_remote(config_app: typer.Typer) -> None:
    """Add the revision commands to ``modelyard config``."""

    @config_app.command("revisions")
    def revisions(
        limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
        url: UrlOpt = None,
        key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
    ) -> None:
        """The config revisions of a running gateway."""

        def go() -> None:
            from rich.table import Table

            data = Remote(url, key_env).get(f"/config/revisions?limit={limit}")["data"]
            table = Table(title="config revisions")
            for col in ("id", "active", "parent", "source", "actor", "created", "message"):
                table.add_column(col)
            for r in data:
                table.add_row(
                    str(r["id"]),
                    "*" if r["active"] else "",
                    str(r["parent_id"] or ""),
                    r["source"],
                    r["actor"],
                    r["created_at"][:19],
                    r["message"],
                )
            console().print(table)

        _run(go)

    @config_app.command("diff")
    def diff(
        revision: int,
        url: UrlOpt = None,
        key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
        against: Annotated[str, typer.Option(help="parent or active.")] = "parent",
    ) -> None:
        """A revision's diff against its parent (or the active revision)."""

        def go() -> None:
            r = Remote(url, key_env).get(f"/config/revisions/{revision}")
            text = r["diff_active"] if against == "active" else r["diff_parent"]
            sys.stdout.write(text or "(no difference)\n")

        _run(go)

    @config_app.command("deploy")
    def deploy(
        file: Path,
        message: Annotated[str, typer.Option("--message", "-m", help="Why (kept with the revision).")] = "",
        no_probe: Annotated[bool, typer.Option("--no-probe", help="Activate without probing changed models.")] = False,
        url: UrlOpt = None,
        key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
    ) -> None:
        """Deploy a YAML config file to a running gateway (validated and probed first)."""
        from modelyard.config.loader import read_document
        from modelyard.errors import ConfigError

        def go() -> None:
            try:
                document = read_document(file)
            except ConfigError as exc:
                raise RemoteError(exc.message) from None
            remote = Remote(url, key_env)
            body = {"document": document, "probe": not no_probe, "message": message, "base_revision": remote.active()}
            _change_summary(remote.call("POST", "/config/deploy", body)[0])

        _run(go)

    @config_app.command("rollback")
    def rollback(
        revision: Annotated[
            int | None, typer.Argument(help="The revision to go back to (default: the previous).")
        ] = None,
        url: UrlOpt = None,
        key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
    ) -> None:
        """Roll a running gateway back to an earlier revision (as a new revision)."""

        def go() -> None:
            remote = Remote(url, key_env)
            body = {"revision": revision, "base_revision": remote.active()}
            _change_summary(remote.call("POST", "/config/rollback", body)[0])

        _run(go)

    @config_app.command("export")
    def export(
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write here (default: standard output).")
        ] = None,
        url: UrlOpt = None,
        key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
    ) -> None:
        """The active revision as YAML (secrets as references), for keeping the config in git."""

        def go() -> None:
            text = Remote(url, key_env).call("GET", "/config/export")[0]
            if output is None:
                sys.stdout.write(text)
            else:
                output.write_text(text)

        _run(go)
