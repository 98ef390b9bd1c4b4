"""What a comparison run is asked to do: models, prompts, iterations, graders, limits.

A prompt set is JSONL, one object per line::

    {"id": "q1", "prompt": "What is 2+2?", "expected": "4"}
    {"id": "q2", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}],
     "expected": "a cat", "grader": "contains"}

``prompt`` (text) or ``messages`` (chat, text and image parts, validated like a chat request),
an optional ``id`` (default: the line number), ``expected`` (what the deterministic graders
compare with), ``schema`` (for the json_schema grader) and ``grader`` (this prompt's graders,
overriding the run's).  Every problem names its line.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelyard.errors import ModelyardError
from modelyard.types import Message
from modelyard.validators import check_model_name
from modelyard.wire.openai import parse_chat_request

__all__ = ["MAX_MODELS", "ComparisonSpec", "GraderSpec", "PromptItem", "SpecError", "parse_prompts"]

MAX_MODELS = 8
MAX_PROMPTS = 1000

GraderKind = Literal["exact", "contains", "regex", "json_valid", "json_schema", "numeric", "python", "judge"]


class SpecError(ValueError):
    """A comparison that cannot run as asked (the message names the line or the field)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GraderSpec(_Strict):
    """One grader: how a sample's answer is scored from 0 (wrong) to 1 (right).

    ``exact`` / ``contains``: the answer (trimmed; ``ignore_case`` by default) equals / contains
    ``expected``; ``regex``: ``pattern`` (else ``expected``) matches; ``json_valid``: the answer
    parses as JSON; ``json_schema``: it matches ``schema`` (else the prompt's); ``numeric``: the
    first number of the answer is within ``tolerance`` of ``expected``; ``python``: a callable
    ``pkg.module:fn(answer, item) -> float | bool`` (from the CLI, or named in the config's
    ``compare.graders``; never code sent through the API); ``judge``: ``model`` scores the
    answer against ``rubric``, 0..1."""

    kind: GraderKind
    pattern: str | None = Field(None, max_length=2000)
    ignore_case: bool = True
    tolerance: float = Field(0.0, ge=0)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    target: str | None = Field(None, max_length=300, description="python: pkg.module:function")
    model: str | None = Field(None, max_length=200, description="judge: a configured model")
    rubric: str | None = Field(None, max_length=4000)

    @classmethod
    def of(cls, value: Any) -> GraderSpec:
        """A grader from its short form (``"contains"``, ``"regex:^4$"``, ``"python:pkg.mod:fn"``)
        or its full object form."""
        if isinstance(value, GraderSpec):
            return value
        if isinstance(value, str):
            kind, sep, rest = value.partition(":")
            if kind == "regex" and sep:
                return cls(kind="regex", pattern=rest)
            if kind == "python" and sep:
                return cls(kind="python", target=rest)
            if kind == "judge" and sep:
                return cls(kind="judge", model=rest)
            if kind == "numeric" and sep:
                return cls(kind="numeric", tolerance=float(rest))
            return cls.model_validate({"kind": kind})
        return cls.model_validate(value)


class PromptItem(_Strict):
    id: str
    line: int
    messages: tuple[dict[str, Any], ...]
    expected: Any = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    graders: tuple[GraderSpec, ...] | None = None

    def parsed_messages(self) -> list[Message]:
        return parse_chat_request({"model": "x", "messages": list(self.messages)}).messages

    def text(self) -> str:
        """The text of the user turns (for judges and reports)."""
        return "\n\n".join(m.text() for m in self.parsed_messages() if m.role == "user")


class ComparisonSpec(_Strict):
    """A comparison run: 1 to 8 models x prompts x iterations."""

    models: tuple[str, ...] = Field(min_length=1, max_length=MAX_MODELS)
    prompts: tuple[PromptItem, ...] = Field(min_length=1, max_length=MAX_PROMPTS)
    iterations: int = Field(1, ge=1, le=20)
    concurrency: int = Field(4, ge=1, le=64)
    graders: tuple[GraderSpec, ...] = ()
    #: the run stops (and says what it spent) before it would spend more than this
    max_cost_usd: float | None = Field(None, gt=0, le=1e6)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    #: a score at or above this is "accurate"; above 0, "partial"; 0 (or an error), "failed"
    accurate_at: float = Field(1.0, gt=0, le=1)
    #: how the winner is picked: weights of accuracy, cost and speed (normalised)
    weights: dict[str, float] = Field(default_factory=lambda: {"accuracy": 0.5, "cost": 0.25, "speed": 0.25})
    #: the model the recommendations compare against (e.g. a route's current first choice)
    current: str | None = None
    #: the route that model serves, for "compare with current" and applying a recommendation
    route: str | None = None
    name: str | None = Field(None, max_length=200)

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for m in value:
            check_model_name(m, "models")
        if len(set(value)) != len(value):
            raise ValueError("each model once")
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - {"accuracy", "cost", "speed"}
        if unknown:
            raise ValueError(f"weights are accuracy, cost and speed (not {', '.join(sorted(unknown))})")
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights are >= 0 and at least one is > 0")
        return value

    @model_validator(mode="after")
    def _current(self) -> ComparisonSpec:
        if self.current is not None and self.current not in self.models:
            raise ValueError(f"current {self.current!r} must be one of the models compared")
        return self

    def judge_models(self) -> set[str]:
        graders = [*self.graders, *(g for p in self.prompts for g in (p.graders or ()))]
        return {g.model for g in graders if g.kind == "judge" and g.model}


def _item(raw: Any, line: int) -> PromptItem:
    if not isinstance(raw, dict):
        raise SpecError(f"line {line}: expected a JSON object with `prompt` or `messages`")
    unknown = set(raw) - {"id", "prompt", "messages", "expected", "schema", "grader", "graders"}
    if unknown:
        raise SpecError(f"line {line}: unknown field(s) {', '.join(sorted(unknown))}")
    prompt, messages = raw.get("prompt"), raw.get("messages")
    if (prompt is None) == (messages is None):
        raise SpecError(f"line {line}: give exactly one of `prompt` (text) or `messages` (chat)")
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise SpecError(f"line {line}: `prompt` must be a non-empty string")
        messages = [{"role": "user", "content": prompt}]
    try:
        parse_chat_request({"model": "x", "messages": messages})
    except ModelyardError as exc:
        raise SpecError(f"line {line}: {exc.message}") from None
    ident = raw.get("id", line)
    if not isinstance(ident, (str, int)) or isinstance(ident, bool) or not str(ident).strip():
        raise SpecError(f"line {line}: `id` must be a string or a number")
    graders = raw.get("graders", raw.get("grader"))
    parsed: tuple[GraderSpec, ...] | None = None
    if graders is not None:
        items = graders if isinstance(graders, list) else [graders]
        try:
            parsed = tuple(GraderSpec.of(g) for g in items)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"line {line}: grader: {_short(exc)}") from None
    schema = raw.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise SpecError(f"line {line}: `schema` must be a JSON object")
    return PromptItem.model_validate(
        {
            "id": str(ident)[:200],
            "line": line,
            "messages": tuple(messages or ()),
            "expected": raw.get("expected"),
            "schema": schema,
            "graders": parsed,
        }
    )


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[-1] if "\n" in text else text


def parse_prompts(source: str | bytes | list[Any]) -> tuple[PromptItem, ...]:
    """A prompt set from JSONL text (or an already-parsed list); SpecError names the bad line."""
    items: list[PromptItem] = []
    if isinstance(source, list):
        rows: list[tuple[int, Any]] = list(enumerate(source, 1))
    else:
        text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise SpecError(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    for number, raw in rows:
        items.append(_item(raw, number))
    if not items:
        raise SpecError("the prompt set is empty")
    if len(items) > MAX_PROMPTS:
        raise SpecError(f"at most {MAX_PROMPTS} prompts per run ({len(items)} given)")
    seen: set[str] = set()
    for i in items:
        if i.id in seen:
            raise SpecError(f"line {i.line}: duplicate id {i.id!r}")
        seen.add(i.id)
    return tuple(items)
