"""The shipped prompt classifier (#17 point 4): its weights load, its figures are in range and
consistent, the task tagger follows its documented rules, and ``modelyard classify`` works end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.classify.features import DENSE, extract, last_paragraph
from modelyard.classify.model import DEFAULT_TIERS, Classification, Classifier, ClassifierError
from modelyard.classify.tagger import TASKS, tag
from tests.helpers import BIN, ROOT


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.load()


def test_the_shipped_weights_say_what_they_were_trained_on(clf: Classifier) -> None:
    meta = clf.meta
    assert meta["strong"] == "gpt-4-1106-preview"
    assert meta["cheap"] == "mistralai/mistral-7b-chat"
    assert "RouterBench" in meta["trained_on"]
    assert meta["train_rows"] > 2000


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=3000))
def test_any_text_gets_figures_in_range(text: str) -> None:
    clf = Classifier.load()
    c = clf.classify(text)
    assert 0.0 <= c.complexity <= 1.0
    assert 0.0 < c.p_hard < 1.0
    assert c.task in TASKS
    assert clf.classify(text) == c  # deterministic


def test_complexity_is_the_rank_of_the_score(clf: Classifier) -> None:
    prompts = [
        "hi",
        "What is the capital of France?",
        "Write a function to find the longest palindromic substring of a string.",
        "Which gas do plants take in?\nA) oxygen\nB) carbon dioxide\nC) nitrogen\nD) helium\nAnswer:",
        "Prove that there are infinitely many primes, then compute the 20th prime.",
    ]
    scored = sorted((clf.score(p), clf.classify(p).complexity, clf.classify(p).p_hard) for p in prompts)
    complexities = [c for _, c, _ in scored]
    p_hards = [p for _, _, p in scored]
    assert complexities == sorted(complexities)  # monotonic in the score
    assert p_hards == sorted(p_hards)
    assert clf.rank(-1e9) == 0.0 and clf.rank(1e9) == 1.0


def test_tiers_follow_the_ceilings() -> None:
    def at(complexity: float) -> str:
        return Classification(complexity=complexity, p_hard=0.3, task="chat").tier()

    assert DEFAULT_TIERS[-1] == ("strong", 1.0)
    assert [at(0.0), at(0.5), at(0.51), at(0.8), at(0.81), at(1.0)] == [
        "cheap",
        "cheap",
        "mid",
        "mid",
        "strong",
        "strong",
    ]
    assert Classification(0.7, 0.3, "chat").tier((("small", 0.2), ("big", 1.0))) == "big"
    assert Classification(0.7, 0.3, "chat").cheap_quality == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Write a function to remove duplicates from a list.", "code"),
        ("Why does this traceback say KeyError?", "code"),
        ("What is 17 * 23?", "math"),
        ("Solve for x: 2x + 3 = 11", "math"),
        ("Extract every email address from the text below.", "extraction"),
        ("Summarize this article in one sentence.", "summarization"),
        ("Translate 'good morning' into French.", "translation"),
        ("Write a poem about the sea.", "creative"),
        ("Which is a mammal?\nA) shark\nB) whale\nC) trout", "multiple_choice"),
        ("Hello! How are you today?", "chat"),
    ],
)
def test_the_tagger_rules(text: str, task: str) -> None:
    assert tag(text) == task


def test_the_last_paragraph_is_the_question_after_the_examples() -> None:
    few_shot = "Q: 1+1?\nAnswer:\n2\n\nQ: what colour is the sky on a clear day?\nA) blue\nB) green\nAnswer:"
    assert last_paragraph(few_shot).startswith("q: what colour") or last_paragraph(few_shot).startswith(
        "Q: what colour"
    )
    f = extract(few_shot)
    assert len(f.dense) == len(DENSE) and "colour" in f.tail and "1" not in f.tail


def test_bad_weights_are_refused_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(ClassifierError, match="cannot read"):
        Classifier.load(missing)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"version": 2}')
    with pytest.raises(ClassifierError, match="version 2"):
        Classifier.load(wrong)
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "bias": 0}')
    with pytest.raises(ClassifierError, match="not a modelyard classifier"):
        Classifier.load(broken)


def run_classify(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "modelyard"), "classify", *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_cli_adds_complexity_tier_and_task(tmp_path: Path, clf: Classifier) -> None:
    src = tmp_path / "prompts.jsonl"
    lines = [
        {"id": 1, "prompt": "Write a function to reverse a linked list."},
        {"id": 2, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2+2?"}]},
    ]
    src.write_text("\n".join(orjson.dumps(x).decode() for x in lines) + "\n\n")
    out = tmp_path / "out.jsonl"
    done = run_classify(str(src), "-o", str(out), "--tiers", "low=0.3,high")
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2]
    first = clf.classify("Write a function to reverse a linked list.")
    assert rows[0]["complexity"] == first.complexity and rows[0]["task"] == "code"
    assert rows[0]["tier"] == ("low" if first.complexity <= 0.3 else "high")
    assert rows[1]["task"] == "math" and rows[1]["complexity"] == clf.classify("What is 2+2?").complexity


def test_the_cli_names_bad_lines_and_keeps_going() -> None:
    stdin = '{"prompt": "hello"}\nnot json\n{"prompt": 5}\n[1]\n{"prompt": "bye"}\n'
    done = run_classify(stdin=stdin)
    assert done.returncode == 1
    assert [orjson.loads(x)["prompt"] for x in done.stdout.splitlines()] == ["hello", "bye"]
    assert "line 2: not valid JSON" in done.stderr
    assert "line 3:" in done.stderr and "line 4:" in done.stderr
    assert "3 line(s) could not be classified" in done.stderr


def test_the_cli_refuses_bad_tiers_and_missing_files(tmp_path: Path) -> None:
    assert run_classify("--tiers", "a=0.8,b=0.5,c").returncode == 2
    assert run_classify("--tiers", "a,b").returncode == 2
    missing = run_classify(str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
