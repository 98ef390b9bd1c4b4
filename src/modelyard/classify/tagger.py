"""The rule-based task tagger: what kind of work a prompt asks for.

It is a documented set of rules (docs/routing.md), not a learned model: the first rule that
matches names the task.  The tags: ``code``, ``math``, ``extraction``, ``summarization``,
``translation``, ``creative``, ``multiple_choice`` and ``chat`` (nothing else matched).
"""

from __future__ import annotations

import re

__all__ = ["TASKS", "tag"]

TASKS: tuple[str, ...] = (
    "code",
    "math",
    "extraction",
    "summarization",
    "translation",
    "creative",
    "multiple_choice",
    "chat",
)

_I = re.IGNORECASE | re.MULTILINE
#: (task, pattern) in the order they are tried; patterns read the last 4,000 characters
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "code",
        re.compile(
            r"```|\bdef \w+\(|\bfunction\s*\w*\(|\bclass \w+[:({]|#include\b|\bimport \w+|"
            r"\b(?:python|javascript|typescript|java|golang|rust|c\+\+|sql|bash|regex|html|css)\b|"
            r"\bwrite (?:a |an )?(?:python )?(?:function|program|script|method|query)\b|"
            r"\b(?:stack ?trace|traceback|compile error|segfault|unit tests?)\b",
            _I,
        ),
    ),
    (
        "math",
        re.compile(
            r"\b(?:solve|calculate|compute|evaluate|simplify|integral|derivative|equation|"
            r"probability|how many|how much|what is \d|prove that)\b|\d\s*[-+*/^=]\s*\d|\\frac|\\sqrt",
            _I,
        ),
    ),
    (
        "extraction",
        re.compile(
            r"\b(?:extract|list (?:all|every)|find all|pull out|parse)\b|\bas (?:json|a table)\b|"
            r"\bfrom the (?:following|text|document|passage) (?:give|list|return|extract)",
            _I,
        ),
    ),
    ("summarization", re.compile(r"\b(?:summari[sz]e|summary|tl;?dr|key points|in (?:one|a few) sentences?)\b", _I)),
    (
        "translation",
        re.compile(r"\btranslat(?:e|ion)\b|\binto (?:english|french|german|spanish|chinese|japanese)\b", _I),
    ),
    (
        "creative",
        re.compile(r"\bwrite (?:a |an )?(?:story|poem|song|haiku|limerick|essay|slogan|tweet|joke)\b|\bimagine\b", _I),
    ),
    ("multiple_choice", re.compile(r"^\s*\(?[A-Da-d][).]\s+\S.*\n\s*\(?[A-Da-d][).]\s+\S", _I)),
)


def tag(text: str) -> str:
    """The task a prompt asks for (the first matching rule; ``chat`` when none matches)."""
    tail = text[-4000:]
    for task, pattern in _RULES:
        if pattern.search(tail):
            return task
    return "chat"
