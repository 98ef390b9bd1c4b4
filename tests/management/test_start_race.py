"""Workers that start together on a fresh database (``modelyard serve --workers N``) all start.

Each worker imports the config file as a revision at start-up.  On a fresh database, or after the
file changed, they read "no revision (or an older one) is active" together and then each tries to
store the same document: the first write wins and the others used to fail the whole start with
``StaleRevisionError`` ("a worker failed to start"), which `make bench` hit with ``--workers 2``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from modelyard.gateway.services import Services
from modelyard.server.factory import build_gateway
from modelyard.server.state import AppState

MASTER = "sk-master-start-race-0123456789"


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "modelyard.yaml"
    doc = {
        "server": {"host": "127.0.0.1", "port": port, "master_key": MASTER},
        "database": f"sqlite:///{tmp_path / 'modelyard.db'}",
        "usage": {"spill_path": str(tmp_path / "spill.jsonl")},
        "providers": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}},
        "models": {"m1": {"provider": "up", "model": "gpt-4o-mini"}},
        "routes": {"main": {"models": ["m1"]}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


async def _start_together(path: Path, n: int) -> list[AppState]:
    states = [build_gateway(path) for _ in range(n)]
    for state in states:
        state.services = await Services.start(state.holder.current.config, lambda s=state: s.holder.current)
    await asyncio.gather(*(state.start_manager() for state in states))
    return states


async def _stop(states: list[AppState]) -> None:
    for state in states:
        await state.stop_manager()
        if state.services is not None:
            await state.services.aclose()


async def test_workers_starting_together_on_a_fresh_database_all_start(tmp_path: Path) -> None:
    states = await _start_together(_config(tmp_path, 4000), 3)
    try:
        revisions = {s.manager.revision.id for s in states if s.manager is not None and s.manager.revision}
        assert len(revisions) == 1 and all(s.manager is not None for s in states)
        stored = await states[0].services.revisions.list()  # type: ignore[union-attr]
        assert len(stored) == 1  # one import of the one document, not one per worker
    finally:
        await _stop(states)


async def test_workers_restarting_together_after_the_file_changed_all_run_it(tmp_path: Path) -> None:
    await _stop(await _start_together(_config(tmp_path, 4000), 1))
    states = await _start_together(_config(tmp_path, 4001), 2)  # the file changed while they were down
    try:
        assert all(s.holder.current.config.server.port == 4001 for s in states)
        ids = {s.manager.revision.id for s in states if s.manager is not None and s.manager.revision}
        assert len(ids) == 1
        assert len(await states[0].services.revisions.list()) == 2  # type: ignore[union-attr]
    finally:
        await _stop(states)
