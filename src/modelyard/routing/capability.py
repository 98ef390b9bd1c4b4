"""What a request needs of a model, and the 400 when no candidate has it (contracts: status codes).

A request asks for capabilities by what it sends: ``n > 1`` needs ``multiple_choices``, ``tools``
needs ``tools``, an image part needs ``vision``, ``response_format: json_schema`` needs
``json_schema``, an embeddings request needs ``embeddings``.  Candidates without one are left
out of the plan (they could only fail); when none is left, the answer is a 400 naming the
parameter and the models that lack it, never a retryable 5xx.  The capabilities themselves are
``models.<name>.capabilities`` (:mod:`modelyard.config.capabilities`), precomputed per deployment.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelyard.errors import InvalidRequestError
from modelyard.routing.deployment import Deployment
from modelyard.types import ChatRequest

__all__ = ["EMBEDDING_NEEDS", "Needs", "chat_needs", "keep_capable"]

#: capability -> the request parameter that asks for it (for the 400's ``param``)
Needs = dict[str, str]


def chat_needs(req: ChatRequest) -> Needs:
    needs: Needs = {}
    if req.n is not None and req.n > 1:
        needs["multiple_choices"] = "n"
    if req.tools:
        needs["tools"] = "tools"
    if req.response_format is not None and req.response_format.type == "json_schema":
        needs["json_schema"] = "response_format"
    for m in req.messages:
        if isinstance(m.content, list) and any(p.type == "image" for p in m.content):
            needs["vision"] = "messages"
            break
    return needs


EMBEDDING_NEEDS: Needs = {"embeddings": "model"}

_WHAT = {
    "multiple_choices": "more than one choice (n > 1)",
    "tools": "tools",
    "json_schema": "a JSON schema response_format",
    "vision": "images",
    "embeddings": "embeddings",
}


def keep_capable(candidates: Sequence[Deployment], needs: Needs) -> list[Deployment]:
    """The candidates that have every capability the request needs; 400 when there is none."""
    if not needs:
        return list(candidates)
    kept = [d for d in candidates if all(c in d.capabilities for c in needs)]
    if kept or not candidates:
        return kept
    # name a capability no candidate has; else (each is somewhere, no one model has all) the first
    nowhere = [(c, p) for c, p in needs.items() if not any(c in d.capabilities for d in candidates)]
    capability, param = nowhere[0] if nowhere else next(iter(needs.items()))
    lacking = [d.name for d in candidates if capability not in d.capabilities]
    raise InvalidRequestError(
        f"no model of this route serves {_WHAT.get(capability, capability)}: {', '.join(lacking)} "
        f"{'does' if len(lacking) == 1 else 'do'} not (models.<name>.capabilities.{capability}); "
        f"change '{param}' or use a route with a model that can",
        param=param,
        code="unsupported_parameter",
    )
