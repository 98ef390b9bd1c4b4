"""``modelyard compare``: the same prompts on up to 8 models, graded, with a summary,
recommendations, a JSON result and a self-contained HTML report (docs/compare.md).

In process by default (the config's models, usage records in its database with ``source:
comparison``); with ``--url`` on a running gateway through ``POST /admin/comparisons``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelyard.cli_remote import KeyEnvOpt, Remote, RemoteError, UrlOpt
from modelyard.cli_serve import console as _console

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["compare", "recommend"]


def _weights(spec: str | None) -> dict[str, float] | None:
    if not spec:
        return None
    out: dict[str, float] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise typer.BadParameter(f"{part!r}: expected accuracy=0.5,cost=0.25,speed=0.25", param_hint="--weights")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number", param_hint="--weights") from None
    return out


def _print_result(console: Console, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{result.get('name') or result['id']}: {result['status']}")
    for col in (
        "model",
        "success",
        "accuracy",
        "consistency",
        "acc/part/fail",
        "p50 ms",
        "p95 ms",
        "TTFT p50",
        "cost/request",
        "cost/accurate",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    def usd(v: float | None) -> str:
        return "-" if v is None else f"${v:.6f}"

    for m, f in result["figures"].items():
        table.add_row(
            m, pct(f["success_rate"]), pct(f["accuracy"]), pct(f["consistency"]),
            f"{f['accurate']}/{f['partial']}/{f['failed']}",
            "-" if f["latency_p50_ms"] is None else f"{f['latency_p50_ms']:.0f}",
            "-" if f["latency_p95_ms"] is None else f"{f['latency_p95_ms']:.0f}",
            "-" if f["ttft_p50_ms"] is None else f"{f['ttft_p50_ms']:.0f}",
            usd(f["cost_per_request_usd"]), usd(f["cost_per_accurate_usd"]),
        )  # fmt: skip
    console.print(table)
    s = result["summary"]
    console.print(
        f"winner [bold]{s['winner']}[/] - best for accuracy {s['best_for_accuracy']}, cost {s['best_for_cost']}, "
        f"speed {s['best_for_speed']}",
        highlight=False,
    )
    for r in result["recommendations"]:
        offs = "; ".join(r["trade_offs"]) or "no trade-off"
        console.print(
            f"recommend [bold]{r['model']}[/] instead of {r['instead_of']}: {r['summary']} "
            f"({r['confidence']} confidence; {offs})",
            highlight=False,
        )
    stop = f" ({result['stop_reason']})" if result.get("stop_reason") else ""
    console.print(
        f"{result['calls']['done']} of {result['calls']['planned']} calls in {result['duration_s']:.1f} s, "
        f"spent ${result['spent_usd']:.6f}{stop}",
        highlight=False,
    )


def _write(result: dict[str, Any], json_out: Path | None, html_out: Path | None) -> None:
    from modelyard.compare.report import html_report

    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    if html_out is not None:
        html_out.write_text(html_report(result), encoding="utf-8")


def compare(
    models: Annotated[str, typer.Option("--models", "-m", help="1 to 8 models or routes, comma separated.")],
    prompts: Annotated[Path, typer.Option("--prompts", "-p", help="The prompt set: JSONL (docs/compare.md).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (default ./modelyard.yaml).")
    ] = None,
    iterations: Annotated[int, typer.Option(min=1, max=20, help="Runs of each prompt on each model.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Calls at once.")] = 4,
    grader: Annotated[
        list[str] | None,
        typer.Option(
            "--grader",
            "-g",
            help="exact, contains, regex:PATTERN, json_valid, json_schema, numeric[:TOL], judge:MODEL, "
            "python:pkg.module:fn (repeatable; the scores are averaged).",
        ),
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="USD cap: refused above it, stopped at it.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max_tokens of every call.")] = None,
    temperature: Annotated[float | None, typer.Option(help="temperature of every call.")] = None,
    current: Annotated[
        str | None, typer.Option(help="The model recommendations compare against (default: the first).")
    ] = None,
    weights: Annotated[str | None, typer.Option(help="Winner weights: accuracy=0.5,cost=0.25,speed=0.25.")] = None,
    accurate_at: Annotated[float, typer.Option(help="A score at or above this is accurate.")] = 1.0,
    name: Annotated[str | None, typer.Option(help="A name for the run.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON here.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    url: UrlOpt = None,
    key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
) -> None:
    """Compare models on a prompt set: figures per model, winner, recommendations, report."""
    from modelyard.compare.spec import GraderSpec, SpecError, parse_prompts

    err = _console(stderr=True)
    try:
        text = prompts.read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[bold red]error[/]: cannot read {prompts}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    try:
        items = parse_prompts(text)
        graders = tuple(GraderSpec.of(g) for g in (grader or []))
    except (SpecError, ValueError) as exc:
        err.print(f"[bold red]error[/]: {prompts}: {str(exc).splitlines()[0]}", highlight=False)
        raise typer.Exit(2) from None
    names = [m.strip() for m in models.split(",") if m.strip()]
    body: dict[str, Any] = {
        "models": names,
        "iterations": iterations,
        "concurrency": concurrency,
        "max_cost_usd": max_cost,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "current": current,
        "accurate_at": accurate_at,
        "name": name,
    }
    w = _weights(weights)
    if w is not None:
        body["weights"] = w
    if url is not None:
        result = _remote(url, key_env, body, [json.loads(line) for line in text.splitlines() if line.strip()],
                         grader or [], err)  # fmt: skip
    else:
        path = config if config is not None else (Path("modelyard.yaml") if Path("modelyard.yaml").exists() else None)
        result = asyncio.run(_local(path, body, items, graders, err))
    _print_result(_console(), result)
    _write(result, json_out, html_out)
    if result["status"] != "done":
        raise typer.Exit(3)


async def _local(config: Path | None, body: dict[str, Any], items: Any, graders: Any, err: Console) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from modelyard.compare.graders import GraderError, load_python_grader
    from modelyard.compare.runner import ComparisonRun
    from modelyard.compare.spec import ComparisonSpec, SpecError
    from modelyard.config.source import ConfigSource
    from modelyard.errors import ConfigError
    from modelyard.sdk import Gateway

    try:
        cfg = ConfigSource(config).load()
    except ConfigError as exc:
        err.print(f"[bold red]config error[/]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    python = {}
    try:
        for name, target in cfg.compare.graders.items():
            python[name] = load_python_grader(target)
        for g in graders:
            if g.kind == "python" and g.target and g.target not in python:
                python[g.target] = load_python_grader(g.target)
        spec = ComparisonSpec.model_validate({**body, "prompts": items, "graders": graders})
    except (GraderError, ValueError) as exc:
        err.print(f"[bold red]error[/]: {str(exc).splitlines()[0]}", highlight=False)
        raise typer.Exit(2) from None
    gateway = Gateway(cfg)
    try:
        pipeline = await gateway.pipeline()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        spent = TextColumn("${task.fields[spent]:.6f}")
        with Progress(*columns, spent, TimeElapsedColumn(), console=err, transient=not sys.stderr.isatty()) as progress:
            bar = progress.add_task("comparing", total=0, spent=0.0)

            def on_event(event: dict[str, Any]) -> None:
                if event["type"] == "started":
                    progress.update(bar, total=event["total"])
                elif event["type"] == "progress":
                    progress.update(bar, completed=event["done"], spent=event["spent_usd"])

            run = ComparisonRun(spec, pipeline, python_graders=python, on_event=on_event)
            try:
                estimate = run.check()
            except SpecError as exc:
                err.print(f"[bold red]error[/]: {exc}", highlight=False)
                raise typer.Exit(2) from None
            progress.console.print(f"{run.total} calls, worst-case estimate ${estimate:.6f}", highlight=False)
            return await run.run()
    finally:
        await gateway.aclose()


def _remote(
    url: str, key_env: str, body: dict[str, Any], prompts: list[Any], graders: list[str], err: Console
) -> dict[str, Any]:
    try:
        remote = Remote(url, key_env)
        started, _ = remote.call("POST", "/comparisons", {**body, "prompts": prompts, "graders": graders})
        run_id = started["id"]
        err.print(f"started {run_id}: {started['calls']} calls, worst-case estimate ${started['estimate_usd']:.6f}")
        while True:
            state = remote.get(f"/comparisons/{run_id}")
            progress = state.get("progress")
            if progress:
                err.print(f"\r{progress['done']}/{progress['total']} calls, ${progress['spent_usd']:.6f}", end="")
            if state["status"] not in ("queued", "running"):
                err.print()
                result = state.get("result")
                if not result:
                    raise RemoteError(f"comparison {run_id} ended {state['status']} without a result")
                return dict(result)
            time.sleep(0.5)
    except RemoteError as exc:
        err.print(f"[bold red]error[/]: {exc}", highlight=False)
        raise typer.Exit(1) from None


def recommend(
    route: Annotated[str | None, typer.Option(help="One route (default: every route).")] = None,
    days: Annotated[float, typer.Option(min=0.01, max=366, help="The usage window, in days.")] = 7.0,
    apply: Annotated[
        bool, typer.Option("--apply", help="Deploy the route's recommended switch (needs --route).")
    ] = False,
    url: UrlOpt = None,
    key_env: KeyEnvOpt = "MODELYARD_MASTER_KEY",
) -> None:
    """Should a route switch model, given its production traffic? (A running gateway's usage.)"""
    import urllib.parse

    from rich.table import Table

    console, err = _console(), _console(stderr=True)
    if apply and route is None:
        err.print("[bold red]error[/]: --apply needs --route", highlight=False)
        raise typer.Exit(2)
    try:
        remote = Remote(url, key_env)
        query = urllib.parse.urlencode({k: v for k, v in {"route": route, "days": days}.items() if v is not None})
        data = remote.get(f"/recommendations?{query}")["data"]
        table = Table(title=f"recommendations from the last {days:g} days")
        for col in ("route", "current", "status", "recommendation", "confidence", "why"):
            table.add_column(col)
        for r in data:
            rec = r.get("recommendation") or {}
            what = f"{rec['model']}: {rec['summary']}" if rec else "-"
            table.add_row(r["route"], r["current"], r["status"], what, rec.get("confidence", "-"), r.get("reason", ""))
        console.print(table)
        if apply:
            rec = data[0].get("recommendation") if data else None
            if not rec:
                err.print(f"nothing to apply: {data[0]['status'] if data else 'no data'}", highlight=False)
                raise typer.Exit(1)
            body = {
                "model": rec["model"],
                "base_revision": remote.active(),
                "message": f"recommendation: {rec['summary']} ({rec['confidence']} confidence)",
            }
            result, _ = remote.call("POST", f"/routes/{route}/switch", body)
            console.print(
                f"route {route} -> {rec['model']}: revision {result['revision']['id']} is active", highlight=False
            )
    except RemoteError as exc:
        err.print(f"[bold red]error[/]: {exc}", highlight=False)
        raise typer.Exit(1) from None
