"""modelyard benchmark harness: floor (direct to the mock), ceiling (minimal proxy), modelyard and LiteLLM,
side by side in one run, repeats interleaved round-robin so drift cancels, medians reported.

    make bench                                   # full matrix (about 35 min with LiteLLM)
    make bench ARGS="--quick"                    # smoke run, about 7 min (LiteLLM starts slowly)
    .venv/bin/python bench/run.py --targets direct,minimal,modelyard --connections 1,64 --modes stream --delays 0 \
        --duration 3 --warmup 1 --repeats 1 --no-docs --skip-litellm    # + long, translated and slow-reader cells
    .venv/bin/python bench/run.py --quick --targets direct,minimal --skip-litellm
    .venv/bin/python bench/run.py --soak 10 --repeats 0 --targets modelyard
    .venv/bin/python bench/run.py --targets modelyard,base --skip-litellm --connections 1,64 --delays 0 \
        --modes json,stream --repeats 3 --no-docs       # regression check against --base-ref (wave2-base)
    .venv/bin/python bench/run.py --targets direct,minimal --ladder --skip-litellm --connections 64 --delays 0 \
        --no-long --no-translated --no-slow-readers --no-docs     # what each feature of the bench config costs

Writes bench/results/<timestamp>.json and bench/results/latest.md and refreshes the block between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` in docs/performance.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs
import report
import sysinfo
from targets import (
    ALL_TARGETS,
    BENCH,
    BUILD,
    DEFAULT_BASE_REF,
    LADDER,
    LITELLM_KEY,
    MODELYARD_MASTER_KEY,
    WRITER_TARGETS,
    Target,
    base_from_src,
    cold_start_samples,
    drain_writer,
    ensure_litellm,
    is_modelyard,
    launch,
    measure_idle,
    post,
    prepare_base,
    working_tree,
)

import classify
import compare as compare_bench

MEDIAN_FIELDS = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "target_cpu_ms_per_req",
    "settled_cpu_ms_per_req",
    "catchup_s",
    "target_cpu_util",
    "loadgen_cpu_ms_per_req",
    "machine_busy",
    "mock_cpu_util",
    "other_cores",
)
SETTINGS = (
    *("quick", "duration", "warmup", "repeats", "engine", "chunks", "chunk_delay_ms", "timeout", "soak"),
    *("long_chunks", "long_connections", "translated_chunks", "translated_connections", "no_slow_readers"),
    *("slow_streams", "slow_duration", "slow_rate", "slow_chunks"),
)
START_TIMEOUT = {"minimal": 20.0, "modelyard": 30.0, "base": 30.0, "litellm": 240.0}


#: the targets of the long-stream cell (the bar compares modelyard with the minimal proxy; base for regressions)
LONG_TARGETS = ("direct", "minimal", "modelyard", "base")
#: the target of the translated-streams cells: modelyard with bench/translated.bench.yaml
TRANSLATED = "modelyard-tr"
#: the connections of the cells the feature ladder (``--ladder``) runs in
LADDER_CONNS = 64
#: its routes, one per upstream wire format (the load generator's "model")
ROUTES = ("openai", "anthropic", "gemini")


@dataclass(frozen=True)
class Cell:
    stream: bool
    delay_ms: int
    conns: int
    chunks: int = 0  # 0: --chunks; else this cell's own stream length (shown in its key)
    model: str = ""  # the load generator's "model" (a route of modelyard-tr); "" = "bench"
    only: tuple[str, ...] = ()  # the targets this cell runs on; () = the main matrix (every target but -tr)

    @property
    def key(self) -> str:
        key = f"{'stream' if self.stream else 'json'}/{self.delay_ms}ms/c{self.conns}"
        key += f"/{self.chunks}ch" if self.chunks else ""
        return key + (f"/{self.model}" if self.model else "")

    def runs_on(self, name: str) -> bool:
        if name in LADDER:  # the feature ladder: the main matrix's cells at 64 connections, no upstream delay
            return not self.only and self.conns == LADDER_CONNS and self.delay_ms == 0
        return name in self.only if self.only else name != TRANSLATED


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_cells(args: argparse.Namespace) -> list[Cell]:
    """The main matrix, then the long-stream cells, then the translated-streams cells (each skippable)."""
    if args.quick and not args.connections:
        cells = [Cell(False, 0, 1), Cell(True, 0, 1), Cell(False, 0, 64), Cell(True, 0, 64), Cell(False, 50, 256)]
    else:
        conns = _ints(args.connections or "1,16,64,256")
        delays = _ints(args.delays)
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        cells = [Cell(m == "stream", d, c) for d in delays for m in modes for c in conns]
    if args.long_chunks > 0:
        only = tuple(n for n in args.names if n in LONG_TARGETS)
        cells += [Cell(True, 0, c, chunks=args.long_chunks, only=only) for c in _ints(args.long_connections)]
    if TRANSLATED in args.names:
        for ch in _ints(args.translated_chunks):
            for c in _ints(args.translated_connections):
                cells += [Cell(True, 0, c, chunks=ch, model=r, only=(TRANSLATED,)) for r in ROUTES]
    return cells


def set_mock(port: int, **cfg: float) -> None:
    status, body = post(port, json.dumps(cfg).encode(), "", path="/_mock/config")
    if status != 200:
        raise RuntimeError(f"mock config failed: {status} {body[:200]!r}")


def run_loadgen(t: Target, cell: Cell, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH / "loadgen.py"), "--url", t.url, "-c", str(cell.conns)]
    cmd += ["-d", str(args.duration), "-w", str(args.warmup), "--pid", str(t.pid), "--api-key", t.api_key]
    cmd += ["--engine", args.engine, "--timeout", str(args.timeout), "--aux-pid", str(args.mock_pid)]
    cmd += ["--stream"] if cell.stream else []
    cmd += ["--model", cell.model] if cell.model else []
    hard = args.warmup + args.duration + min(args.timeout, 5.0) + 30.0
    with (logdir / "loadgen.log").open("ab") as err:
        err.write(f"\n# {shlex.join(cmd)}\n".encode())
        err.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    tree = procs.process_tree(t.pid)
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            if time.monotonic() - t0 > hard:
                procs.stop(proc)
                return {"error": f"load generator did not finish within {hard:.0f}s"}
            rss = procs.rss_bytes(tree) / 2**20
            t.peak_rss_mb = round(max(t.peak_rss_mb or 0.0, rss), 1)
            time.sleep(0.5)
        out = proc.stdout.read().decode() if proc.stdout else ""
    finally:
        procs.stop(proc)
    try:
        return dict(json.loads(out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": f"load generator failed (exit {proc.returncode}); see {logdir / 'loadgen.log'}"}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1].get("error", "no runs") if runs else "no runs"}
    out: dict[str, Any] = {"repeats": len(good)}
    for f in MEDIAN_FIELDS:
        vals = [r[f] for r in good if r.get(f) is not None]
        out[f] = round(statistics.median(vals), 4) if vals else None
    out["errors"] = sum(int(r.get("errors", 0)) for r in good)
    out["requests"] = sum(int(r.get("requests", 0)) for r in good)
    kinds: dict[str, int] = {}
    for r in good:
        for k, v in (r.get("error_kinds") or {}).items():
            kinds[k] = kinds.get(k, 0) + int(v)
    out["error_kinds"] = kinds
    return out


def start_targets(out: list[Target], args: argparse.Namespace, mock: Target, logdir: Path) -> None:
    """Start every target in ``args.names`` (appended to ``out`` as soon as they exist, for cleanup)."""
    upstream = f"http://127.0.0.1:{mock.port}"
    extra = shlex.split(args.modelyard_args)
    for name in args.names:
        if name == "direct":
            out.append(mock)
            continue
        t = Target(name, workers=2 if name.endswith("-w2") else 1)
        out.append(t)
        if is_modelyard(name):
            t.api_key = MODELYARD_MASTER_KEY
        if name.startswith("base"):
            if args.base_error:
                t.fail(args.base_error)
                log(f"{name}: FAILED: {t.reason}")
                continue
            t.src = Path(args.base_info["src"])
        if name.startswith("litellm"):
            t.api_key = LITELLM_KEY
            if args.litellm_unavailable:
                t.status, t.reason = "unavailable", args.litellm_unavailable
                continue
        timeout = start_timeout(name)
        if is_modelyard(name) and args.cold_starts > 0 and name != TRANSLATED and name not in LADDER:
            log(f"{name}: {args.cold_starts} cold-start samples")
            cold_start_samples(t, upstream, logdir, extra, args.cold_starts, timeout)
        log(f"starting {name}")
        took = launch(t, upstream, logdir, extra, timeout)
        if took is None:
            log(f"{name}: FAILED: {t.reason}")
            continue
        t.cold_start_s.insert(0, round(took, 3))
        t.status = "ok"
        measure_idle(t)
        log(f"{name}: up in {took:.2f}s, idle RSS {t.idle_rss_mb} MB, idle CPU {t.idle_cpu_pct}%")


def revive(t: Target, where: str, args: argparse.Namespace, mock: Target, logdir: Path) -> bool:
    """A target died: record how (exit code, log tail) and start it again (at most 3 times).

    Deaths are reported, never hidden: a crash under load is a finding. An exit after a graceful
    "Shutting down" with -15/0 means something outside sent SIGTERM (e.g. a broad pkill on a shared machine).
    """
    rc = t.proc.returncode if t.proc is not None else None
    t.deaths.append({"when": where, "returncode": rc, "log": procs.tail(t.log, 8) if t.log else ""})
    log(f"{t.name}: died {where} (exit {rc}); log tail: {' / '.join(t.deaths[-1]['log'].splitlines()[-3:])}")
    if t.proc is not None:
        procs.stop(t.proc)
    if len(t.deaths) > 3:
        t.fail(f"died {len(t.deaths)} times; last {where}, exit {rc}")
        return False
    took = launch(t, f"http://127.0.0.1:{mock.port}", logdir, shlex.split(args.modelyard_args), start_timeout(t.name))
    if took is None:
        log(f"{t.name}: restart failed: {t.reason}")
        return False
    log(f"{t.name}: restarted in {took:.2f}s")
    return True


def settle(t: Target, res: dict[str, Any]) -> None:
    """Wait for ``t``'s usage writer to catch up after a window; add ``settled_cpu_ms_per_req`` (the
    window's CPU plus the catch-up's, per request of the window) and ``catchup_s`` to ``res``.  The
    next window then starts with nothing left over from this one."""
    drained = drain_writer(t)
    done = int(res.get("requests", 0)) + int(res.get("errors", 0))
    cpu = res.get("target_cpu_ms_per_req")
    if drained is None or "error" in res or cpu is None or not done:
        return
    res["settled_cpu_ms_per_req"] = round(cpu + drained["catchup_cpu_s"] * 1000 / done, 4)
    res["catchup_s"] = round(drained["catchup_s"], 2)


def start_timeout(name: str) -> float:
    return START_TIMEOUT[name.split("-")[0]]


def alone(t: Target, targets: list[Target]) -> contextlib.AbstractContextManager[None]:
    """Pause (SIGSTOP) every other started target while ``t`` is measured, so idle neighbours cost nothing."""
    return procs.paused(o.proc for o in targets if o is not t and o.proc is not None and o.ok)


Runs = dict[str, dict[str, list[dict[str, Any]]]]


def run_matrix(targets: list[Target], cells: list[Cell], args: argparse.Namespace, mock: Target, logdir: Path) -> Runs:
    """Fill ``args.runs`` (kept on args so an interrupted run still reports what it measured)."""
    runs: Runs = args.runs
    for c in cells:
        runs[c.key] = {t.name: [] for t in targets if c.runs_on(t.name)}
    total = args.repeats * len(cells)
    step = 0
    for rep in range(args.repeats):
        for cell in cells:
            step += 1
            chunks = cell.chunks or args.chunks
            set_mock(mock.port, delay_ms=cell.delay_ms, chunks=chunks, chunk_delay_ms=args.chunk_delay_ms)
            order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
            for t in order:
                if not t.ok or not cell.runs_on(t.name):
                    continue
                if not t.alive() and not revive(t, f"before {cell.key}", args, mock, logdir):
                    continue
                with alone(t, targets):
                    res = run_loadgen(t, cell, args, logdir)
                    if t.name in WRITER_TARGETS:
                        settle(t, res)
                runs[cell.key][t.name].append(res)
                if not t.alive():
                    revive(t, f"during {cell.key}", args, mock, logdir)
                if "error" in res:
                    log(f"[{step}/{total}] {cell.key:<16} {t.name:<13} {res['error']}")
                    continue
                ttft = f" ttft {res['ttft_p50_ms']}ms" if cell.stream else ""
                cpu = res["target_cpu_ms_per_req"]
                per_chunk = f" ({cpu / chunks * 1000:.1f}us/chunk)" if cell.stream and cpu else ""
                log(
                    f"[{step}/{total}] {cell.key:<16} {t.name:<13} {res['rps']:>8} rps  p50 {res['p50_ms']}ms "
                    f"p99 {res['p99_ms']}ms{ttft}  cpu {cpu}ms/req{per_chunk}  err {res['errors']}"
                )
    return runs


def summarize(cells: list[Cell], runs: Runs, chunks: int) -> list[dict[str, Any]]:
    return [
        {
            "cell": c.key,
            "stream": c.stream,
            "delay_ms": c.delay_ms,
            "connections": c.conns,
            "chunks": c.chunks or chunks,
            "long": bool(c.chunks) and not c.model,
            "model": c.model,
            "runs": runs[c.key],
            "median": {name: median_of(r) for name, r in runs[c.key].items() if r},
        }
        for c in cells
        if c.key in runs
    ]


def run_soak(t: Target, minutes: float, args: argparse.Namespace, mock: Target, logdir: Path) -> dict[str, Any]:
    """Memory-flat check: ``minutes`` at 64 connections, RSS of the target's tree sampled every few seconds."""
    set_mock(mock.port, delay_ms=0, chunks=args.chunks, chunk_delay_ms=0)
    dur = minutes * 60.0
    cmd = [sys.executable, str(BENCH / "loadgen.py"), "--url", t.url, "-c", "64", "-d", str(dur), "-w", "5"]
    cmd += ["--pid", str(t.pid), "--api-key", t.api_key, "--engine", args.engine]
    log(f"soak: {t.name}, {minutes} min at 64 connections")
    samples: list[tuple[float, float]] = []
    with (logdir / "loadgen.log").open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < dur + 60:
            rss = procs.rss_bytes(procs.process_tree(t.pid)) / 2**20
            samples.append((round(time.monotonic() - t0, 1), round(rss, 1)))
            time.sleep(5.0)
        out = proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else ""
    finally:
        procs.stop(proc)
    try:
        lg = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        lg = {"error": "load generator failed"}
    base_t = max(30.0, 0.1 * dur)
    after = [s for s in samples if s[0] >= base_t] or samples
    if len(after) < 2:
        return {"target": t.name, "minutes": minutes, "error": "too few samples", "samples": samples, "load": lg}
    baseline = after[0][1]
    final = statistics.median(s[1] for s in after[-3:])
    growth = (final - baseline) / baseline * 100 if baseline else None
    log(f"soak: RSS {baseline} MB -> {final} MB ({growth:+.1f}%)" if growth is not None else "soak: no RSS")
    return {
        "target": t.name,
        "minutes": minutes,
        "baseline_at_s": after[0][0],
        "baseline_rss_mb": baseline,
        "final_rss_mb": final,
        "growth_pct": round(growth, 2) if growth is not None else None,
        "samples": samples,
        "load": lg,
    }


def run_slow_readers(t: Target, args: argparse.Namespace, mock: Target, logdir: Path) -> dict[str, Any]:
    """bench/slow_readers.py against ``t``: its RSS and how far the mock got ahead of 1 KiB/s clients."""
    cmd = [sys.executable, str(BENCH / "slow_readers.py"), "--url", t.url, "--api-key", t.api_key]
    cmd += ["--mock-port", str(mock.port), "--pid", str(t.pid), "--streams", str(args.slow_streams)]
    cmd += ["--rate", str(args.slow_rate), "--duration", str(args.slow_duration), "--chunks", str(args.slow_chunks)]
    log(f"slow readers: {t.name}, {args.slow_streams} streams at {args.slow_rate} B/s for {args.slow_duration:g} s")
    with (logdir / "slow-readers.log").open("ab") as err:
        err.write(f"\n# {shlex.join(cmd)}\n".encode())
        err.flush()
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, timeout=args.slow_duration + 120)
        except subprocess.TimeoutExpired:
            return {"error": "the slow readers did not finish in time"}
    try:
        res: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"slow readers failed (exit {out.returncode}); see {logdir / 'slow-readers.log'}"}
    if "error" not in res:
        log(
            f"slow readers: {t.name} RSS {res.get('rss_before_mb')} -> peak {res.get('rss_peak_mb')} MB; per stream: "
            f"client read {res.get('client_read_bytes_per_stream')} B, upstream wrote "
            f"{res.get('upstream_written_bytes_per_stream')} B, kernel queues "
            f"{res.get('kernel_queued_bytes_per_stream')} B, "
            f"held by the gateway {res.get('gateway_held_bytes_per_stream')} B"
        )
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 cells, 1 repeat, short windows (~5 min)")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 5, quick 3)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (default 1.5, quick 1)")
    ap.add_argument("--repeats", type=int, help="interleaved repeats, medians reported (default 3, quick 1)")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"comma list from {','.join(ALL_TARGETS)}")
    ap.add_argument("--skip-litellm", action="store_true", help="leave the LiteLLM targets out")
    ap.add_argument("--no-install", action="store_true", help="do not pip-install LiteLLM if it is missing")
    ap.add_argument("--soak", type=float, default=0.0, metavar="MINUTES", help="memory-flat check at 64 connections")
    ap.add_argument("--connections", help="comma list (default 1,16,64,256)")
    ap.add_argument("--delays", default="0,50", help="upstream delays in ms, comma list (default 0,50)")
    ap.add_argument("--modes", default="json,stream", help="json,stream")
    ap.add_argument("--engine", choices=["raw", "aiohttp"], default="raw", help="load generator client")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout of the load generator")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per mock stream")
    ap.add_argument("--long-chunks", type=int, default=200, help="chunks per stream of the long-stream cells")
    ap.add_argument("--long-connections", default="1,64", help="connections of the long-stream cells (quick: 64)")
    ap.add_argument("--no-long", action="store_true", help="leave the long-stream cells out")
    ap.add_argument(
        "--translated-chunks",
        help="chunk counts of the translated-streams cells (default: --chunks,--long-chunks; quick: --long-chunks)",
    )
    ap.add_argument("--translated-connections", default="64", help="connections of the translated-streams cells")
    ap.add_argument(
        "--no-translated", action="store_true", help=f"leave the translated-streams cells (target {TRANSLATED}) out"
    )
    ap.add_argument("--no-slow-readers", action="store_true", help="leave the slow-readers cell out")
    ap.add_argument("--slow-streams", type=int, default=100, help="concurrent slow streams")
    ap.add_argument("--slow-duration", type=float, help="seconds the slow readers read (default 20, quick 10)")
    ap.add_argument("--slow-rate", type=int, default=1024, help="bytes/s each slow reader reads")
    ap.add_argument("--slow-chunks", type=int, default=2000, help="chunks of the slow readers' answer (~1.2 KB each)")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="gap between mock stream chunks")
    ap.add_argument("--cold-starts", type=int, help="extra cold-start samples for modelyard (default 3, quick 2)")
    ap.add_argument("--import-runs", type=int, help="fresh interpreters for the import time (default 9, quick 5)")
    ap.add_argument("--modelyard-args", default="", help="extra arguments for `modelyard serve` (base too)")
    ap.add_argument(
        "--base-ref",
        default=DEFAULT_BASE_REF,
        metavar="REF",
        help=f"git ref the base/base-w2 targets run (exported to bench/build/base-<sha>/; default {DEFAULT_BASE_REF})",
    )
    ap.add_argument(
        "--base-src",
        metavar="DIR",
        help="run the base/base-w2 targets from this src/ directory instead of --base-ref (a changed or "
        "compiled copy of the tree, to measure a lever side by side before writing it; implies --no-docs)",
    )
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    ap.add_argument(
        "--ladder",
        action="store_true",
        help="add the feature ladder: modelyard-master, -key, -budgets (the bench config's features one at a time; "
        f"json and stream cells at {LADDER_CONNS} connections, 0 ms)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    args.duration = args.duration if args.duration is not None else (3.0 if q else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 1.5)
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 3)
    args.cold_starts = args.cold_starts if args.cold_starts is not None else (2 if q else 3)
    args.import_runs = args.import_runs if args.import_runs is not None else (5 if q else 9)
    args.slow_duration = args.slow_duration if args.slow_duration is not None else (10.0 if q else 20.0)
    if args.no_long:
        args.long_chunks = 0
    if q and args.long_connections == "1,64":
        args.long_connections = "64"
    if args.translated_chunks is None:
        long = [args.long_chunks] if args.long_chunks > 0 else []
        args.translated_chunks = ",".join(str(c) for c in (long if q and long else [args.chunks, *long]))
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    if args.ladder:
        names += [n for n in LADDER if n not in names]
        names += [] if "modelyard" in names else ["modelyard"]  # the ladder's last step
    unknown = [n for n in names if n not in ALL_TARGETS and n not in LADDER]
    if unknown:
        ap.error(f"unknown targets {unknown}; choose from {ALL_TARGETS + tuple(LADDER)}")
    if args.skip_litellm:
        names = [n for n in names if not n.startswith("litellm")]
    if args.no_translated:
        names = [n for n in names if n != TRANSLATED]
    elif "modelyard" in names and TRANSLATED not in names and args.repeats > 0:
        names.append(TRANSLATED)
    args.names = names
    args.litellm_unavailable = ""
    args.base_error = ""
    args.base_info = {}
    args.mock_pid = 0
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = BUILD / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    cells = build_cells(args) if args.repeats > 0 else []
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "logs": str(logdir)}
    result["settings"] = {k: getattr(args, k) for k in SETTINGS}
    result["settings"]["cells"] = [c.key for c in cells]
    result["settings"]["targets"] = args.names
    log(f"logs in {logdir}; {len(cells)} cells x {args.repeats} repeats x {len(args.names)} targets")
    mock = Target("direct", port=procs.free_port(), log=logdir / "mock.log")
    mock_cmd = [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(mock.port), "--chunks", str(args.chunks)]
    targets: list[Target] = []
    mock_proc: subprocess.Popen[bytes] | None = None
    exit_code = 0
    args.runs = {}
    try:
        result["machine"] = sysinfo.machine()
        result["background_busy"] = sysinfo.background_busy(2.0)
        if result["background_busy"] > 0.15:
            log(f"WARNING: the machine is {result['background_busy']:.0%} busy before the run: figures will be noisy")
        if any(n.startswith("modelyard") for n in args.names):
            log("import time of modelyard")
            result["import_time"] = sysinfo.import_time(args.import_runs)
        if any(n.startswith("base") for n in args.names):
            result["base"] = {"ref": args.base_src or args.base_ref, "current": working_tree()}
            try:
                args.base_info = base_from_src(args.base_src) if args.base_src else prepare_base(args.base_ref)
                result["base"].update(args.base_info)
                info = args.base_info
                log(f"base: {info['ref']} ({info['sha'][:12]}), imports {info['modelyard_file']}")
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                args.base_error = f"base {args.base_ref}: {exc}"
                result["base"]["error"] = args.base_error
                log(f"WARNING: {args.base_error}")
        if any(n.startswith("litellm") for n in args.names):
            ok, reason = ensure_litellm(not args.no_install, logdir / "litellm-install.log")
            args.litellm_unavailable = "" if ok else reason
        if any(n.startswith("modelyard") for n in args.names):
            log("prompt classifier latency")
            try:
                result["classifier"] = classify.measure(400 if not args.quick else 100)
            except (OSError, ValueError) as exc:
                result["classifier"] = {"error": str(exc)}
        if any(n.startswith("modelyard") for n in args.names) and not args.quick:
            log("a comparison run at a realistic pace (4 models x 20 prompts x 3 iterations)")
            try:
                result["compare"] = asyncio.run(compare_bench.measure())
            except (OSError, ValueError, RuntimeError) as exc:
                result["compare"] = {"error": str(exc)}
        result["versions"] = sysinfo.versions()
        t0 = time.perf_counter()
        mock_proc = procs.spawn(mock_cmd, log=mock.log or logdir / "mock.log")
        mock.external_pid = args.mock_pid = mock_proc.pid
        if not procs.wait_until(lambda: sysinfo.healthy(mock.port), 15.0):
            raise RuntimeError(f"mock upstream did not start: {procs.tail(logdir / 'mock.log')}")
        mock.status, mock.cold_start_s = "ok", [round(time.perf_counter() - t0, 3)]
        measure_idle(mock, settle=0.2, window=0.5)
        start_targets(targets, args, mock, logdir)
        if cells:
            run_matrix(targets, cells, args, mock, logdir)
        if args.soak > 0:
            ok_targets = {t.name: t for t in targets if t.ok}
            soak_t = next((ok_targets[n] for n in ("modelyard", "modelyard-w2", "minimal") if n in ok_targets), None)
            if soak_t is None:
                result["soak"] = {"error": "no target to soak"}
            else:
                with alone(soak_t, targets):
                    result["soak"] = run_soak(soak_t, args.soak, args, mock, logdir)
        if (
            not args.no_slow_readers and args.repeats > 0
        ):  # last: it pins the mock's send buffer on the connections it uses
            result["slow_readers"] = {}
            for t in targets:
                if (
                    t.name in ("minimal", "modelyard")
                    and t.ok
                    and (t.alive() or revive(t, "before", args, mock, logdir))
                ):
                    with alone(t, targets):
                        result["slow_readers"][t.name] = run_slow_readers(t, args, mock, logdir)
    except KeyboardInterrupt:
        log("interrupted: stopping everything and writing partial results")
        result["interrupted"] = True
        exit_code = 130
    except (RuntimeError, OSError) as exc:
        log(f"run failed: {exc}")
        result["interrupted"] = True
        result["error"] = str(exc)
        exit_code = 1
    finally:
        for t in targets:
            if t.proc is not None:
                procs.stop(t.proc)
        if mock_proc is not None:
            procs.stop(mock_proc)
    result["cells"] = summarize(cells, args.runs, args.chunks)
    result["targets"] = {t.name: t.summary() for t in targets} or {"direct": mock.summary()}
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result["bar"] = report.evaluate(result)
    docs = not (args.no_docs or args.base_src or result.get("interrupted"))
    paths = report.write(result, stamp, update_docs=docs)
    log("wrote " + ", ".join(str(p) for p in paths))
    print(report.markdown_bar(result["bar"]))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
