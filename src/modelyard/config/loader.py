"""Load, interpolate and validate configuration, with errors that name the YAML path."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from modelyard.config.schema import Config
from modelyard.errors import ConfigError
from modelyard.validators import build_validator, model_name_problem

__all__ = ["interpolate", "load_config", "parse_config"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def interpolate(node: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, _join(path, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, _join(path, i)) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"environment variable {name} is not set (write ${{{name}:-default}} to make it optional)",
                    path=path,
                )
            return default
        return value

    return _VAR.sub(repl, node)


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``loc`` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        else:
            # dict[str, X] or tuple[X, ...]: step into the value type
            args = getattr(current, "__args__", ())
            current = args[-1] if args else None
            if current is None:
                return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    args = getattr(current, "__args__", ())
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _format_validation(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ""
        for part in loc:
            path = _join(path, part)
        if err["type"] == "extra_forbidden":
            owner = _model_at(Config, loc)
            key = str(loc[-1])
            hint = ""
            if owner is not None:
                close = difflib.get_close_matches(key, list(owner.model_fields), n=1, cutoff=0.6)
                if close:
                    hint = f" (did you mean {close[0]!r}?)"
                else:
                    hint = f" (known keys: {', '.join(owner.model_fields)})"
            problems.append((path, f"unknown key {key!r}{hint}"))
        else:
            msg = err["msg"]
            if err["type"] == "missing":
                msg = "is required"
            problems.append((path, msg))
    return problems


def _cross_check(cfg: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for section, names in (("models", cfg.models), ("routes", cfg.routes)):
        for name in names:
            # requests name models and routes under the same rule; a name outside it is unreachable
            problem = model_name_problem(name)
            if problem is not None:
                problems.append((f"{section}.{name[:80]}", f"the name {problem}"))
    for name, model in cfg.models.items():
        if model.provider not in cfg.providers:
            problems.append((f"models.{name}.provider", _unknown("provider", model.provider, cfg.providers)))
    for name, route in cfg.routes.items():
        if name in cfg.models:
            problems.append((f"routes.{name}", "a route and a model have the same name; rename one"))
        for key in ("models", "fallbacks"):
            seen: set[str] = set()
            for i, ref in enumerate(getattr(route, key)):
                if ref not in cfg.models:
                    problems.append((f"routes.{name}.{key}[{i}]", _unknown("model", ref, cfg.models)))
                if ref in seen:
                    problems.append((f"routes.{name}.{key}[{i}]", f"duplicate entry {ref!r}"))
                seen.add(ref)
        for task, ref in route.tasks.items():
            if ref not in cfg.models and ref not in cfg.routes:
                problems.append(
                    (f"routes.{name}.tasks.{task}", _unknown("model or route", ref, {**cfg.models, **cfg.routes}))
                )
        if route.baseline_model is not None and route.baseline_model not in cfg.models:
            problems.append((f"routes.{name}.baseline_model", _unknown("model", route.baseline_model, cfg.models)))
        for i, spec in enumerate(route.validators):
            try:
                build_validator(spec, json_schema=route.json_schema)
            except ValueError as exc:
                problems.append((f"routes.{name}.validators[{i}]", str(exc)))
    if cfg.default_route is not None and cfg.default_route not in cfg.routes and (cfg.default_route not in cfg.models):
        problems.append(("default_route", _unknown("route or model", cfg.default_route, {**cfg.routes, **cfg.models})))
    return problems


def _unknown(what: str, name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"unknown {what} {name!r} (did you mean {close[0]!r}?)"
    listed = ", ".join(sorted(known)) or "none defined"
    return f"unknown {what} {name!r} (defined: {listed})"


def _raise(problems: list[tuple[str, str]], source: str | None) -> None:
    if not problems:
        return
    path, first = problems[0]
    if len(problems) == 1:
        raise ConfigError(first, path=path, source=source)
    lines = "\n".join(f"  {p or '<root>'}: {m}" for p, m in problems)
    err = ConfigError(f"{len(problems)} problems:\n{lines}", source=source)
    err.path = path
    raise err


def parse_config(data: Any, *, env: Mapping[str, str] | None = None, source: str | None = None) -> Config:
    """Validate an already-parsed YAML/JSON tree into a :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping of keys to values", source=source)
    try:
        data = interpolate(data, os.environ if env is None else env)
    except ConfigError as exc:
        exc.source = source
        raise ConfigError(exc.reason, path=exc.path, source=source) from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        _raise(_format_validation(exc), source)
        raise  # unreachable: _raise always raises for a non-empty list
    _raise(_cross_check(cfg), source)
    return cfg


def _restore(node: Any, hidden: Mapping[str, str]) -> Any:
    if not hidden:
        return node
    if isinstance(node, dict):
        return {_restore(k, hidden): _restore(v, hidden) for k, v in node.items()}
    if isinstance(node, list):
        return [_restore(v, hidden) for v in node]
    if isinstance(node, str) and "__modelyard_env_" in node:
        for key, original in hidden.items():
            node = node.replace(key, original)
    return node


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=str(p)) from None
    # ``${VAR}`` is not valid inside a YAML flow mapping ({...}), so hide each one behind a plain
    # placeholder while parsing and put it back before interpolation.
    hidden: dict[str, str] = {}

    def hide(match: re.Match[str]) -> str:
        key = f"__modelyard_env_{len(hidden)}__"
        hidden[key] = match.group(0)
        return key

    try:
        data = _restore(yaml.safe_load(_VAR.sub(hide, text)), hidden)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", source=str(p)) from None
    return parse_config(data, env=env, source=str(p))
