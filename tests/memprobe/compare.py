"""Compare two of the probe's tracemalloc snapshots: ``python -m tests.memprobe.compare A B [N]``.

Prints the total traced in each, then the N (default 25) tracebacks whose memory grew most."""

from __future__ import annotations

import sys
import tracemalloc


def main(argv: list[str]) -> None:
    a, b = (tracemalloc.Snapshot.load(p) for p in argv[:2])
    top = int(argv[2]) if len(argv) > 2 else 25
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    ]
    a, b = a.filter_traces(ignore), b.filter_traces(ignore)
    size = [sum(s.size for s in snap.statistics("filename")) / 2**20 for snap in (a, b)]
    print(f"traced: {size[0]:.2f} MB -> {size[1]:.2f} MB ({size[1] - size[0]:+.2f} MB)")
    for stat in b.compare_to(a, "traceback")[:top]:
        print(f"\n{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks (now {stat.size / 1024:.1f} KiB)")
        for line in stat.traceback.format(limit=8):
            print("   ", line)


if __name__ == "__main__":
    main(sys.argv[1:])
