"""The usage writer's spill file: an append-only JSONL of usage records waiting for the database.

One line per request: ``{"r": <RequestRecord>, "a": [<AttemptRecord>, ...]}`` (orjson).  Every
append is one ``write`` followed by ``fsync``.  To replay, the file is first renamed to
``<path>.replaying`` (atomically), so new spills go to a fresh file while the old one is read; the
replaying file is deleted only after all of it is in the database.  A crash mid-replay leaves it in
place and the next replay starts it again from the top: the database skips rows it already has.
Lines that cannot be decoded (a write torn by a crash) and records the database refuses go to
``<path>.rejected`` for a human to look at.

Everything here does blocking file I/O: call it from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from modelyard.storage.records import AttemptRecord, RequestRecord, record_from_dict

__all__ = ["Chunk", "Item", "ReplayReader", "SpillFile", "decode_line", "encode_items"]

Item = tuple[RequestRecord, Sequence[AttemptRecord]]

_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NAIVE_UTC


def encode_items(items: Sequence[Item]) -> bytes:
    """JSONL for the given items (CPU only)."""
    return b"".join(orjson.dumps({"r": r, "a": list(a)}, option=_OPTIONS) for r, a in items)


def decode_line(line: bytes) -> Item:
    """One item back from its line; raises ValueError (or TypeError/KeyError) when the line is damaged."""
    data: Any = orjson.loads(line)
    request = record_from_dict(RequestRecord, data["r"])
    attempts = [record_from_dict(AttemptRecord, a) for a in data["a"]]
    return request, attempts


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` durably, after a newline if the file ends in a torn line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path)


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    count = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    #: where the chunk starts (to read it again after a failed insert)
    offset: int
    lines: list[bytes]
    at_end: bool


class ReplayReader:
    """Reads the claimed ``.replaying`` file in chunks, remembering where it is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] = path.open("rb")

    def seek(self, offset: int) -> None:
        self._fh.seek(offset)

    def read(self, n: int) -> Chunk:
        """Up to ``n`` non-empty lines (fewer at the end of the file)."""
        offset = self._fh.tell()
        lines: list[bytes] = []
        while len(lines) < n:
            line = self._fh.readline()
            if not line:
                break
            if line.strip():
                lines.append(line)
        at_end = self._fh.tell() >= os.fstat(self._fh.fileno()).st_size
        return Chunk(offset, lines, at_end)

    def close(self) -> None:
        self._fh.close()

    def finish(self) -> None:
        """All of it is in the database: delete the file."""
        self._fh.close()
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path)


class SpillFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.replaying_path = self.path.with_name(self.path.name + ".replaying")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")

    def append(self, data: bytes) -> None:
        _append(self.path, data)

    def reject(self, data: bytes) -> None:
        _append(self.rejected_path, data)

    def pending(self) -> int:
        """Lines waiting to be replayed (both files)."""
        return _count_lines(self.replaying_path) + _count_lines(self.path)

    def claim(self) -> ReplayReader | None:
        """The file to replay next: a ``.replaying`` file left from before, else the spill file renamed."""
        if not self.replaying_path.exists():
            if not self.path.exists():
                return None
            if self.path.stat().st_size == 0:
                self.path.unlink(missing_ok=True)
                return None
            os.replace(self.path, self.replaying_path)
            _fsync_dir(self.path)
        return ReplayReader(self.replaying_path)
