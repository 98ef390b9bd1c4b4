"""Relative paths in a config resolve against the config file's directory (contracts.md).

``database`` (a SQLite file), ``usage.spill_path``, a ``llamacpp`` provider's ``models_dir`` and
an auto route's ``auto.classifier`` weights:
written relative in a config file, they are taken relative to that file, so gateways started from
different folders with the same config share one database, and gateways with different configs in
one folder do not mix their figures.  A config without a file (the environment defaults, a dict
given to the SDK) resolves against the working directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from modelyard.config.schema import Config, LlamaCppProviderConfig

__all__ = ["resolve_paths", "sqlite_file"]

_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)(.*)$")


def sqlite_file(database: str) -> Path | None:
    """The file of a SQLite database URL (None for other databases and ``:memory:``)."""
    m = _SQLITE.match(database)
    if m is None or not m.group(2) or m.group(2).startswith(":memory:"):
        return None
    return Path(m.group(2).split("?", 1)[0])


def _absolute(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def resolve_paths(cfg: Config, base: Path) -> Config:
    """``cfg`` with its relative paths made absolute against ``base``."""
    update: dict[str, object] = {}
    m = _SQLITE.match(cfg.database.url)
    if m is not None and m.group(2) and not m.group(2).startswith((":memory:", "/")):
        rest = m.group(2)
        path, sep, query = rest.partition("?")
        url = m.group(1) + _absolute(path, base) + sep + query
        update["database"] = cfg.database.model_copy(update={"url": url})
    if not Path(cfg.usage.spill_path).expanduser().is_absolute():
        update["usage"] = cfg.usage.model_copy(update={"spill_path": _absolute(cfg.usage.spill_path, base)})
    providers = dict(cfg.providers)
    changed = False
    for name, p in cfg.providers.items():
        if isinstance(p, LlamaCppProviderConfig) and p.models_dir and not Path(p.models_dir).expanduser().is_absolute():
            providers[name] = p.model_copy(update={"models_dir": _absolute(p.models_dir, base)})
            changed = True
    if changed:
        update["providers"] = providers
    routes = dict(cfg.routes)
    for name, r in cfg.routes.items():
        weights = r.auto.classifier if r.auto is not None else None
        if r.auto is not None and weights and not Path(weights).expanduser().is_absolute():
            auto = r.auto.model_copy(update={"classifier": _absolute(weights, base)})
            routes[name] = r.model_copy(update={"auto": auto})
    if routes != cfg.routes:
        update["routes"] = routes
    return cfg.model_copy(update=update) if update else cfg
