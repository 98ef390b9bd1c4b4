"""``modelyard serve`` says at start what each process keeps to itself without shared state (#18)."""

from __future__ import annotations

from modelyard.cli_serve import _per_process_warning
from modelyard.config import parse_config


def test_several_processes_without_redis_are_warned_about() -> None:
    sqlite = parse_config({})
    postgres = parse_config({"database": "postgresql://db/gw"})
    shared = parse_config({"database": "postgresql://db/gw", "state": "redis://redis:6379/0"})
    assert _per_process_warning(sqlite, 1) is None  # one process: nothing to share
    warning = _per_process_warning(sqlite, 4)
    assert warning is not None and "each of the 4 workers" in warning and "state: redis://" in warning
    replicas = _per_process_warning(postgres, 1)
    assert replicas is not None and "each replica" in replicas
    assert _per_process_warning(shared, 4) is None
