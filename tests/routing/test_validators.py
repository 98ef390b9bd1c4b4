from __future__ import annotations

import itertools
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.validators import (
    ValidationFailed,
    build_validator,
    build_validators,
    validate_json_schema,
)


def rejects(spec: str, text: str, **kw: Any) -> str:
    with pytest.raises(ValidationFailed) as info:
        build_validator(spec, **kw)(text)
    assert info.value.reason == str(info.value)
    return info.value.reason


# -- simple specs -------------------------------------------------------------------------------


def test_non_empty() -> None:
    v = build_validator("non_empty")
    v("hi")
    v("  x  ")
    assert "empty" in rejects("non_empty", "")
    rejects("non_empty", " \n\t ")


def test_json() -> None:
    v = build_validator("json")
    v('{"a": 1}')
    v("  [1, 2]\n")
    v("null")
    assert "not valid JSON" in rejects("json", '{"a": }')
    rejects("json", "")
    rejects("json", '```json\n{"a": 1}\n```')
    rejects("json", '{"a": 1} trailing')
    rejects("json", "NaN")
    rejects("json", '{"a": Infinity}')


def test_regex_uses_search_semantics() -> None:
    v = build_validator("regex:\\d{3}")
    v("abc 123 def")
    reason = rejects("regex:\\d{3}", "12 ab")
    assert "\\d{3}" in reason
    build_validator("regex:^yes$")("yes")
    rejects("regex:^yes$", "yes!")
    build_validator("regex:a:b")("xa:by")  # colons inside the pattern are fine


def test_invalid_regex_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        build_validator("regex:(unclosed")


@pytest.mark.parametrize("spec", ["", "nonempty", "JSON", "schema", "lambda:x"])
def test_unknown_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown validator"):
        build_validator(spec)


def test_build_validators() -> None:
    validators = build_validators(["non_empty", "json", "regex:ok"])
    assert len(validators) == 3
    for v in validators:
        v('"ok"')
    with pytest.raises(ValidationFailed):
        for v in validators:
            v('"nope"')
    assert build_validators([]) == []
    with pytest.raises(ValueError):
        build_validators(["json", "bogus"])


# -- json_schema -------------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
    "additionalProperties": False,
}


def test_json_schema_with_configured_schema() -> None:
    v = build_validator("json_schema", json_schema=PERSON)
    v('{"name": "Ada", "age": 36}')
    reason = rejects("json_schema", '{"age": -1, "x": 1}', json_schema=PERSON)
    assert "missing required property 'name'" in reason
    assert "$.age" in reason
    assert "unexpected property 'x'" in reason
    assert "not valid JSON" in rejects("json_schema", "{", json_schema=PERSON)


def test_json_schema_takes_the_schema_given_at_build_time() -> None:
    a = build_validator("json_schema", json_schema={"type": "array"})
    b = build_validator("json_schema", json_schema={"type": "object"})
    a("[]")
    b("{}")
    with pytest.raises(ValidationFailed):
        a("{}")
    with pytest.raises(ValidationFailed):
        b("[]")


def test_json_schema_without_a_schema_checks_json_only() -> None:
    v = build_validator("json_schema")
    v('{"anything": [1, 2]}')
    rejects("json_schema", "not json")


def test_json_schema_rejects_non_object_schema() -> None:
    with pytest.raises(ValueError):
        build_validator("json_schema", json_schema="string")  # type: ignore[arg-type]


def test_json_schema_reason_is_capped() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    reason = rejects("json_schema", "[1, 2, 3, 4, 5]", json_schema=schema)
    assert "$[0]" in reason and "$[2]" in reason and "$[3]" not in reason
    assert "and 2 more" in reason


# -- python: ------------------------------------------------------------------------------------

_counter = itertools.count()

MODULE_SOURCE = textwrap.dedent(
    """
    from modelyard.validators import ValidationFailed

    IMPORTS = 1
    NOT_CALLABLE = 42

    def ok(text):
        return None

    def truthy(text):
        return True

    def short(text):
        return "too short" if len(text) < 5 else None

    def falsy(text):
        return False

    def boom(text):
        raise RuntimeError("kaboom")

    def explicit(text):
        raise ValidationFailed("custom reason")

    def weird(text):
        return 3

    class Holder:
        @staticmethod
        def check(text):
            return "nested" if text == "bad" else None
    """
)


@pytest.fixture
def vmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"_modelyard_test_validators_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_python_validator_results(vmod: str) -> None:
    build_validator(f"python:{vmod}:ok")("x")
    build_validator(f"python:{vmod}:truthy")("x")
    build_validator(f"python:{vmod}:short")("long enough")
    assert rejects(f"python:{vmod}:short", "abc") == "too short"
    assert vmod in rejects(f"python:{vmod}:falsy", "x")
    reason = rejects(f"python:{vmod}:boom", "x")
    assert "RuntimeError" in reason and "kaboom" in reason
    assert rejects(f"python:{vmod}:explicit", "x") == "custom reason"
    assert "unsupported" in rejects(f"python:{vmod}:weird", "x")
    assert rejects(f"python:{vmod}:Holder.check", "bad") == "nested"


def test_python_validator_imports_once_at_build_time(vmod: str) -> None:
    v = build_validator(f"python:{vmod}:short")
    assert vmod in sys.modules
    del sys.modules[vmod]  # a re-import at call time would now reload; the validator must not need it
    v("long enough")
    with pytest.raises(ValidationFailed):
        v("abc")
    assert vmod not in sys.modules


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("python:no_colon_here", "expected python:pkg.module:function"),
        ("python::fn", "expected python:pkg.module:function"),
        ("python:json:", "expected python:pkg.module:function"),
        ("python:modelyard_no_such_module_xyz:fn", "cannot import"),
        ("python:json:no_such_function", "has no attribute"),
        ("python:math:pi", "not callable"),
    ],
)
def test_python_validator_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_validator(spec)


# -- validate_json_schema -----------------------------------------------------------------------


def errs(instance: Any, schema: Any) -> list[str]:
    return validate_json_schema(instance, schema)


def test_types_and_unions() -> None:
    assert errs("x", {"type": "string"}) == []
    assert errs(1, {"type": "string"}) == ["$: expected string, got 1"]
    assert errs(None, {"type": ["string", "null"]}) == []
    assert errs(3, {"type": ["string", "null"]}) != []
    assert errs(True, {"type": "boolean"}) == []
    assert errs({}, {"type": "object"}) == [] and errs([], {"type": "array"}) == []


def test_integer_versus_number() -> None:
    assert errs(3, {"type": "integer"}) == []
    assert errs(3.0, {"type": "integer"}) == []
    assert errs(3.5, {"type": "integer"}) != []
    assert errs(3.5, {"type": "number"}) == []
    assert errs(3, {"type": "number"}) == []
    assert errs(True, {"type": "integer"}) != []
    assert errs(False, {"type": "number"}) != []


def test_nullable() -> None:
    assert errs(None, {"type": "string", "nullable": True}) == []
    assert errs(None, {"type": "string"}) != []


def test_properties_required_additional() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "object", "properties": {"c": {"type": "string"}}}},
        "required": ["a", "b"],
        "additionalProperties": {"type": "boolean"},
    }
    assert errs({"a": 1, "b": {"c": "x"}, "extra": True}, schema) == []
    found = errs({"a": "1", "b": {"c": 2}, "extra": 1}, schema)
    assert any(e.startswith("$.a: expected integer") for e in found)
    assert any(e.startswith("$.b.c: expected string") for e in found)
    assert any(e.startswith("$.extra: expected boolean") for e in found)
    assert errs({}, schema) == ["$: missing required property 'a'", "$: missing required property 'b'"]
    assert errs({"z": 1}, {"additionalProperties": False}) == ["$: unexpected property 'z'"]


def test_pattern_properties_and_property_counts() -> None:
    schema = {"patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": False, "maxProperties": 2}
    assert errs({"x_a": 1}, schema) == []
    assert errs({"x_a": "s"}, schema) == ['$.x_a: expected integer, got "s"']
    assert errs({"y": 1}, schema) == ["$: unexpected property 'y'"]
    assert errs({"x_a": 1, "x_b": 2, "x_c": 3}, schema) == ["$: more than 2 properties"]
    assert errs({}, {"minProperties": 1}) == ["$: fewer than 1 properties"]


def test_paths_for_unusual_keys_and_arrays() -> None:
    schema = {"properties": {"a b": {"items": {"properties": {"k-1": {"type": "string"}}}}}}
    assert errs({"a b": [{"k-1": "ok"}, {"k-1": 5}]}, schema) == ['$["a b"][1]["k-1"]: expected string, got 5']


def test_arrays() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}
    assert errs([1, 2], schema) == []
    assert errs([], schema) == ["$: fewer than 1 items"]
    assert errs([1, 2, 3, 4], schema) == ["$: more than 3 items"]
    assert errs([1, "x"], schema) == ['$[1]: expected integer, got "x"']
    assert errs([1, 1], {"uniqueItems": True}) != []
    assert errs([1, True], {"uniqueItems": True}) == []
    assert errs([{"a": 1}, {"a": 1.0}], {"uniqueItems": True}) != []


def test_tuple_items() -> None:
    prefix = {"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": {"type": "boolean"}}
    assert errs(["a", 1, True, False], prefix) == []
    assert errs(["a", 1, 2], prefix) == ["$[2]: expected boolean, got 2"]
    old = {"items": [{"type": "string"}], "additionalItems": False}
    assert errs(["a"], old) == []
    assert errs(["a", "b"], old) == ["$[1]: no value is allowed here"]


def test_enum_and_const() -> None:
    assert errs("b", {"enum": ["a", "b"]}) == []
    assert errs("c", {"enum": ["a", "b"]}) == ['$: "c" is not one of ["a", "b"]']
    assert errs(1, {"enum": [True]}) != []  # booleans are not numbers
    assert errs(True, {"const": 1}) != []
    assert errs(1.0, {"const": 1}) == []
    assert errs({"a": [1]}, {"const": {"a": [1]}}) == []
    assert errs({"a": [2]}, {"const": {"a": [1]}}) != []


def test_numeric_bounds() -> None:
    assert errs(0, {"minimum": 0, "maximum": 10}) == []
    assert errs(10, {"minimum": 0, "maximum": 10}) == []
    assert errs(-1, {"minimum": 0}) == ["$: -1 is less than the minimum of 0"]
    assert errs(11, {"maximum": 10}) == ["$: 11 is greater than the maximum of 10"]
    assert errs(0, {"exclusiveMinimum": 0}) != []
    assert errs(0.001, {"exclusiveMinimum": 0}) == []
    assert errs(10, {"exclusiveMaximum": 10}) != []
    assert errs(10, {"maximum": 10, "exclusiveMaximum": True}) != []  # draft-04 form
    assert errs(9, {"maximum": 10, "exclusiveMaximum": True}) == []
    assert errs(0, {"minimum": 0, "exclusiveMinimum": True}) != []
    assert errs(0.3, {"multipleOf": 0.1}) == []
    assert errs(7, {"multipleOf": 2}) != []
    assert errs("5", {"minimum": 10}) == []  # numeric keywords ignore strings


def test_strings() -> None:
    assert errs("abc", {"minLength": 3, "maxLength": 3}) == []
    assert errs("ab", {"minLength": 3}) == ["$: string shorter than 3 characters"]
    assert errs("abcd", {"maxLength": 3}) == ["$: string longer than 3 characters"]
    assert errs("héé", {"maxLength": 3}) == []  # code points, not bytes
    assert errs("id-42", {"pattern": "\\d+"}) == []  # search semantics
    assert errs("id-x", {"pattern": "^id-\\d+$"}) != []


def test_combinators() -> None:
    any_of = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert errs("x", any_of) == [] and errs(1, any_of) == []
    found = errs(1.5, any_of)
    assert len(found) == 1 and "anyOf" in found[0] and "option 0" in found[0]
    one_of = {"oneOf": [{"type": "integer"}, {"type": "number"}]}
    assert errs(1.5, one_of) == []
    assert "exactly one" in errs(1, one_of)[0]
    assert "none of the oneOf" in errs("s", one_of)[0]
    all_of = {"allOf": [{"minimum": 0}, {"maximum": 5}]}
    assert errs(3, all_of) == []
    assert errs(6, all_of) == ["$: 6 is greater than the maximum of 5"]
    assert errs(1, {"not": {"type": "integer"}}) != []
    assert errs("1", {"not": {"type": "integer"}}) == []


def test_refs() -> None:
    schema = {
        "$defs": {"pos": {"type": "integer", "minimum": 1}},
        "definitions": {"name": {"type": "string"}},
        "properties": {"n": {"$ref": "#/$defs/pos"}, "who": {"$ref": "#/definitions/name"}},
    }
    assert errs({"n": 2, "who": "x"}, schema) == []
    assert errs({"n": 0, "who": 1}, schema) == [
        "$.n: 0 is less than the minimum of 1",
        "$.who: expected string, got 1",
    ]
    assert "unresolvable $ref" in errs({"n": 1}, {"properties": {"n": {"$ref": "#/$defs/missing"}}})[0]
    assert "unsupported $ref" in errs(1, {"$ref": "https://example.com/s.json"})[0]
    escaped = {"$defs": {"a~b/c": {"type": "integer"}}, "$ref": "#/$defs/a~0b~1c"}
    assert errs(1, escaped) == []
    assert errs("x", escaped) == ['$: expected integer, got "x"']


def test_recursive_ref() -> None:
    tree = {
        "type": "object",
        "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["value"],
    }
    good = {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}
    assert errs(good, tree) == []
    bad = {"value": 1, "children": [{"value": 2, "children": [{"value": "x"}]}]}
    assert errs(bad, tree) == ['$.children[0].children[0].value: expected integer, got "x"']


def test_ref_cycle_does_not_recurse_forever() -> None:
    found = errs(1, {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})
    assert found and "too deep" in found[0]


def test_boolean_schemas_and_unknown_keywords() -> None:
    assert errs({"x": 1}, True) == []  # type: ignore[arg-type]
    assert errs(1, False) == ["$: no value is allowed here"]  # type: ignore[arg-type]
    assert errs("x", {"format": "email", "description": "ignored", "type": "string"}) == []
    assert errs({"a": 1}, {"properties": {"a": False}}) == ["$.a: no value is allowed here"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


@settings(max_examples=100, deadline=None)
@given(value=JSON)
def test_any_json_value_matches_its_own_type_and_const(value: Any) -> None:
    assert errs(value, {}) == []
    assert errs(value, {"type": type_of(value)}) == []
    assert errs(value, {"const": value}) == []
    assert errs(value, {"enum": [value]}) == []
    others = {"null", "boolean", "number", "string", "array", "object"} - {type_of(value)}
    assert errs(value, {"type": sorted(others)}) != []


@settings(max_examples=100, deadline=None)
@given(value=JSON)
def test_json_validator_accepts_serialised_values(value: Any) -> None:
    text = json.dumps(value)
    build_validator("json")(text)
    build_validator("json_schema", json_schema={"type": type_of(value)})(text)


@settings(max_examples=100, deadline=None)
@given(x=st.integers(-100, 100) | st.floats(-100, 100), bound=st.integers(-50, 50))
def test_bounds_agree_with_arithmetic(x: float, bound: int) -> None:
    assert (errs(x, {"minimum": bound}) == []) == (x >= bound)
    assert (errs(x, {"maximum": bound}) == []) == (x <= bound)
    assert (errs(x, {"exclusiveMinimum": bound}) == []) == (x > bound)
    assert (errs(x, {"exclusiveMaximum": bound}) == []) == (x < bound)
