"""Per-model lifecycle settings for local models: keep_alive, load timeout, preload.

A model's settings come from its provider's config, overridden by the model's own config
(``models.<name>.keep_alive`` beats ``providers.<p>.keep_alive``).  ``keep_alive`` is read the
way Ollama reads it: a number is seconds, a string is a Go duration (``"30m"``, ``"90s"``,
``"1h30m"``, ``"300ms"``) or a number written as a string; ``0`` unloads after each use and a
negative value (``-1``) keeps the model loaded for ever.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelyard.config.schema import LocalProviderConfig, ModelConfig
from modelyard.errors import ConfigError

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "ModelSettings",
    "keep_alive_for_ollama",
    "merge_settings",
    "model_settings",
    "parse_keep_alive",
    "provider_settings",
]

log = logging.getLogger("modelyard.local")

#: how long an idle local model stays loaded when neither the model nor the provider says
DEFAULT_KEEP_ALIVE_S = 30 * 60.0

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_keep_alive(value: str | int | float | None, *, default: float = DEFAULT_KEEP_ALIVE_S) -> float:
    """Seconds a model stays loaded when idle: ``math.inf`` for never unload, ``0`` for unload after each use.

    Raises ValueError for a string that is neither a number nor a Go duration.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration such as '30m' or a number of seconds, not a boolean")
    if isinstance(value, int | float):
        return math.inf if value < 0 else float(value)
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return math.inf if number < 0 else number
    negative = text.startswith("-")
    body = text.lstrip("+-")
    total, pos = 0.0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use a number of seconds or a Go duration such as '30m'")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise ValueError(f"invalid duration {value!r}")
    return math.inf if negative else total


def keep_alive_for_ollama(seconds: float) -> int | float:
    """A keep_alive in seconds as Ollama reads it in a request body (-1: for ever)."""
    if math.isinf(seconds):
        return -1
    return int(seconds) if seconds == int(seconds) else seconds


@dataclass(slots=True, frozen=True)
class ModelSettings:
    """How the lifecycle manager treats one local model."""

    #: idle seconds before the model is unloaded (inf: never; 0: after each use)
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    #: longest wait for a load before the request fails with UpstreamTimeoutError(phase="load")
    load_timeout_s: float | None = None
    #: load when the manager starts
    preload: bool = False


def _keep_alive(value: str | int | None, path: str, default: float) -> float:
    try:
        return parse_keep_alive(value, default=default)
    except ValueError as exc:
        raise ConfigError(str(exc), path=path) from None


def provider_settings(name: str, config: LocalProviderConfig) -> ModelSettings:
    """The defaults for every model of a provider. Raises ConfigError for a bad ``keep_alive``."""
    return ModelSettings(
        keep_alive_s=_keep_alive(config.keep_alive, f"providers.{name}.keep_alive", DEFAULT_KEEP_ALIVE_S)
    )


def model_settings(name: str, config: ModelConfig, defaults: ModelSettings) -> ModelSettings:
    """A model's settings: its own values over the provider's defaults."""
    return ModelSettings(
        keep_alive_s=_keep_alive(config.keep_alive, f"models.{name}.keep_alive", defaults.keep_alive_s),
        load_timeout_s=config.load_timeout_s if config.load_timeout_s is not None else defaults.load_timeout_s,
        preload=config.preload or defaults.preload,
    )


def merge_settings(items: Iterable[ModelSettings]) -> ModelSettings:
    """One setting for several configured models that share an upstream model.

    The model stays loaded as long as the longest keep_alive asks, loads at start if any of them
    says preload, and waits for a load no longer than the shortest load timeout.
    """
    items = list(items)
    timeouts = [s.load_timeout_s for s in items if s.load_timeout_s is not None]
    return ModelSettings(
        keep_alive_s=max(s.keep_alive_s for s in items),
        load_timeout_s=min(timeouts) if timeouts else None,
        preload=any(s.preload for s in items),
    )
