"""Graders: how a comparison scores each answer, from 0 (wrong) to 1 (right).

A grader that raises marks that sample failed (with the reason) and the run goes on.  The judge
asks a configured model through the pipeline (:class:`JudgeCall`), so its calls are recorded and
charged like any other (``source: comparison``).
"""

from __future__ import annotations

import asyncio
import importlib
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from modelyard.compare.spec import GraderSpec, PromptItem
from modelyard.gateway.auto import parse_score
from modelyard.validators import ValidationFailed, build_validator

__all__ = ["Grade", "GraderError", "JudgeCall", "grade", "load_python_grader"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", re.IGNORECASE)
_DEFAULT_RUBRIC = "Is the answer correct and complete for the request? 1 fully, 0 not at all."


class GraderError(ValueError):
    """A grader that cannot be built (unknown python target, a judge without a model...)."""


@dataclass(slots=True, frozen=True)
class Grade:
    score: float
    verdict: Literal["accurate", "partial", "failed"]
    #: why a sample failed or was partial (a grader's exception, the judge's unusable answer)
    detail: str | None = None


class JudgeCall(Protocol):
    """Ask ``model`` and return its answer text (the caller records and charges the call)."""

    async def __call__(self, model: str, system: str, user: str) -> str: ...


PythonGrader = Callable[[str, Mapping[str, Any]], Any]


def load_python_grader(target: str) -> PythonGrader:
    """``pkg.module:function`` (GraderError when it cannot be imported or is not callable)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise GraderError(f"python grader {target!r}: expected pkg.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise GraderError(f"python grader {target!r}: {exc}") from None
    if not callable(fn):
        raise GraderError(f"python grader {target!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _verdict(score: float, accurate_at: float) -> Literal["accurate", "partial", "failed"]:
    if score >= accurate_at - 1e-9:
        return "accurate"
    return "partial" if score > 0 else "failed"


def _text_of(expected: Any) -> str:
    return expected if isinstance(expected, str) else orjson.dumps(expected).decode()


def _number(text: str) -> float | None:
    """The first number of a text (thousands separators dropped: ``1,234.5`` is 1234.5)."""
    m = _NUMBER.search(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))
    return float(m.group(0)) if m is not None else None


async def _one(
    g: GraderSpec,
    answer: str,
    item: PromptItem,
    *,
    judge: JudgeCall | None,
    python: Mapping[str, PythonGrader],
) -> float:
    expected = item.expected
    if g.kind in ("exact", "contains", "numeric") and expected is None:
        raise GraderError(f"grader {g.kind} needs `expected` on the prompt (line {item.line})")
    if g.kind == "exact":
        a, e = answer.strip(), _text_of(expected).strip()
        return 1.0 if (a.lower() == e.lower() if g.ignore_case else a == e) else 0.0
    if g.kind == "contains":
        wanted = expected if isinstance(expected, list) else [expected]
        hay = answer.lower() if g.ignore_case else answer
        hits = sum(1 for w in wanted if (_text_of(w).lower() if g.ignore_case else _text_of(w)) in hay)
        return hits / len(wanted) if wanted else 0.0
    if g.kind == "regex":
        pattern = g.pattern or (_text_of(expected) if expected is not None else None)
        if not pattern:
            raise GraderError(f"regex grader without a pattern (line {item.line})")
        flags = re.IGNORECASE if g.ignore_case else 0
        return 1.0 if re.search(pattern, answer, flags) else 0.0
    if g.kind == "json_valid":
        return _validates("json", answer, None)
    if g.kind == "json_schema":
        schema = g.schema_ or item.schema_
        if schema is None:
            raise GraderError(f"json_schema grader without a schema (line {item.line})")
        return _validates("json_schema", answer, schema)
    if g.kind == "numeric":
        want = float(expected) if not isinstance(expected, str) else _number(expected)
        got = _number(answer)
        if want is None:
            raise GraderError(f"numeric grader: `expected` is not a number (line {item.line})")
        return 1.0 if got is not None and math.isclose(got, want, abs_tol=g.tolerance, rel_tol=0.0) else 0.0
    if g.kind == "python":
        fn = python.get(g.target or "")
        if fn is None:
            raise GraderError(f"python grader {g.target!r} is not loaded")
        value = fn(answer, {"id": item.id, "expected": expected, "prompt": item.text()})
        if isinstance(value, Awaitable):
            value = await value
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise GraderError(f"python grader {g.target!r} returned {value!r}, not a score in 0..1")
        return float(value)
    if g.kind == "judge":
        if judge is None or not g.model:
            raise GraderError("judge grader without a model")
        exp = f"\n\nEXPECTED (reference):\n{_text_of(expected)[:4000]}" if expected is not None else ""
        user = (
            f"RUBRIC:\n{g.rubric or _DEFAULT_RUBRIC}\n\nREQUEST:\n{item.text()[-8000:]}{exp}\n\n"
            f"ANSWER:\n{answer[:8000]}\n\nScore (a number from 0 to 1):"
        )
        reply = await judge(g.model, "You grade answers. Reply with one number between 0 and 1 and nothing else.", user)
        score = parse_score(reply)
        if score is None:
            raise GraderError(f"the judge {g.model} answered no score in 0..1: {reply[:80]!r}")
        return score
    raise GraderError(f"unknown grader {g.kind!r}")


def _validates(spec: str, answer: str, schema: dict[str, Any] | None) -> float:
    try:
        build_validator(spec, json_schema=schema)(answer)
    except ValidationFailed:
        return 0.0
    return 1.0


async def grade(
    graders: tuple[GraderSpec, ...],
    answer: str,
    item: PromptItem,
    *,
    accurate_at: float,
    judge: JudgeCall | None = None,
    python: Mapping[str, PythonGrader] | None = None,
) -> Grade | None:
    """The mean score of ``graders`` (None: no grader, accuracy not measured); a grader that
    raises fails the sample, with its reason."""
    if not graders:
        return None
    scores: list[float] = []
    for g in graders:
        try:
            scores.append(await _one(g, answer, item, judge=judge, python=python or {}))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return Grade(0.0, "failed", f"{g.kind} grader: {str(exc)[:200] or type(exc).__name__}")
    score = sum(scores) / len(scores)
    return Grade(round(score, 4), _verdict(score, accurate_at))
