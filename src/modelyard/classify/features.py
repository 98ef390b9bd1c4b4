"""A prompt's features, shared by the shipped classifier and its training script.

Three bags of words, read through a vocabulary (unknown words weigh nothing): the words of the
whole prompt (``w``), the words of its last paragraph (``t``, the question after any few-shot
examples) and that paragraph's word pairs (``b``); plus a few dense figures (length, digits,
paragraphs, the tagged task).  Pure Python: the request path pays about a microsecond per
hundred characters (``make bench`` measures it).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

from modelyard.classify.tagger import TASKS, tag

__all__ = ["DENSE", "Features", "extract", "last_paragraph"]

#: words and single punctuation marks, lower case
_TOKEN = re.compile(r"[a-z0-9_]+|[^\sa-z0-9_]")
#: the dense features, in order (the model stores a mean and a scale for each)
DENSE: tuple[str, ...] = (
    "log_chars",
    "log_tail_words",
    "tail_digit_share",
    "log_lines",
    "log_paragraphs",
    "tail_mean_word_len",
    *(f"task_{t}" for t in TASKS),
)
#: the longest text read for the whole-prompt words: its start and its end
_HEAD_CHARS = 6000
_TAIL_CHARS = 2000


@dataclass(slots=True, frozen=True)
class Features:
    words: frozenset[str]
    tail: frozenset[str]
    pairs: frozenset[str]
    dense: tuple[float, ...]
    task: str


def last_paragraph(text: str) -> str:
    """The last paragraph with some substance (the question after any examples), at most 2,000 characters."""
    stripped = text.rstrip()
    cut = stripped.rfind("\n\n")
    while cut > 0 and len(stripped) - cut < 40:  # "Answer:" alone is not the question
        cut = stripped.rfind("\n\n", 0, cut)
    tail = stripped[cut + 2 :] if cut >= 0 else stripped
    return tail[-_TAIL_CHARS:]


def extract(text: str) -> Features:
    """The features of a prompt (the text of its messages, joined)."""
    lower = text.lower()
    body = lower if len(lower) <= 2 * _HEAD_CHARS else lower[:_HEAD_CHARS] + "\n" + lower[-_HEAD_CHARS:]
    words = _TOKEN.findall(body)
    tail_text = last_paragraph(lower)
    tail = _TOKEN.findall(tail_text)
    pairs = frozenset(f"{a} {b}" for a, b in itertools.pairwise(tail))
    digits = sum(ch.isdigit() for ch in tail_text)
    task = tag(text)
    dense = (
        math.log1p(len(text)),
        math.log1p(len(tail)),
        digits / max(1, len(tail_text)),
        math.log1p(text.count("\n")),
        math.log1p(text.count("\n\n")),
        (sum(len(w) for w in tail) / len(tail)) if tail else 0.0,
        *(1.0 if t == task else 0.0 for t in TASKS),
    )
    return Features(frozenset(words), frozenset(tail), pairs, dense, task)
