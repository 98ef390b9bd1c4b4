"""Python graders the comparison tests load by ``pkg.module:function``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def has_digit(answer: str, item: Mapping[str, Any]) -> bool:
    return any(ch.isdigit() for ch in answer)


def explodes_on_b(answer: str, item: Mapping[str, Any]) -> float:
    if item["id"] == "b":
        raise RuntimeError("this grader cannot read prompt b")
    return 1.0


def out_of_range(answer: str, item: Mapping[str, Any]) -> float:
    return 7.0
