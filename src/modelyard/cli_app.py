"""The ``modelyard`` command line (Typer): serve, config check, models, classify, fake-provider.

``modelyard.cli.main`` is the entry point: it starts a plain ``modelyard serve`` without this module
(``modelyard.cli_serve``) and hands everything else to :data:`app`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelyard.cli_compare import compare, recommend
from modelyard.cli_remote import (
    config_remote,
    providers_app,
    remote_models,
    routes_app,
    set_model_enabled,
)
from modelyard.cli_serve import _config_warnings, _default_config, _fail
from modelyard.cli_serve import console as _console
from modelyard.cli_serve import serve as _serve
from modelyard.errors import ConfigError
from modelyard.startup import listen_error

if TYPE_CHECKING:
    from modelyard.config.schema import Config

__all__ = ["app"]

app = typer.Typer(
    name="modelyard",
    help="A self-hosted LLM gateway and model router with an OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(
    help="Check config files; revisions, deploys and rollback on a running gateway.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(providers_app, name="providers")
app.add_typer(routes_app, name="routes")
config_remote(config_app)
models_app = typer.Typer(
    help="Models: the config's (offline, --config) or a running gateway's (--url).", invoke_without_command=True
)
app.add_typer(models_app, name="models")
app.command("compare")(compare)
app.command("recommend")(recommend)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (default: ./modelyard.yaml if present, else the environment)."
    ),
]


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default: server.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port, 4000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    watch: Annotated[bool, typer.Option(help="Reload the config file when it changes.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start the gateway."""
    _serve(config, host, port, workers, watch, log_level)


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The YAML file to validate.")],
    allow_missing_env: Annotated[
        bool,
        typer.Option(help="Check without the secrets: unset environment variables are notes, not errors."),
    ] = False,
) -> None:
    """Validate a config file: every problem in one pass, each with its YAML path and why (exit 2)."""
    from modelyard.config import load_config

    console = _console()
    missing: list[tuple[str, str]] | None = [] if allow_missing_env else None
    try:
        cfg = load_config(file, missing_env=missing)
    except ConfigError as exc:
        _fail(console, exc)
        return
    for path, message in missing or []:
        console.print(f"[cyan]note[/]: {path}: {message}", highlight=False)
    console.print(
        f"[green]ok[/]: {file}: {len(cfg.providers)} providers, {len(cfg.models)} models, {len(cfg.routes)} routes"
        + (f", default route {cfg.default_route}" if cfg.default_route else ""),
        highlight=False,
    )
    for line in _config_warnings(cfg):
        console.print(f"[yellow]warning[/]: {line}", highlight=False)
    for name, caps in _capabilities(cfg).items():
        console.print(f"  models.{name}.capabilities: {caps}", highlight=False)


def _capabilities(cfg: Config) -> dict[str, str]:
    """Each model's effective capabilities, as one short line (models.<name>.capabilities)."""
    from modelyard.config.capabilities import capabilities_of

    out: dict[str, str] = {}
    for name, m in cfg.models.items():
        kind = cfg.providers[m.provider].kind
        caps = capabilities_of(m, kind, m.model or name)
        out[name] = ", ".join(k for k, v in caps.items() if v) or "text only"
    return out


@models_app.callback()
def models(
    ctx: typer.Context,
    config: ConfigOpt = None,
    url: Annotated[
        str | None, typer.Option("--url", help="A running gateway's models instead of the config file's.")
    ] = None,
    key_env: Annotated[
        str, typer.Option("--key-env", help="The variable holding the master key.")
    ] = "MODELYARD_MASTER_KEY",
) -> None:
    """A table of the configured models and routes (of a running gateway with --url)."""
    if ctx.invoked_subcommand is not None:
        return
    if url is not None:
        remote_models(url, key_env)
        return
    _models_offline(config)


@models_app.command("enable")
def models_enable(
    name: str,
    url: Annotated[str | None, typer.Option("--url", help="The gateway (default: $MODELYARD_URL).")] = None,
    key_env: Annotated[str, typer.Option("--key-env")] = "MODELYARD_MASTER_KEY",
) -> None:
    """Enable a model on a running gateway."""
    set_model_enabled(name, True, url, key_env)


@models_app.command("disable")
def models_disable(
    name: str,
    url: Annotated[str | None, typer.Option("--url", help="The gateway (default: $MODELYARD_URL).")] = None,
    key_env: Annotated[str, typer.Option("--key-env")] = "MODELYARD_MASTER_KEY",
) -> None:
    """Disable a model on a running gateway (routes skip it)."""
    set_model_enabled(name, False, url, key_env)


def _models_offline(config: Path | None) -> None:
    from rich.table import Table

    from modelyard.config.source import ConfigSource

    console = _console()
    try:
        cfg = ConfigSource(_default_config(config)).load()
    except ConfigError as exc:
        _fail(console, exc)
        return
    table = Table(title="models")
    for col in ("name", "provider", "kind", "upstream model", "in $/Mtok", "out $/Mtok", "context", "tags", "can"):
        table.add_column(col)
    capabilities = _capabilities(cfg)
    for name, m in cfg.models.items():
        p = cfg.providers[m.provider]
        table.add_row(
            name,
            m.provider,
            p.kind,
            m.model or name,
            "" if m.input_cost_per_mtok is None else f"{m.input_cost_per_mtok:g}",
            "" if m.output_cost_per_mtok is None else f"{m.output_cost_per_mtok:g}",
            "" if m.context_window is None else str(m.context_window),
            ", ".join(m.tags),
            capabilities[name],
        )
    console.print(table)
    routes = Table(title="routes")
    for col in ("name", "models", "fallbacks", "strategy", "default"):
        routes.add_column(col)
    for name, r in cfg.routes.items():
        routes.add_row(
            name, ", ".join(r.models), ", ".join(r.fallbacks), r.strategy, "yes" if name == cfg.default_route else ""
        )
    console.print(routes)
    if not cfg.providers:
        console.print("No provider configured: see README ('Configure').")


@app.command("import-litellm")
def import_litellm(
    file: Annotated[Path, typer.Argument(help="The LiteLLM proxy config (litellm_config.yaml).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the modelyard config here (default: standard output).")
    ] = None,
) -> None:
    """Write the modelyard config equivalent to a LiteLLM proxy config, and list what did not map."""
    import yaml

    from modelyard.config.litellm import convert_litellm
    from modelyard.config.loader import parse_config

    err = _console(stderr=True)
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        err.print(f"[bold red]error[/]: cannot read {file}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    conv = convert_litellm(doc)
    text = yaml.safe_dump(conv.config, sort_keys=False)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    for path, why in conv.unmapped:
        err.print(f"[yellow]not mapped[/]: {path or '<root>'}: {why}", highlight=False)
    for note in conv.notes:
        err.print(f"[cyan]note[/]: {note}", highlight=False)
    # validate without the secrets: an unset URL variable stands in as a URL, so its shape checks pass
    env = dict(os.environ)
    urls = [p.get("base_url") for p in conv.config.get("providers", {}).values()] + [conv.config.get("database")]
    for value in urls:
        if isinstance(value, str) and value.startswith("${") and value[2:-1] not in env:
            env[value[2:-1]] = "sqlite:///unset.db" if value is conv.config.get("database") else "https://unset.invalid"
    try:
        parse_config(conv.config, env=env, missing_env=[])
    except ConfigError as exc:
        err.print(f"[bold red]the result does not validate[/]: {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    counts = f"{len(conv.config.get('models', {}))} models, {len(conv.config.get('routes', {}))} routes"
    err.print(f"[green]ok[/]: {counts}; {len(conv.unmapped)} settings not mapped", highlight=False)


@app.command("classify")
def classify(
    file: Annotated[
        str, typer.Argument(help="JSONL: one object per line with `prompt` (text) or `messages` (chat); - reads stdin.")
    ] = "-",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: standard output).")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Another trained weights file (scripts/train_classifier.py).")
    ] = None,
    tiers: Annotated[
        str, typer.Option(help="Tier ceilings of complexity, cheapest first; the last tier takes the rest.")
    ] = "cheap=0.5,mid=0.8,strong",
) -> None:
    """Classify prompts: each line comes back with `complexity` (0..1), `tier`, `task` and `p_hard`."""
    import orjson

    from modelyard.classify.model import Classifier, ClassifierError

    err = _console(stderr=True)
    try:
        ceilings = _tier_ceilings(tiers)
        clf = Classifier.load(weights)
    except (ValueError, ClassifierError) as exc:
        err.print(f"[bold red]error[/]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    try:
        source = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        err.print(f"[bold red]error[/]: cannot read {file}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    out = sys.stdout if output is None else output.open("w", encoding="utf-8")
    bad = 0
    try:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                text = _prompt_of(item)
            except orjson.JSONDecodeError as exc:
                err.print(f"[red]line {number}[/]: not valid JSON ({exc.msg} at column {exc.colno})", highlight=False)
                bad += 1
                continue
            except ValueError as exc:
                err.print(f"[red]line {number}[/]: {exc}", highlight=False)
                bad += 1
                continue
            c = clf.classify(text)
            item.update(complexity=c.complexity, tier=c.tier(ceilings), task=c.task, p_hard=c.p_hard)
            out.write(orjson.dumps(item).decode() + "\n")
    finally:
        if source is not sys.stdin:
            source.close()
        if out is not sys.stdout:
            out.close()
    if bad:
        err.print(f"[bold red]{bad} line(s) could not be classified[/]", highlight=False)
        raise typer.Exit(1)


def _tier_ceilings(spec: str) -> list[tuple[str, float]]:
    """``cheap=0.5,mid=0.8,strong`` as [(name, ceiling)], the last one open (1.0)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError("--tiers needs at least one tier")
    result: list[tuple[str, float]] = []
    for i, part in enumerate(parts):
        name, sep, value = part.partition("=")
        last = i == len(parts) - 1
        if not sep and not last:
            raise ValueError(f"--tiers: {part!r} needs a ceiling (name=0.5); only the last tier takes the rest")
        try:
            ceiling = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"--tiers: {value!r} is not a number") from None
        if not 0.0 <= ceiling <= 1.0 or (result and ceiling <= result[-1][1]):
            raise ValueError("--tiers: ceilings go up from the cheapest tier, within 0..1")
        result.append((name.strip(), 1.0 if last else ceiling))
    return result


def _prompt_of(item: object) -> str:
    """The text a line asks to classify: ``prompt``, else the user turns of ``messages``."""
    if not isinstance(item, dict):
        raise ValueError("each line must be a JSON object with `prompt` or `messages`")
    prompt = item.get("prompt")
    if isinstance(prompt, str):
        return prompt
    messages = item.get("messages")
    if isinstance(messages, list) and messages:
        turns = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(m, dict) and m.get("role") == "user":
                if isinstance(content, str):
                    turns.append(content)
                elif isinstance(content, list):
                    turns += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if turns:
            return "\n\n".join(turns)
    raise ValueError("no `prompt` string (or `messages` with a user turn) on this line")


@app.command("fake-provider")
def fake_provider(
    kind: Annotated[str, typer.Option(help="openai, anthropic, gemini or ollama.")] = "openai",
    port: Annotated[int, typer.Option(help="Port to listen on (with --for: the first of consecutive ports).")] = 9100,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    for_config: Annotated[
        Path | None,
        typer.Option(
            "--for",
            help="Start a fake for every provider of this config and print the environment variables "
            "that point the config at them (run an example offline).",
        ),
    ] = None,
) -> None:
    """Run a fake provider that speaks a real wire format, with fault injection (see docs/testing.md)."""
    import asyncio

    from modelyard.testing import FAKE_KINDS, fake_class

    if for_config is not None:
        _fakes_for(for_config, host, port)
        return
    if kind not in FAKE_KINDS:
        _console(stderr=True).print(f"[red]unknown kind {kind!r}[/]: choose {', '.join(FAKE_KINDS)}")
        raise typer.Exit(2)
    fake = fake_class(kind)(host, port)

    async def run() -> None:
        try:
            await fake.start()
        except OSError as exc:
            await fake.stop()
            _fail(_console(stderr=True), listen_error(host, port, exc, change=f"--port {port + 1}"))
        base = getattr(fake, "base_url", fake.url)
        _console().print(
            f"fake {kind} provider on {fake.url}  (base_url for modelyard: {base}; faults: POST /_fake/faults)"
        )
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def _fakes_for(config: Path, host: str, first_port: int) -> None:
    """Fakes for every provider of ``config``; prints the ``export`` lines that point it at them."""
    import asyncio
    import re

    import yaml

    from modelyard.testing import FAKE_KINDS, fake_class

    try:
        # ${VAR} / ${VAR:-default} hidden behind a plain token: "{" is not valid in a YAML flow mapping
        text = re.sub(
            r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}", r"__MODELYARD_VAR_\1__", config.read_text(encoding="utf-8")
        )
        raw = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        _console(stderr=True).print(f"[bold red]cannot read {config}[/]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    var = re.compile(r"__MODELYARD_VAR_([A-Za-z_][A-Za-z0-9_]*?)__")
    plan: list[tuple[str, str, str | None, str | None]] = []  # (name, kind, base_url var, api_key var)
    notes: list[str] = []
    for name, p in (raw.get("providers") or {}).items():
        kind = str((p or {}).get("kind", ""))
        if kind not in FAKE_KINDS:
            notes.append(f"# providers.{name}: kind {kind!r} runs without a network fake (nothing to start)")
            continue
        url_var = var.search(str(p.get("base_url", "")))
        key_var = var.search(str(p.get("api_key", "")))
        if url_var is None:
            notes.append(f"# providers.{name}: base_url is not a ${{VARIABLE}}: set it to the URL printed below")
        plan.append((name, kind, url_var.group(1) if url_var else None, key_var.group(1) if key_var else None))

    async def run() -> None:
        fakes = [fake_class(kind)(host, first_port + i) for i, (_, kind, _, _) in enumerate(plan)]
        for i, fake in enumerate(fakes):
            try:
                await fake.start()
            except OSError as exc:
                for started in fakes[: i + 1]:
                    await started.stop()
                taken = first_port + i
                change = f"--port {taken + 1} (the fakes take {len(fakes)} consecutive ports from --port)"
                _fail(_console(stderr=True), listen_error(host, taken, exc, change=change))
        lines = [f"# fakes for {config} (Ctrl-C stops them); then: modelyard serve --config {config}", *notes]
        for (name, kind, url_var, key_var), fake in zip(plan, fakes, strict=True):
            base = getattr(fake, "base_url", fake.url)
            lines.append(f"# providers.{name}: fake {kind} on {base}")
            if url_var:
                lines.append(f"export {url_var}={base}")
            if key_var:
                lines.append(f"export {key_var}=fake-key")
        print("\n".join(lines), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            for fake in fakes:
                await fake.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
