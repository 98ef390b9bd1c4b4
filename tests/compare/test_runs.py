"""Comparison runs end to end in process (#17 point 1): every call goes through the pipeline to a
fake provider over loopback, is recorded with ``source: comparison``, and the figures match
hand-computed values on scripted answers; the cost cap refuses and stops; the CLI writes the
JSON and the HTML report."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from modelyard.compare.runner import ComparisonRun
from modelyard.compare.spec import ComparisonSpec, GraderSpec, SpecError, parse_prompts
from modelyard.sdk import Gateway
from modelyard.testing import FakeOpenAI
from tests.helpers import BIN

#: prompt id -> (text, expected); the fakes answer per model and prompt (FakeServer.script)
PROMPTS = {
    "p1": ("What is 2+2? Answer with a number.", "4"),
    "p2": ("What is the capital of France?", "Paris"),
    "p3": ("What colour is a clear sky?", "blue"),
    "p4": ("Name the largest planet.", "Jupiter"),
}
GOOD = {"p1": "4", "p2": "Paris", "p3": "blue", "p4": "Saturn"}  # 3 of 4 right
CHEAP = {"p1": "4", "p2": "London", "p3": "blue"}  # p4 unscripted: "gpt-4o-mini says: ..." (wrong)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    f = FakeOpenAI().start_in_thread()
    try:
        yield f
    finally:
        f.stop_thread()


@pytest.fixture(autouse=True)
def scripted(fake: FakeOpenAI) -> None:
    fake.reset()
    for pid, (text, _) in PROMPTS.items():
        fake.script("gpt-4o", GOOD[pid], prompt=text)
        if pid in CHEAP:
            fake.script("gpt-4o-mini", CHEAP[pid], prompt=text)
    fake.script("judge-model", "0.5")


def config(fake: FakeOpenAI, db: Path) -> dict[str, Any]:
    return {
        "providers": {"oa": {"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test"}},
        "models": {
            "good": {"provider": "oa", "model": "gpt-4o"},
            "cheap": {"provider": "oa", "model": "gpt-4o-mini"},
            "judge": {"provider": "oa", "model": "judge-model", "input_cost_per_mtok": 1, "output_cost_per_mtok": 1},
        },
        "database": f"sqlite:///{db}",
    }


def prompts() -> Any:
    return parse_prompts([{"id": pid, "prompt": text, "expected": exp} for pid, (text, exp) in PROMPTS.items()])


def recorded(db: Path) -> dict[str, tuple[int, float]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT model, count(*), sum(cost_usd) FROM usage_requests WHERE source = 'comparison' GROUP BY model"
        ).fetchall()
    return {m: (n, c) for m, n, c in rows}


async def test_a_run_gives_the_hand_computed_figures_and_records_every_call(fake: FakeOpenAI, tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    events: list[dict[str, Any]] = []
    spec = ComparisonSpec(
        models=("cheap", "good"),
        prompts=prompts(),
        iterations=2,
        concurrency=3,
        graders=(GraderSpec.of("exact"),),
        current="cheap",
        weights={"accuracy": 1.0, "cost": 0.0, "speed": 0.0},
        max_tokens=20,
    )
    async with Gateway.from_config(config(fake, db)) as gw:
        run = ComparisonRun(spec, await gw.pipeline(), on_event=events.append)
        assert run.check() > 0
        result = await run.run()
    assert result["status"] == "done" and result["calls"] == {"planned": 16, "done": 16}
    good, cheap = result["figures"]["good"], result["figures"]["cheap"]
    assert (good["accuracy"], good["accurate"], good["failed"], good["consistency"]) == (0.75, 6, 2, 1.0)
    assert (cheap["accuracy"], cheap["accurate"], cheap["failed"]) == (0.5, 4, 4)
    assert good["success_rate"] == cheap["success_rate"] == 1.0
    assert good["ttft_p50_ms"] is not None and good["latency_p95_ms"] >= good["latency_p50_ms"]
    # every call is a usage record with source comparison, and the figures' costs are those records'
    rows = recorded(db)
    assert rows["good"][0] == rows["cheap"][0] == 8
    assert good["total_cost_usd"] == pytest.approx(rows["good"][1], rel=1e-6)
    assert cheap["total_cost_usd"] == pytest.approx(rows["cheap"][1], rel=1e-6)
    assert good["cost_per_accurate_usd"] == pytest.approx(rows["good"][1] / 6, rel=1e-5)
    assert result["spent_usd"] == pytest.approx(rows["good"][1] + rows["cheap"][1], rel=1e-6)
    assert result["summary"]["winner"] == "good" and result["summary"]["best_for_accuracy"] == "good"
    assert result["summary"]["best_for_cost"] == "cheap"
    (rec,) = result["recommendations"]
    assert rec["model"] == "good" and rec["instead_of"] == "cheap"
    assert rec["expected_change"]["accuracy"] == pytest.approx(0.5)  # 0.75 / 0.5 - 1
    assert rec["summary"].startswith("+50% accuracy")
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    assert [e["done"] for e in events if e["type"] == "progress"] == list(range(1, 17))


async def test_a_judge_and_a_failing_grader_and_a_failing_model(fake: FakeOpenAI, tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    fake.inject("gpt-4o-mini", status=500, times=100)  # every cheap call fails (after its retry)
    items = parse_prompts(
        [
            {"id": "a", "prompt": PROMPTS["p1"][0], "expected": "4"},
            {"id": "b", "prompt": PROMPTS["p2"][0], "grader": "python:tests.compare.graders_fixture:explodes_on_b"},
        ]
    )
    from modelyard.compare.graders import load_python_grader

    target = "tests.compare.graders_fixture:explodes_on_b"
    spec = ComparisonSpec(models=("good", "cheap"), prompts=items, graders=(GraderSpec.of("judge:judge"),))
    async with Gateway.from_config(config(fake, db)) as gw:
        run = ComparisonRun(spec, await gw.pipeline(), python_graders={target: load_python_grader(target)})
        result = await run.run()
    assert result["status"] == "done"
    by = {(s["model"], s["prompt_id"]): s for s in result["samples"]}
    assert by[("good", "a")]["grade"] == {"score": 0.5, "verdict": "partial", "detail": None}
    assert "cannot read prompt b" in by[("good", "b")]["grade"]["detail"]
    assert by[("cheap", "a")]["ok"] is False and by[("cheap", "a")]["grade"]["verdict"] == "failed"
    assert result["figures"]["cheap"]["success_rate"] == 0.0
    assert result["judge_cost_usd"] > 0 and result["spent_usd"] >= result["judge_cost_usd"]
    assert recorded(db)["judge"][0] == 1  # the judge's calls are comparison records too


async def test_the_cost_cap_refuses_before_and_stops_during_a_run(fake: FakeOpenAI, tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    cfg = config(fake, db)
    cfg["models"]["priced"] = {
        "provider": "oa", "model": "long-talker", "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 1000.0,
        "max_output_tokens": 1000,
    }  # fmt: skip
    # answers of ~300 tokens: more than the 256 the estimate expects, so the spend outruns it
    fake.script("long-talker", " ".join(["word"] * 300))
    async with Gateway.from_config(cfg) as gw:
        pipeline = await gw.pipeline()
        base = ComparisonSpec(models=("priced",), prompts=prompts(), iterations=3, concurrency=1)
        expected = ComparisonRun(base, pipeline).check()
        with pytest.raises(SpecError, match="expected to cost"):
            ComparisonRun(base.model_copy(update={"max_cost_usd": expected / 2}), pipeline).check()
        # under the expected cost but not the worst case: it starts, and stops before the cap
        capped = base.model_copy(update={"max_cost_usd": expected * 1.01})
        run = ComparisonRun(capped, pipeline)
        result = await run.run()
    assert result["status"] == "stopped" and result["stop_reason"].startswith("cost cap")
    assert 0 < result["calls"]["done"] < 12 and result["spent_usd"] <= capped.max_cost_usd
    assert result["spent_usd"] == pytest.approx(recorded(db)["priced"][1], rel=1e-6)


async def test_unknown_models_and_unloaded_python_graders_are_refused(fake: FakeOpenAI, tmp_path: Path) -> None:
    async with Gateway.from_config(config(fake, tmp_path / "u.db")) as gw:
        pipeline = await gw.pipeline()
        with pytest.raises(SpecError, match="unknown model or route 'nope'"):
            ComparisonRun(ComparisonSpec(models=("good", "nope"), prompts=prompts()), pipeline).check()
        graded = ComparisonSpec(models=("good",), prompts=prompts(), graders=(GraderSpec.of("python:x.y:z"),))
        with pytest.raises(SpecError, match="python graders come from the CLI"):
            ComparisonRun(graded, pipeline).check()


def test_the_cli_runs_writes_json_and_html_and_names_bad_lines(fake: FakeOpenAI, tmp_path: Path) -> None:
    cfg = tmp_path / "modelyard.yaml"
    cfg.write_text(yaml.safe_dump(config(fake, tmp_path / "u.db")))
    src = tmp_path / "p.jsonl"
    src.write_text(
        "\n".join(orjson.dumps({"id": k, "prompt": t, "expected": e}).decode() for k, (t, e) in PROMPTS.items())
    )
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    cmd = [str(BIN / "modelyard"), "compare", "-c", str(cfg), "-m", "cheap,good", "-p", str(src), "-g", "exact"]
    cmd += ["--iterations", "2", "--current", "cheap", "--weights", "accuracy=1", "--json", str(out)]
    cmd += ["--html", str(page)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    result = orjson.loads(out.read_bytes())
    assert result["figures"]["good"]["accuracy"] == 0.75 and result["figures"]["cheap"]["accuracy"] == 0.5
    assert "recommend good instead of cheap: +50% accuracy" in done.stdout
    assert page.read_text().startswith("<!doctype html>")
    src.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert bad.returncode == 2 and "line 2: `prompt` must be a non-empty string" in bad.stderr
    src.write_text('{"prompt": "ok"}\n')
    refused = subprocess.run(
        [*cmd, "--max-cost", "0.0000001"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert refused.returncode == 2 and "expected to cost" in refused.stderr
