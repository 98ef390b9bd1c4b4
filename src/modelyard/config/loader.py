"""Load, interpolate and validate configuration, with errors that name the YAML path."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeGuard, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from modelyard.config.paths import resolve_paths
from modelyard.config.prices import unpriced_under_budgets
from modelyard.config.schema import (
    LOCAL_KINDS,
    LOCAL_MODEL_FIELDS,
    PROVIDER_CONFIG_CLASSES,
    Config,
    ProviderConfigBase,
)
from modelyard.errors import ConfigError
from modelyard.validators import build_validator, model_name_problem

__all__ = ["interpolate", "load_config", "parse_config", "read_document"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _unset(name: str) -> str:
    return (
        f"environment variable {name} is not set: set it before starting (export {name}=...), "
        f"or write ${{{name}:-default}} in the config if it may be left out"
    )


def interpolate(node: Any, env: Mapping[str, str], path: str = "", missing: list[tuple[str, str]] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree.

    An unset variable without a default raises, or, when ``missing`` is given, is recorded there
    as (YAML path, message) and left as written, so every problem can be reported in one pass."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, _join(path, k), missing) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, _join(path, i), missing) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                if missing is None:
                    raise ConfigError(_unset(name), path=path)
                missing.append((path, _unset(name)))
                return match.group(0)
            return default
        return value

    return _VAR.sub(repl, node)


@dataclass(slots=True)
class _Where:
    """Where a pydantic error location points in the YAML tree."""

    #: the YAML path: the location without the union tags pydantic puts in it
    path: str = ""
    #: the model class whose key the last part of the path is (for "did you mean")
    owner: type[BaseModel] | None = None
    #: when the path ends at a discriminated union: its discriminator and its tags
    discriminator: str | None = None
    tags: tuple[str, ...] = ()


def _unwrap(tp: Any) -> tuple[Any, str | None]:
    """``tp`` without ``Annotated`` and ``Optional``; plus the union discriminator, if any."""
    discriminator = None
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            base, *meta = get_args(tp)
            for m in meta:
                if isinstance(getattr(m, "discriminator", None), str):
                    discriminator = m.discriminator
            tp = base
        elif origin in (Union, UnionType) and len(members := _members(tp)) == 1:
            tp = members[0]
        else:
            return tp, discriminator


def _members(union: Any) -> list[Any]:
    return [a for a in get_args(union) if a is not type(None)]


def _tags(member: Any, discriminator: str) -> tuple[str, ...]:
    field = member.model_fields.get(discriminator) if _is_model(member) else None
    return tuple(str(t) for t in get_args(field.annotation)) if field is not None else ()


def _is_model(tp: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _locate(loc: tuple[int | str, ...]) -> _Where:
    """Walk ``loc`` through the schema: the clean YAML path and the model that owns its last key.

    Pydantic puts the chosen member of a union into the location: the tag of a discriminated
    union (``providers.x.openai.auto_pull``) or the member's type name of a plain one
    (``...keep_alive.str``); neither is a key of the YAML file, so both are left out.
    """
    where = _Where()
    current: Any = Config
    for part in loc:
        current, discriminator = _unwrap(current)
        if get_origin(current) in (Union, UnionType):
            members = _members(current)
            if discriminator is not None:
                current = next((m for m in members if str(part) in _tags(m, discriminator)), None)
            else:
                current = next((m for m in members if getattr(m, "__name__", None) == part), None)
            continue
        where.path = _join(where.path, part)
        if _is_model(current):
            where.owner = current
            field = current.model_fields.get(str(part))
            if field is None:
                current = None
            elif field.discriminator is not None:
                current = Annotated[field.annotation, field]
            else:
                current = field.annotation
        else:
            # dict[str, X] or tuple[X, ...]: step into the value type
            where.owner = None
            args = [a for a in get_args(current) if a is not Ellipsis]
            current = args[-1] if args else None
    current, discriminator = _unwrap(current)
    if discriminator is not None and get_origin(current) in (Union, UnionType):
        where.discriminator = discriminator
        where.tags = tuple(t for m in _members(current) for t in _tags(m, discriminator))
    return where


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _wrong_kind(owner: type[BaseModel], key: str) -> str | None:
    """For a provider key of another kind: why it is not allowed here (else None)."""
    if not issubclass(owner, ProviderConfigBase):
        return None
    kinds = [k for k, cls in PROVIDER_CONFIG_CLASSES.items() if key in cls.model_fields]
    if not kinds:
        return None
    if len(kinds) > 1 and set(kinds) == set(LOCAL_KINDS):
        what = f"a setting of the local kinds: {', '.join(kinds)}"
    else:
        what = f"{_article(kinds[0])} {' and '.join(kinds)} setting"
    return f"not allowed for kind {owner.model_fields['kind'].default!r} (it is {what})"


def _unknown_key(owner: type[BaseModel] | None, key: str) -> str:
    if owner is None:
        return f"unknown key {key!r}"
    wrong_kind = _wrong_kind(owner, key)
    if wrong_kind is not None:
        return wrong_kind
    close = difflib.get_close_matches(key, list(owner.model_fields), n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (known keys: {', '.join(owner.model_fields)})"


def _bad_tag(where: _Where, err: ErrorDetails) -> tuple[str, str]:
    """An unknown or missing ``kind``: the path of the key, and the kinds there are."""
    key = where.discriminator or "kind"
    path = _join(where.path, key)
    listed = ", ".join(where.tags)
    if err["type"] == "union_tag_not_found":
        return path, f"is required: one of {listed}"
    if err["type"] == "model_attributes_type":
        return where.path, f"must be a mapping with a {key!r} key (one of {listed})"
    tag = str((err.get("ctx") or {}).get("tag", err["input"]))
    close = difflib.get_close_matches(tag, list(where.tags), n=1, cutoff=0.7)  # not vllm -> ollama
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return path, f"unknown {key} {tag!r}{hint}; one of {listed}"


def _format_validation(exc: ValidationError) -> list[tuple[str, str]]:
    found: dict[str, list[str]] = {}
    for err in exc.errors():
        where = _locate(tuple(err["loc"]))
        path = where.path
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(where.owner, str(err["loc"][-1]))
        elif where.tags and err["type"] in ("union_tag_invalid", "union_tag_not_found", "model_attributes_type"):
            path, msg = _bad_tag(where, err)
        elif err["type"] == "missing":
            msg = "is required"
        else:
            msg = err["msg"]
        # one line per path: the members of a plain union (``str | int``) each give an error
        msgs = found.setdefault(path, [])
        if msg not in msgs:
            msgs.append(msg)
    return [(path, ", or ".join(msgs)) for path, msgs in found.items()]


def _cross_check(cfg: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for section, names in (("models", cfg.models), ("routes", cfg.routes)):
        for name in names:
            # requests name models and routes under the same rule; a name outside it is unreachable
            problem = model_name_problem(name)
            if problem is not None:
                problems.append((f"{section}.{name[:80]}", f"the name {problem}"))
    for name, model in cfg.models.items():
        provider = cfg.providers.get(model.provider)
        if provider is None:
            problems.append((f"models.{name}.provider", _unknown("provider", model.provider, cfg.providers)))
        elif provider.kind not in LOCAL_KINDS:
            for key in LOCAL_MODEL_FIELDS:
                if key in model.model_fields_set:
                    problems.append(
                        (
                            f"models.{name}.{key}",
                            f"only for local providers ({', '.join(LOCAL_KINDS)}); "
                            f"provider {model.provider!r} is kind {provider.kind!r}",
                        )
                    )
    for name, route in cfg.routes.items():
        if name in cfg.models:
            problems.append((f"routes.{name}", "a route and a model have the same name; rename one"))
        if all(ref in cfg.models and not cfg.models[ref].enabled for ref in route.models):
            problems.append((f"routes.{name}.models", "every model of the route is disabled; enable one, or add one"))
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
        judge = route.auto.judge if route.auto is not None else None
        if judge is not None and judge.model not in cfg.models:
            problems.append((f"routes.{name}.auto.judge.model", _unknown("model", judge.model, cfg.models)))
        for key in ("canary", "shadow"):
            exp = getattr(route, key)
            if exp is None:
                continue
            if exp.model not in cfg.models:
                problems.append((f"routes.{name}.{key}.model", _unknown("model", exp.model, cfg.models)))
            elif exp.model == route.models[0]:
                problems.append((f"routes.{name}.{key}.model", f"{exp.model!r} is already the route's first model"))
            if key == "shadow" and exp.judge is not None and exp.judge.model not in cfg.models:
                problems.append((f"routes.{name}.shadow.judge.model", _unknown("model", exp.judge.model, cfg.models)))
        if route.canary is not None and route.auto is not None:
            problems.append((f"routes.{name}.canary", "an auto route picks its models by tier: no canary"))
        for i, spec in enumerate(route.validators):
            try:
                build_validator(spec, json_schema=route.json_schema)
            except ValueError as exc:
                problems.append((f"routes.{name}.validators[{i}]", str(exc)))
    alert_names: set[str] = set()
    for i, alert in enumerate(cfg.alerts):
        if alert.name in alert_names:
            problems.append((f"alerts[{i}].name", f"duplicate alert name {alert.name!r}"))
        alert_names.add(alert.name)
        sections: dict[str, Mapping[str, Any]] = {"provider": cfg.providers, "model": cfg.models, "route": cfg.routes}
        known = sections.get(alert.scope)
        if alert.target is not None and known is None:
            problems.append((f"alerts[{i}].target", f"a {alert.scope} alert has no target"))
        elif alert.target is not None and known is not None and alert.target not in known:
            problems.append((f"alerts[{i}].target", _unknown(alert.scope, alert.target, known)))
    problems.extend(unpriced_under_budgets(cfg))
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


def parse_config(
    data: Any,
    *,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
    missing_env: list[tuple[str, str]] | None = None,
) -> Config:
    """Validate an already-parsed YAML/JSON tree into a :class:`Config`.

    Every problem is reported in one error: unset environment variables and schema errors
    together, then (once the schema holds) the cross-checks.  With ``missing_env`` (a list to
    fill), unset variables are not errors: they are recorded there and left as written (``config
    check --allow-missing-env``)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping of keys to values", source=source)
    unset: list[tuple[str, str]] = []
    data = interpolate(data, os.environ if env is None else env, missing=unset)
    problems = [] if missing_env is not None else list(unset)
    if missing_env is not None:
        missing_env.extend(unset)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        _raise(problems + _format_validation(exc), source)
        raise  # unreachable: _raise always raises for a non-empty list
    _raise(problems + _cross_check(cfg), source)
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


def read_document(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a tree, before interpolation (``${VAR}`` kept as written)."""
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
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping of keys to values", source=str(p))
    return data


def load_config(
    path: str | Path, *, env: Mapping[str, str] | None = None, missing_env: list[tuple[str, str]] | None = None
) -> Config:
    """Read and validate a YAML config file (``missing_env``: see :func:`parse_config`)."""
    p = Path(path)
    data = read_document(p)
    # relative paths (database, usage.spill_path, models_dir) are relative to the file
    return resolve_paths(parse_config(data, env=env, source=str(p), missing_env=missing_env), p.parent.resolve())
