"""The rule for a model or route name that comes from a request.

A name is 1-256 characters from ``A-Z a-z 0-9 . _ : / @ + -``.  Split on ``:`` (provider,
model, tag...) and each part on ``/``: no part may be ``.`` or ``..``, and a part with a ``/``
has no empty segment (so no leading ``/``, no ``//``, no trailing ``/``).  This accepts every
model id the supported APIs use (``ollama:llama3:8b-instruct-q4_K_M``,
``meta-llama/Llama-3.1-8B-Instruct``, ``ft:gpt-4o-mini-2024-07-18:acme::abc123``,
``anthropic.claude-3-5-sonnet-20241022-v2:0``, ``claude-3-5-sonnet@20240620``,
``models/gemini-2.5-flash``) and refuses what could address a file or another URL path
(``local:/etc/passwd``, ``local:../x``, ``local:~/x``, ``gem:../../x``), split a header (CR, LF,
NUL), fail to encode in a header (non-ASCII) or blow up a header, a metric label or a usage
record (length).

It is checked where a name enters (the wire parser, the routing options, ``Runtime.resolve`` for
ad-hoc ``provider:model``), so nothing that fails it reaches an upstream, a metric, a response
header or a usage record.  The error never echoes the name itself.
"""

from __future__ import annotations

import re

from modelyard.errors import InvalidRequestError

__all__ = ["MAX_MODEL_NAME", "check_model_name", "model_name_problem"]

MAX_MODEL_NAME = 256

_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/@+-")
_NAME = re.compile(r"[A-Za-z0-9._:/@+\-]+")
_DOTS = frozenset({".", ".."})
_RULE = "a model name is 1-256 characters from A-Z a-z 0-9 . _ : / @ + -"


def model_name_problem(name: object) -> str | None:
    """Why ``name`` is not an acceptable model or route name, or None when it is."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "expected a non-empty string"
    if len(name) > MAX_MODEL_NAME:
        return f"is {len(name)} characters long; {_RULE}"
    if _NAME.fullmatch(name) is None:
        bad = next(c for c in name if c not in _ALLOWED)
        shown = repr(bad) if bad.isprintable() and bad.isascii() else f"U+{ord(bad):04X}"
        return f"contains the character {shown}; {_RULE}"
    if "." in name or "/" in name:
        for part in name.split(":"):
            if part in _DOTS:
                return "has a '.' or '..' segment, which is not allowed in a model name"
            if "/" not in part:
                continue
            for segment in part.split("/"):
                if segment in _DOTS:
                    return "has a '.' or '..' path segment, which is not allowed in a model name"
                if not segment:
                    return "has an empty path segment (a leading, trailing or double '/'), which is not allowed"
    return None


def check_model_name(name: object, param: str = "model") -> str:
    """``name`` if it is acceptable, else InvalidRequestError (400) naming ``param``."""
    problem = model_name_problem(name)
    if problem is not None:
        raise InvalidRequestError(f"Invalid '{param}': {problem}", param=param, code="invalid_value")
    assert isinstance(name, str)
    return name
