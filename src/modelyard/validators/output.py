"""Output validators: checks on a model's answer text that can reject it (and make the router try again).

Specs (as written in the route config)::

    non_empty               the answer has non-whitespace text
    json                    the answer is one strict JSON document (no code fences, no NaN)
    json_schema             the answer is JSON and matches a JSON Schema (see below)
    regex:<pattern>         re.search(pattern, answer) finds a match (compiled once)
    python:pkg.module:fn    fn(answer) -> None/True (ok), False or a str (the failure reason), or raises

``json_schema`` takes its schema from the ``json_schema`` argument of :func:`build_validator`:
the route-configured schema, or - per request - the request's ``response_format`` schema
(building is cheap: nothing is compiled, so building one validator per request is fine).
Without a schema it only checks that the answer is JSON.

:func:`validate_json_schema` is a compact validator for the commonly used subset of JSON Schema:
``type`` (incl. lists and integer-vs-number), ``nullable``, ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties`` (false or a schema), ``patternProperties``,
``min/maxProperties``, ``items`` (schema or list), ``prefixItems``, ``min/maxItems``,
``uniqueItems``, ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` (number or the
old boolean form), ``multipleOf``, ``min/maxLength``, ``pattern``, ``allOf``/``anyOf``/``oneOf``/
``not`` and local ``$ref`` (``#``, ``#/$defs/...``, ``#/definitions/...``, any local JSON
pointer).  Unknown keywords (``format``, ``description``...) are ignored.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

__all__ = ["ValidationFailed", "Validator", "build_validator", "build_validators", "validate_json_schema"]

Validator = Callable[[str], None]

_MAX_DEPTH = 200
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TYPES: Mapping[str, Callable[[Any], bool]] = MappingProxyType(
    {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: (
            (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
        ),
    }
)


class ValidationFailed(Exception):
    """The answer was rejected; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- building validators ----------------------------------------------------------------


def build_validator(spec: str, *, json_schema: dict[str, Any] | None = None) -> Validator:
    """The validator for one spec; ValueError (with a clear message) if the spec is invalid."""
    spec = spec.strip()
    if spec == "non_empty":
        return _non_empty
    if spec == "json":
        return _parse_json_answer
    if spec == "json_schema":
        if json_schema is not None and not isinstance(json_schema, dict | bool):
            raise ValueError("json_schema validator: the schema must be a JSON object")
        return _schema_validator(json_schema)
    if spec.startswith("regex:"):
        return _regex_validator(spec.removeprefix("regex:"))
    if spec.startswith("python:"):
        return _python_validator(spec.removeprefix("python:"))
    raise ValueError(
        f"unknown validator {spec!r}; expected non_empty, json, json_schema, regex:<pattern> or python:pkg.module:fn"
    )


def build_validators(specs: Sequence[str], *, json_schema: dict[str, Any] | None = None) -> list[Validator]:
    return [build_validator(spec, json_schema=json_schema) for spec in specs]


def _non_empty(text: str) -> None:
    if not text.strip():
        raise ValidationFailed("the answer is empty")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json_answer(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"the answer is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise ValidationFailed(f"the answer is not valid JSON: {exc}") from None


def _schema_validator(schema: dict[str, Any] | None) -> Validator:
    def validate(text: str) -> None:
        value = _parse_json_answer(text)
        if schema is None:
            return
        errors = validate_json_schema(value, schema)
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise ValidationFailed("the answer does not match the JSON schema: " + "; ".join(errors[:3]) + more)

    return validate


def _regex_validator(pattern: str) -> Validator:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex in validator 'regex:{pattern}': {exc}") from None

    def validate(text: str) -> None:
        if compiled.search(text) is None:
            raise ValidationFailed(f"the answer does not match the pattern {pattern!r}")

    return validate


def _python_validator(target: str) -> Validator:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"invalid validator 'python:{target}': expected python:pkg.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"validator 'python:{target}': cannot import {module_name!r}: {exc}") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"validator 'python:{target}': {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"validator 'python:{target}': {attr!r} is not callable")

    def validate(text: str) -> None:
        try:
            result = fn(text)
        except ValidationFailed:
            raise
        except Exception as exc:
            raise ValidationFailed(f"{target} raised {type(exc).__name__}: {exc}") from exc
        if result is None or result is True:
            return
        if result is False:
            raise ValidationFailed(f"rejected by {target}")
        if isinstance(result, str):
            raise ValidationFailed(result or f"rejected by {target}")
        raise ValidationFailed(f"{target} returned an unsupported value of type {type(result).__name__}")

    return validate


# -- JSON Schema ------------------------------------------------------------------------


def validate_json_schema(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Error messages (``"$.path: message"``) for ``instance`` against ``schema``; [] when valid."""
    errors: list[str] = []
    _check(instance, schema, schema, "$", errors, 0)
    return errors


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if _IDENT.match(key) else f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, 1 == 1.0."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if _TYPES["number"](a) and _TYPES["number"](b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _resolve(ref: str, root: Any) -> Any:
    if ref != "#" and not ref.startswith("#/"):
        raise LookupError(f"unsupported $ref {ref!r} (only local references are supported)")
    node = root
    for raw in ref[2:].split("/") if ref != "#" else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise LookupError(f"unresolvable $ref {ref!r}")
    return node


def _check(value: Any, schema: Any, root: Any, path: str, errors: list[str], depth: int) -> None:
    if schema is True or schema == {}:
        return
    if schema is False:
        errors.append(f"{path}: no value is allowed here")
        return
    if not isinstance(schema, dict):
        return
    if depth > _MAX_DEPTH:
        errors.append(f"{path}: schema nesting too deep (recursive $ref?)")
        return
    if "$ref" in schema:
        try:
            target = _resolve(schema["$ref"], root)
        except LookupError as exc:
            errors.append(f"{path}: {exc}")
        else:
            _check(value, target, root, path, errors, depth + 1)
    if value is None and schema.get("nullable") is True:
        return
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES.get(t, lambda _: True)(value) for t in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {_short(value)}")
            return
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        errors.append(f"{path}: {_short(value)} is not one of {_short(schema['enum'])}")
    if "const" in schema and not _equal(value, schema["const"]):
        errors.append(f"{path}: expected {_short(schema['const'])}, got {_short(value)}")
    if isinstance(value, str):
        _check_string(value, schema, path, errors)
    elif _TYPES["number"](value):
        _check_number(value, schema, path, errors)
    elif isinstance(value, dict):
        _check_object(value, schema, root, path, errors, depth)
    elif isinstance(value, list):
        _check_array(value, schema, root, path, errors, depth)
    _check_combinators(value, schema, root, path, errors, depth)


def _check_string(value: str, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: string shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: string longer than {schema['maxLength']} characters")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{path}: {_short(value)} does not match the pattern {schema['pattern']!r}")


def _check_number(value: float, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if xlo is True:  # draft-04 boolean form
        lo, xlo = None, lo
    if xhi is True:
        hi, xhi = None, hi
    if isinstance(lo, int | float) and value < lo:
        errors.append(f"{path}: {_short(value)} is less than the minimum of {lo}")
    if isinstance(hi, int | float) and value > hi:
        errors.append(f"{path}: {_short(value)} is greater than the maximum of {hi}")
    if isinstance(xlo, int | float) and not isinstance(xlo, bool) and value <= xlo:
        errors.append(f"{path}: {_short(value)} must be greater than {xlo}")
    if isinstance(xhi, int | float) and not isinstance(xhi, bool) and value >= xhi:
        errors.append(f"{path}: {_short(value)} must be less than {xhi}")
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        quotient = value / step
        if not (math.isfinite(quotient) and math.isclose(quotient, round(quotient), rel_tol=1e-9, abs_tol=1e-9)):
            errors.append(f"{path}: {_short(value)} is not a multiple of {step}")


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], root: Any, path: str, errors: list[str], depth: int
) -> None:
    for key in schema.get("required", ()):
        if key not in value:
            errors.append(f"{path}: missing required property {key!r}")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(f"{path}: fewer than {schema['minProperties']} properties")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{path}: more than {schema['maxProperties']} properties")
    props: dict[str, Any] = schema.get("properties", {})
    patterns: dict[str, Any] = schema.get("patternProperties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = _child(path, key)
        matched = key in props
        if matched:
            _check(item, props[key], root, sub, errors, depth + 1)
        for pattern, pschema in patterns.items():
            if re.search(pattern, key):
                matched = True
                _check(item, pschema, root, sub, errors, depth + 1)
        if not matched:
            if extra is False:
                errors.append(f"{path}: unexpected property {key!r}")
            elif extra is not True:
                _check(item, extra, root, sub, errors, depth + 1)


def _check_array(value: list[Any], schema: dict[str, Any], root: Any, path: str, errors: list[str], depth: int) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    items = schema.get("items")
    prefix = schema.get("prefixItems")
    if isinstance(items, list):  # draft-04..07 tuple form
        prefix, items = items, schema.get("additionalItems")
    start = 0
    if isinstance(prefix, list):
        for i, (item, sub) in enumerate(zip(value, prefix, strict=False)):
            _check(item, sub, root, _child(path, i), errors, depth + 1)
        start = len(prefix)
    if items is not None:
        for i in range(start, len(value)):
            _check(value[i], items, root, _child(path, i), errors, depth + 1)
    if schema.get("uniqueItems") is True:
        for i in range(1, len(value)):
            if any(_equal(value[i], value[j]) for j in range(i)):
                errors.append(f"{path}: items are not unique ({_child(path, i)} repeats an earlier item)")
                break


def _check_combinators(value: Any, schema: dict[str, Any], root: Any, path: str, errors: list[str], depth: int) -> None:
    for sub in schema.get("allOf", ()):
        _check(value, sub, root, path, errors, depth + 1)
    for keyword in ("anyOf", "oneOf"):
        if keyword not in schema:
            continue
        results: list[list[str]] = []
        for sub in schema[keyword]:
            branch: list[str] = []
            _check(value, sub, root, path, branch, depth + 1)
            results.append(branch)
        passing = sum(1 for r in results if not r)
        if passing == 0:
            detail = "; ".join(f"option {i}: {r[0]}" for i, r in enumerate(results[:3]))
            errors.append(f"{path}: matches none of the {keyword} options ({detail})")
        elif keyword == "oneOf" and passing > 1:
            errors.append(f"{path}: matches {passing} of the oneOf options, expected exactly one")
    if "not" in schema:
        branch = []
        _check(value, schema["not"], root, path, branch, depth + 1)
        if not branch:
            errors.append(f"{path}: must not match the 'not' schema")
