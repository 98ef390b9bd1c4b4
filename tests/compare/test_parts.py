"""Comparison runs, the parts (#17 point 1): prompt sets with line-numbered errors, every grader,
the 95 % intervals, and the figures, summary and recommendations against hand-computed values."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.compare.confidence import bootstrap_diff, overlap, wilson
from modelyard.compare.figures import Sample, figures, recommend, summary
from modelyard.compare.graders import Grade, GraderError, grade, load_python_grader
from modelyard.compare.report import html_report
from modelyard.compare.spec import ComparisonSpec, GraderSpec, SpecError, parse_prompts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"prompt": "a"}\nnot json\n', "line 2: not valid JSON"),
        ('{"prompt": "a"}\n\n[1, 2]\n', "line 3: expected a JSON object"),
        ('{"id": 1}\n', "line 1: give exactly one of `prompt` (text) or `messages` (chat)"),
        ('{"prompt": "a", "messages": []}\n', "line 1: give exactly one of"),
        ('{"prompt": ""}\n', "line 1: `prompt` must be a non-empty string"),
        ('{"prompt": "a", "colour": 1}\n', "line 1: unknown field(s) colour"),
        ('{"messages": [{"role": "wizard", "content": "x"}]}\n', "line 1: Invalid 'messages[0].role'"),
        ('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n', "line 2: duplicate id 'x'"),
        ('{"prompt": "a", "grader": "telepathy"}\n', "line 1: grader:"),
        ("\n\n", "the prompt set is empty"),
    ],
)
def test_a_bad_prompt_set_names_its_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_prompts(text)
    assert message in str(info.value)


def test_prompts_with_text_and_image_parts_parse() -> None:
    items = parse_prompts(
        '{"id": "img", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, '
        '{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}], "expected": "cat"}\n'
        '{"prompt": "2+2?", "expected": 4, "grader": ["numeric", "regex:4"]}\n'
    )
    assert [i.id for i in items] == ["img", "2"]
    assert items[0].text() == "What is it?" and items[0].parsed_messages()[0].content[1].type == "image"
    assert [g.kind for g in items[1].graders or ()] == ["numeric", "regex"]


def item(expected: Any = None, schema: dict[str, Any] | None = None) -> Any:
    body: dict[str, Any] = {"id": "q", "prompt": "question?"}
    if expected is not None:
        body["expected"] = expected
    if schema is not None:
        body["schema"] = schema
    return parse_prompts([body])[0]


async def score(spec: str | dict[str, Any], answer: str, it: Any, **kw: Any) -> Grade | None:
    return await grade((GraderSpec.of(spec),), answer, it, accurate_at=1.0, **kw)


async def test_the_deterministic_graders() -> None:
    assert (await score("exact", " Paris ", item("paris"))) == Grade(1.0, "accurate")
    assert (await score({"kind": "exact", "ignore_case": False}, "paris", item("Paris"))) == Grade(0.0, "failed")
    assert (await score("contains", "It is Paris, France", item(["paris", "france", "lyon"]))) == Grade(
        0.6667, "partial"
    )
    assert (await score("regex:^\\d+$", "42", item())).verdict == "accurate"
    assert (await score("json_valid", '{"a": 1}', item())).verdict == "accurate"
    assert (await score("json_valid", "{a: 1}", item())).verdict == "failed"
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert (await score("json_schema", '{"a": 1}', item(schema=schema))).verdict == "accurate"
    assert (await score("json_schema", '{"a": "x"}', item(schema=schema))).verdict == "failed"
    assert (await score("numeric:0.01", "The answer is 3.141", item(3.14))).verdict == "accurate"
    assert (await score("numeric", "about 1,234.5 units", item("1234.5"))).verdict == "accurate"
    assert (await score("numeric:0.001", "3.2", item(3.14))).verdict == "failed"
    assert await grade((), "anything", item(), accurate_at=1.0) is None  # no grader: not measured


async def test_a_grader_that_raises_fails_only_that_sample() -> None:
    fails = await score("exact", "x", item())  # exact without `expected`
    assert fails is not None and fails.verdict == "failed" and "needs `expected`" in (fails.detail or "")
    target = "tests.compare.graders_fixture:explodes_on_b"
    python = {target: load_python_grader(target)}
    b = parse_prompts([{"id": "b", "prompt": "x"}])[0]
    broken = await score(f"python:{target}", "x", b, python=python)
    assert broken is not None and broken.verdict == "failed" and "cannot read prompt b" in (broken.detail or "")
    assert (await score(f"python:{target}", "x", item(), python=python)).verdict == "accurate"
    wild = "tests.compare.graders_fixture:out_of_range"
    bad = await score(f"python:{wild}", "x", item(), python={wild: load_python_grader(wild)})
    assert bad is not None and "not a score in 0..1" in (bad.detail or "")
    with pytest.raises(GraderError):
        load_python_grader("tests.compare.graders_fixture:nope")
    with pytest.raises(GraderError):
        load_python_grader("no_colon_here")


async def test_the_judge_grader_and_a_judge_that_answers_nonsense() -> None:
    asked: list[str] = []

    async def judge(model: str, system: str, user: str) -> str:
        asked.append(user)
        return {"m-half": "0.5", "m-ten": "Score: 9/10", "m-junk": "I refuse to grade"}[model]

    it = item("a reference answer")
    assert (await score("judge:m-half", "the answer", it, judge=judge)) == Grade(0.5, "partial")
    assert (await score("judge:m-ten", "the answer", it, judge=judge)) == Grade(0.9, "partial")
    junk = await score("judge:m-junk", "the answer", it, judge=judge)
    assert junk is not None and junk.verdict == "failed" and "answered no score in 0..1" in (junk.detail or "")
    assert "question?" in asked[0] and "the answer" in asked[0] and "a reference answer" in asked[0]


def test_wilson_and_bootstrap() -> None:
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    assert overlap((0.1, 0.5), (0.4, 0.9)) and not overlap((0.1, 0.3), (0.4, 0.9))
    diff = bootstrap_diff([10.0] * 30, [20.0] * 30)
    assert diff == (10.0, 10.0)
    noisy = bootstrap_diff([1.0, 2.0, 3.0] * 10, [1.5, 2.5, 3.5] * 10)
    assert noisy is not None and noisy[0] < 0.5 < noisy[1]
    assert bootstrap_diff([], [1.0]) is None


def s(model: str, pid: str, it: int, ok: bool, ms: float, usd: float, g: Grade | None) -> Sample:
    return Sample(model, pid, it, ok, ms, ms / 2 if ok else None, usd, "a" if ok else "", g)


A, P, F = Grade(1.0, "accurate"), Grade(0.5, "partial"), Grade(0.0, "failed")


def fixed_samples() -> list[Sample]:
    return [
        # model x: p1 accurate twice, p2 accurate then partial (inconsistent); 100-400 ms; $0.01 a call
        s("x", "p1", 0, True, 100, 0.01, A),
        s("x", "p1", 1, True, 200, 0.01, A),
        s("x", "p2", 0, True, 300, 0.01, A),
        s("x", "p2", 1, True, 400, 0.01, P),
        # model y: p1 accurate twice, p2 failed (an error) twice; 50 ms; $0.001 a call
        s("y", "p1", 0, True, 50, 0.001, A),
        s("y", "p1", 1, True, 50, 0.001, A),
        s("y", "p2", 0, False, 30, 0.0, F),
        s("y", "p2", 1, False, 30, 0.0, F),
    ]


def test_figures_match_hand_computed_values() -> None:
    figs = figures(["x", "y"], fixed_samples(), iterations=2)
    x, y = figs["x"], figs["y"]
    assert (x.requests, x.successes, x.success_rate) == (4, 4, 1.0)
    assert x.latency_avg_ms == 250.0 and x.latency_p50_ms == 250.0
    assert x.latency_p95_ms == pytest.approx(385.0)  # 300 + 0.85 * 100
    assert x.ttft_p50_ms == 125.0
    assert x.accuracy == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert (x.accurate, x.partial, x.failed) == (3, 1, 0)
    assert x.consistency == 0.5  # p1 same verdict twice, p2 not
    assert x.total_cost_usd == pytest.approx(0.04) and x.cost_per_request_usd == pytest.approx(0.01)
    assert x.cost_per_accurate_usd == pytest.approx(0.04 / 3)
    assert (y.successes, y.success_rate, y.accuracy) == (2, 0.5, 0.5)
    assert (y.accurate, y.partial, y.failed, y.consistency) == (2, 0, 2, 1.0)
    assert y.cost_per_request_usd == pytest.approx(0.0005) and y.cost_per_accurate_usd == pytest.approx(0.001)
    assert y.latency_p50_ms == 50.0 and y.ttft_p50_ms == 25.0


def test_summary_and_weights() -> None:
    figs = figures(["x", "y"], fixed_samples(), iterations=2)
    sm = summary(figs, {"accuracy": 1.0, "cost": 0.0, "speed": 0.0})
    assert sm["winner"] == "x" and sm["best_for_accuracy"] == "x"
    assert sm["best_for_cost"] == "y" and sm["best_for_speed"] == "y"
    # x: accuracy 1.0 of the best, success 1.0 -> 1.0; y: 0.5/0.875 * success 0.5
    assert sm["scores"]["x"] == 1.0 and sm["scores"]["y"] == pytest.approx(round(0.5 / 0.875 * 0.5, 4))
    cheap_first = summary(figs, {"accuracy": 0.0, "cost": 1.0, "speed": 0.0})
    assert cheap_first["scores"]["x"] == pytest.approx(0.05)  # 0.0005 / 0.01
    assert cheap_first["scores"]["y"] == 0.5  # cheapest, but half its calls failed


def test_recommendations_say_the_change_and_its_confidence() -> None:
    samples = fixed_samples()
    figs = figures(["x", "y"], samples, iterations=2)
    weights = {"accuracy": 1.0, "cost": 0.0, "speed": 0.0}
    (rec,) = recommend(figs, samples, weights, current="y")
    assert rec["model"] == "x" and rec["instead_of"] == "y"
    assert rec["expected_change"]["accuracy"] == pytest.approx(0.875 / 0.5 - 1)
    assert rec["expected_change"]["cost"] == pytest.approx(0.01 / 0.0005 - 1)
    assert rec["expected_change"]["speed"] == pytest.approx(50 / 250)
    assert rec["summary"] == "+75% accuracy, +1900% cost, 5.0x slower"
    assert "worse on cost" in rec["trade_offs"] and "worse on speed" in rec["trade_offs"]
    # 4 samples each: the accuracy intervals overlap, so the gain is within the noise
    assert rec["evidence"]["accuracy"]["significant"] is False and rec["confidence"] == "low"
    keep = recommend(figs, samples, weights, current="x")
    assert keep[0]["summary"] == "keep the current model" and keep[0]["model"] == "x"


def test_a_strong_signal_gives_high_confidence() -> None:
    samples = [s("a", f"p{i}", 0, True, 500, 0.01, A if i % 2 else F) for i in range(200)]
    samples += [s("b", f"p{i}", 0, True, 200, 0.002, A) for i in range(200)]
    figs = figures(["a", "b"], samples, iterations=1)
    (rec,) = recommend(figs, samples, {"accuracy": 0.5, "cost": 0.25, "speed": 0.25}, current="a")
    assert rec["model"] == "b" and rec["confidence"] == "high" and rec["trade_offs"] == []
    assert rec["summary"] == "+100% accuracy, -80% cost, 2.5x faster"


def test_the_report_is_self_contained_html() -> None:
    samples = fixed_samples()
    figs = figures(["x", "y"], samples, iterations=2)
    result = {
        "id": "cmp_1", "name": "<b>my run</b>", "status": "stopped", "stop_reason": "cost cap $1 reached",
        "duration_s": 3.2, "models": ["x", "y"], "prompts": 2, "iterations": 2, "calls": {"planned": 8, "done": 8},
        "spent_usd": 0.042, "judge_cost_usd": 0.0, "estimate_usd": 0.05, "max_cost_usd": 1.0, "current": "y",
        "figures": {m: f.__class__.__dict__ and __import__("dataclasses").asdict(f) for m, f in figs.items()},
        "summary": summary(figs, {"accuracy": 1.0}),
        "recommendations": recommend(figs, samples, {"accuracy": 1.0}, "y"),
        "samples": [x.public() for x in samples],
    }  # fmt: skip
    page = html_report(result)
    assert (
        page.startswith("<!doctype html>")
        and "<script" not in page
        and "http" not in page.replace("http://www.w3.org", "")
    )
    assert "&lt;b&gt;my run&lt;/b&gt;" in page and "<b>my run</b>" not in page  # escaped
    assert "cost against accuracy" in page and "latency distributions" in page
    assert "cost cap $1 reached" in page and "winner" in page


def test_a_spec_checks_its_fields() -> None:
    prompts = parse_prompts([{"prompt": "x"}])
    with pytest.raises(ValueError, match="each model once"):
        ComparisonSpec(models=("a", "a"), prompts=prompts)
    with pytest.raises(ValueError, match="current 'c' must be one of the models"):
        ComparisonSpec(models=("a", "b"), prompts=prompts, current="c")
    with pytest.raises(ValueError, match="weights are accuracy, cost and speed"):
        ComparisonSpec(models=("a",), prompts=prompts, weights={"vibes": 1.0})
    with pytest.raises(ValueError):
        ComparisonSpec(models=tuple(f"m{i}" for i in range(9)), prompts=prompts)
