"""Turn a run's results into the bar verdicts, bench/results/*.json, bench/results/latest.md and the block
between the markers in docs/performance.md."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sysinfo import SERVE_IMPORTS
from targets import BENCH, LADDER, LADDER_LAST, ROOT

from classify import markdown as classify_markdown
from compare import markdown as compare_markdown

RESULTS = BENCH / "results"
DOCS = ROOT / "docs" / "performance.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
DOCS_INTRO = """# Performance

How modelyard compares with talking to the upstream directly (the floor), with a minimal aiohttp
pass-through proxy (the ceiling for any Python gateway) and with the LiteLLM proxy, measured side by side
in one run on the same machine by `make bench` (see `bench/README.md` for the method and the caveats).
The block below is rewritten by every full run.

"""
ANY = "any"
#: the regression check against the ``base`` target (--base-ref): these cells, modelyard within 5 %
BASE_CELLS = ("json/0ms/c1", "json/0ms/c64", "stream/0ms/c1", "stream/0ms/c64")
BASE_RPS_MIN, BASE_CPU_MAX = 0.95, 1.05


def _cell(r: dict[str, Any], key: str) -> dict[str, Any]:
    for c in r.get("cells", []):
        if c["cell"] == key:
            return dict(c.get("median", {}))
    return {}


def _get(r: dict[str, Any], key: str, target: str, field: str) -> float | None:
    m = _cell(r, key).get(target) or {}
    v = m.get(field)
    return float(v) if isinstance(v, int | float) else None


def _why(r: dict[str, Any], key: str, *targets: str) -> str:
    for t in targets:
        info = r.get("targets", {}).get(t)
        if info is None:
            return f"{t} not in this run"
        if info["status"] != "ok":
            return f"{t} {info['status']}: {info['reason'][:160]}"
    if not _cell(r, key):
        return f"cell {key} not in this run"
    for t in targets:
        m = _cell(r, key).get(t) or {}
        if "error" in m:
            return f"{t}: {m['error'][:160]}"
    return "no data"


def _fmt(v: float | None, unit: str = "", nd: int = 2) -> str:
    if v is None:
        return "-"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "int":
        return str(int(v))
    return f"{v:.{nd}f}{unit}"


#: issue #20's bar (performance round two): modelyard over the minimal proxy, measured in the same run
RPS_JSON_MIN, RPS_STREAM_MIN = 0.80, 0.65
CPU_JSON_MAX, CPU_STREAM_MAX, CPU_LONG_MAX = 1.25, 1.50, 1.30
LITELLM_MIN = 40.0
P50_GAP_MAX, TTFT_GAP_MAX = 0.2, 0.3
TRANSLATED_MAX = 1.50
SLOW_RSS_MAX_MB = 20.0
TRANSLATED = "modelyard-tr"


def _cells_where(r: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [c for c in r.get("cells", []) if all(c.get(k) == v for k, v in match.items())]


def evaluate(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The bar, check by check: PASS / FAIL, or N/A with the reason when a figure is missing."""
    bars: list[dict[str, Any]] = []
    k64, k1, s1, s64, k256 = "json/0ms/c64", "json/0ms/c1", "stream/0ms/c1", "stream/0ms/c64", "json/50ms/c256"
    my = "modelyard"

    def add(
        check: str,
        value: float | None,
        bar: str,
        ok: Callable[[float], bool],
        unit: str,
        why: str,
        ref: Any = None,
        cell: str = "",
        noisy: tuple[str, ...] = ("direct", "minimal", my),
    ) -> None:
        status = "N/A" if value is None else ("PASS" if ok(value) else "FAIL")
        note = why if value is None else ""
        if cell and status != "N/A":
            noise = max((_get(r, cell, t, "other_cores") or 0.0) for t in noisy)
            if noise >= 0.2:
                note = f"noisy: up to {noise:.2f} cores used by unrelated processes during this cell"
        bars.append(
            {
                "check": check,
                "measured": _fmt(value, unit),
                "minimal": _fmt(ref, unit) if isinstance(ref, int | float) else "-",
                "value": value,
                "bar": bar,
                "status": status,
                "note": note,
            }
        )

    def ratio(key: str, a: str, b: str, field: str = "rps") -> float | None:
        x, y = _get(r, key, a, field), _get(r, key, b, field)
        return x / y if x is not None and y else None

    def added(key: str, t: str, field: str) -> float | None:
        x, d = _get(r, key, t, field), _get(r, key, "direct", field)
        return x - d if x is not None and d is not None else None

    cpu = "target_cpu_ms_per_req"
    for key, where, floor in ((k64, "json", RPS_JSON_MIN), (s64, "stream", RPS_STREAM_MIN)):
        add(
            f"throughput vs minimal proxy ({where}, 64 conn, 0 ms)",
            ratio(key, my, "minimal"),
            f">= {floor:.2f}x",
            lambda v, f=floor: v >= f - 1e-9,
            "x",
            _why(r, key, my, "minimal"),
            cell=key,
        )
    chunks = (r.get("settings") or {}).get("chunks", 20)
    long_cells = _cells_where(r, long=True, connections=64)
    long_key = (
        long_cells[0]["cell"]
        if long_cells
        else f"stream/0ms/c64/{(r.get('settings') or {}).get('long_chunks') or 200}ch"
    )
    long_n = long_cells[0]["chunks"] if long_cells else (r.get("settings") or {}).get("long_chunks") or 200
    for key, where, cap in (
        (k64, "json", CPU_JSON_MAX),
        (s64, f"stream, {chunks} chunks", CPU_STREAM_MAX),
        (long_key, f"stream, {long_n} chunks", CPU_LONG_MAX),
    ):
        add(
            f"CPU per request vs minimal proxy ({where}, 64 conn)",
            ratio(key, my, "minimal", cpu),
            f"<= {cap:.2f}x",
            lambda v, c=cap: v <= c + 1e-9,
            "x",
            _why(r, key, my, "minimal"),
            cell=key,
        )
    add(
        "throughput vs LiteLLM (json, 64 conn, 0 ms, 1 worker each)",
        ratio(k64, my, "litellm"),
        f">= {LITELLM_MIN:.0f}x",
        lambda v: v >= LITELLM_MIN,
        "x",
        _why(r, k64, my, "litellm"),
        cell=k64,
    )
    for what, cell, metric, most in (
        ("p50", k1, "p50_ms", P50_GAP_MAX),
        ("TTFT p50", s1, "ttft_p50_ms", TTFT_GAP_MAX),
    ):
        ours, proxy = added(cell, my, metric), added(cell, "minimal", metric)
        add(
            f"added {what} minus the minimal proxy's ({'stream' if cell is s1 else 'json'}, 1 conn)",
            ours - proxy if ours is not None and proxy is not None else None,
            f"<= {most} ms",
            lambda v, most=most: v <= most + 1e-9,
            " ms",
            _why(r, cell, my, "minimal", "direct"),
            proxy,
            cell=cell,
        )
    a99, ref = added(k1, my, "p99_ms"), added(k1, "minimal", "p99_ms")
    add(
        "added p99 latency (json, 1 conn)",
        a99,
        "<= 3.0 ms",
        lambda v: v <= 3.0,
        " ms",
        _why(r, k1, my, "direct"),
        ref,
        cell=k1,
    )
    errs, ref = _get(r, k256, my, "errors"), _get(r, k256, "minimal", "errors")
    add("errors (json, 50 ms upstream, 256 conn)", errs, "0", lambda v: v == 0, "int", _why(r, k256, my), ref)
    p99, ref = _get(r, k256, my, "p99_ms"), _get(r, k256, "minimal", "p99_ms")
    add(
        "p99 latency (json, 50 ms upstream, 256 conn)",
        p99,
        "<= 60 ms",
        lambda v: v <= 60,
        " ms",
        _why(r, k256, my),
        ref,
        cell=k256,
    )
    info = r.get("targets", {}).get(my) or {}
    mini = r.get("targets", {}).get("minimal") or {}
    why_t = _why(r, "", my)
    rss = info.get("idle_rss_mb")
    add("idle RSS (1 worker)", rss, "<= 80 MB", lambda v: v <= 80, " MB", why_t, mini.get("idle_rss_mb"))
    cold = info.get("cold_start_s") or []
    cs = statistics.median(cold) if cold else None
    ref = statistics.median(mini["cold_start_s"]) if mini.get("cold_start_s") else None
    add("cold start to first answer (median)", cs, "< 1.0 s", lambda v: v < 1.0, " s", why_t, ref)
    imp = r.get("import_time") or {}
    why = imp.get("error", "not measured")
    add("`import modelyard`", imp.get("import_ms"), "<= 300 ms", lambda v: v <= 300, " ms", why)
    clf = r.get("classifier") or {}
    longest = (clf.get("lengths") or {}).get("2,000 tokens") or {}
    why_c = clf.get("error", "not measured")
    add(
        "prompt classifier p99, 2,000 tokens, 1 core",
        longest.get("p99_ms"),
        "<= 2 ms",
        lambda v: v <= 2.0,
        " ms",
        why_c,
    )
    cmp_ = r.get("compare") or {}
    add("comparison 4x20x3 at 40 tok/s, wall time", cmp_.get("wall_s"), "<= 300 s", lambda v: v <= 300, " s",
        cmp_.get("error", "not measured (--quick)"))  # fmt: skip
    w = ratio(k64, "modelyard-w2", my)
    add("--workers 2 vs 1 (json, 64 conn, 0 ms)", w, ">= 1.60x", lambda v: v >= 1.6, "x", _why(r, k64, f"{my}-w2", my))
    busy = _get(r, k64, "modelyard-w2", "machine_busy")
    other = _get(r, k64, "modelyard-w2", "other_cores") or 0.0
    if w is not None and busy is not None and busy >= 0.9 and w < 1.6:
        bars[-1]["status"] = "N/A"
        bars[-1]["note"] = (
            f"machine saturated ({busy:.0%} busy, {other:.2f} cores used by unrelated processes): not judged"
        )
    for row in translated_rows(r):
        if row["route"] == "openai":
            continue
        add(
            f"translated CPU per chunk, {row['route']} vs openai route (stream, {row['chunks']} chunks, "
            f"{row['connections']} conn)",
            row["vs_openai"],
            f"<= {TRANSLATED_MAX:.2f}x",
            lambda v: v <= TRANSLATED_MAX + 1e-9,
            "x",
            row["why"],
            cell=row["cell"],
            noisy=(TRANSLATED,),
        )
    if not any(c.get("model") for c in r.get("cells", [])):
        why = "not run (--no-translated, or no modelyard target)"
        add("translated CPU per chunk vs openai route", None, f"<= {TRANSLATED_MAX:.2f}x", lambda v: True, "x", why)
    slow = (r.get("slow_readers") or {}).get(my) or {}
    ref_slow = (r.get("slow_readers") or {}).get("minimal") or {}
    why = slow.get("error", "not run (--no-slow-readers)" if "slow_readers" not in r else "modelyard not measured")
    settings = r.get("settings") or {}
    where = f"{settings.get('slow_streams', 100)} streams at {settings.get('slow_rate', 1024)} B/s"
    add(
        f"slow readers: RSS growth ({where})",
        slow.get("rss_growth_mb"),
        f"<= +{SLOW_RSS_MAX_MB:.0f} MB",
        lambda v: v <= SLOW_RSS_MAX_MB,
        " MB",
        why,
        ref_slow.get("rss_growth_mb"),
    )
    held = slow.get("gateway_held_bytes_per_stream")
    ref_held = ref_slow.get("gateway_held_bytes_per_stream")
    add(
        "slow readers: upstream ahead of the client beyond kernel buffers, per stream",
        held / 2**20 if held is not None else None,
        f"<= {slow.get('max_held_mib', 1.0):g} MiB",
        lambda v: v <= slow.get("max_held_mib", 1.0),
        " MiB",
        why,
        ref_held / 2**20 if ref_held is not None else None,
    )
    if "modelyard-redis" in r.get("targets", {}):  # what sharing state through Redis costs (reported, no bar)
        for key, where in ((k1, "json, 1 conn"), (k64, "json, 64 conn"), (s1, "stream, 1 conn")):
            p_mem, p_red = _get(r, key, my, "p50_ms"), _get(r, key, "modelyard-redis", "p50_ms")
            c_mem = _get(r, key, my, "target_cpu_ms_per_req")
            c_red = _get(r, key, "modelyard-redis", "target_cpu_ms_per_req")
            added_p50 = None if p_mem is None or p_red is None else p_red - p_mem
            cpu_ratio = c_red / c_mem if c_red and c_mem else None
            shown = (
                (f"state: redis, added p50 ({where})", added_p50, " ms"),
                (f"state: redis, CPU per request vs memory ({where})", cpu_ratio, "x"),
            )
            for check, value, unit in shown:
                bars.append(
                    {
                        "check": check,
                        "measured": _fmt(value, unit),
                        "minimal": "-",
                        "value": value,
                        "bar": "reported",
                        "status": "INFO" if value is not None else "N/A",
                        "note": "" if value is not None else _why(r, key, my, "modelyard-redis"),
                    }
                )
    soak = r.get("soak") or {}
    why = soak.get("error", "not run (use --soak 10)")
    add("RSS growth over the soak (64 conn)", soak.get("growth_pct"), "< 10 %", lambda v: v < 10, " %", why)
    if "base" in r.get("targets", {}):
        ref = (r.get("base") or {}).get("ref", "base")
        for row in base_rows(r):
            mode, _, conns = row["cell"].split("/")
            where = f"{mode}, {conns[1:]} conn, 0 ms"
            add(
                f"throughput vs {ref} ({where})",
                row["rps_ratio"],
                f">= {BASE_RPS_MIN:.2f}x",
                lambda v: v >= BASE_RPS_MIN - 1e-9,
                "x",
                row["why"],
            )
            add(
                f"CPU per request vs {ref} ({where})",
                row["cpu_ratio"],
                f"<= {BASE_CPU_MAX:.2f}x",
                lambda v: v <= BASE_CPU_MAX + 1e-9,
                "x",
                row["why"],
            )
            add(
                f"CPU per request with its records written vs {ref} ({where})",
                row["settled_ratio"],
                f"<= {BASE_CPU_MAX:.2f}x",
                lambda v: v <= BASE_CPU_MAX + 1e-9,
                "x",
                row["why"] or "no catch-up figure (an older run, or /v1/status did not answer)",
            )
            for b in bars[-3:]:
                if b["status"] != "N/A" and row["noise"] >= 0.2:
                    b["note"] = f"noisy: up to {row['noise']:.2f} cores used by unrelated processes during this cell"
    return bars


def translated_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The translated-streams cells (target modelyard-tr, one cell per route): CPU per request and per chunk,
    and each route's CPU per chunk over the openai route's in the same chunk count and connections."""
    rows = []
    for c in r.get("cells", []):
        if not c.get("model"):
            continue
        m = (c.get("median") or {}).get(TRANSLATED) or {}
        cpu = m.get("target_cpu_ms_per_req")
        rows.append(
            {
                "cell": c["cell"],
                "route": c["model"],
                "chunks": c["chunks"],
                "connections": c["connections"],
                "rps": m.get("rps"),
                "ttft_p50_ms": m.get("ttft_p50_ms"),
                "cpu_ms_per_req": cpu,
                "cpu_us_per_chunk": cpu / c["chunks"] * 1000 if cpu is not None and c["chunks"] else None,
                "errors": m.get("errors"),
                "why": _why(r, c["cell"], TRANSLATED),
            }
        )
    base = {(x["chunks"], x["connections"]): x["cpu_us_per_chunk"] for x in rows if x["route"] == "openai"}
    for x in rows:
        ref = base.get((x["chunks"], x["connections"]))
        x["vs_openai"] = x["cpu_us_per_chunk"] / ref if ref and x["cpu_us_per_chunk"] is not None else None
        if x["vs_openai"] is None and x["cpu_us_per_chunk"] is not None:
            x["why"] = "the openai route's cell has no figure"
    return rows


def ladder_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The feature ladder (``--ladder``): per step and cell, CPU per request with its records written (the
    window's when the catch-up was not measured), what the step added to the one before, and the ratio to the
    minimal proxy's CPU in the same cell."""
    steps = [n for n in (*LADDER, "modelyard") if n in r.get("targets", {})]
    if not any(n in LADDER for n in steps):
        return []
    rows = []
    for key in ("json/0ms/c64", "stream/0ms/c64"):
        med = _cell(r, key)
        minimal = (med.get("minimal") or {}).get("target_cpu_ms_per_req")
        before = minimal
        for n in steps:
            m = med.get(n) or {}
            cpu = m.get("settled_cpu_ms_per_req") or m.get("target_cpu_ms_per_req")
            rows.append(
                {
                    "cell": key,
                    "step": n,
                    "adds": LADDER.get(n, LADDER_LAST),
                    "rps": m.get("rps"),
                    "cpu_ms_per_req": cpu,
                    "added_us": (cpu - before) * 1000 if cpu is not None and before is not None else None,
                    "vs_minimal": cpu / minimal if cpu and minimal else None,
                }
            )
            before = cpu
    return rows


def markdown_ladder(r: dict[str, Any]) -> str:
    lines = [
        "#### What each feature of the bench config costs (`--ladder`)",
        "",
        "The bench config with its per-request features added one at a time, each step a target of its own in "
        "the same interleaved matrix. CPU ms/req includes the usage writer's catch-up after the window (every "
        "step writes its records: the server always has its database). added us: over the step before (the "
        "first step: over the minimal proxy).",
        "",
        "| cell | target | what it adds | RPS | CPU ms/req | added us | vs minimal |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for x in ladder_rows(r):
        lines.append(
            f"| {x['cell']} | {x['step']} | {x['adds']} | {_fmt(x['rps'], nd=0)} | {_fmt(x['cpu_ms_per_req'], nd=3)} | "
            f"{_fmt(x['added_us'], nd=1)} | {_ratio(x['vs_minimal'])} |"
        )
    return "\n".join(lines)


def markdown_translated(r: dict[str, Any]) -> str:
    lines = [
        f"#### Translated streams (`{TRANSLATED}`: bench/translated.bench.yaml)",
        "",
        "One modelyard, three routes: `openai` (kind openai: the pass-through), `anthropic` (kind anthropic: "
        "Messages events translated to chat.completion.chunk) and `gemini` (kind gemini: streamGenerateContent "
        "SSE translated). Same client request (OpenAI format), same chunk count, same mock.",
        "",
        "| route | chunks | conns | RPS | TTFT p50 ms | CPU ms/req | CPU us/chunk | vs openai | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in translated_rows(r):
        lines.append(
            f"| {x['route']} | {x['chunks']} | {x['connections']} | {_fmt(x['rps'], nd=0)} | "
            f"{_fmt(x['ttft_p50_ms'])} | {_fmt(x['cpu_ms_per_req'], nd=3)} | {_fmt(x['cpu_us_per_chunk'], nd=1)} | "
            f"{_ratio(x['vs_openai'])} | {_fmt(x['errors'], 'int')} |"
        )
    return "\n".join(lines)


def markdown_slow(r: dict[str, Any]) -> str:
    s = r.get("settings") or {}
    lines = [
        "#### Slow readers",
        "",
        f"{s.get('slow_streams')} concurrent streams of {s.get('slow_chunks')} chunks (~1.2 KB each), every client "
        f"reading {s.get('slow_rate')} B/s (SO_RCVBUF 4 KiB, MSS 1400) for {s.get('slow_duration')} s "
        "(`bench/slow_readers.py`). The mock writes frame by frame, waiting for its transport to drain. "
        "*ahead* = what the mock got into the kernel minus what the clients read (in client bytes); *kernel* = "
        "the socket queues on the way (/proc/net/tcp); *held* = ahead - kernel, what the gateway keeps in user space.",
        "",
        "| target | statuses | RSS before MB | RSS peak MB | growth MB | answer KB | client read KB/stream | "
        "upstream wrote KB/stream | ahead KB | kernel KB | held KB/stream | whole answer written | "
        "upstream open after hang-up |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def kb(v: Any) -> str:
        return f"{v / 1024:,.0f}" if isinstance(v, int | float) else "-"

    for name, x in (r.get("slow_readers") or {}).items():
        if "error" in x:
            lines.append(f"| {name} | failed: {x['error'][:120]} ||||||||||||")
            continue
        statuses = ", ".join(f"{k}: {v}" for k, v in (x.get("statuses") or {}).items())
        lines.append(
            f"| {name} | {statuses} | {_fmt(x.get('rss_before_mb'), nd=1)} | {_fmt(x.get('rss_peak_mb'), nd=1)} | "
            f"{_fmt(x.get('rss_growth_mb'), nd=1)} | {kb(x.get('answer_bytes'))} | "
            f"{kb(x.get('client_read_bytes_per_stream'))} | {kb(x.get('upstream_written_bytes_per_stream'))} | "
            f"{kb(x.get('upstream_ahead_bytes_per_stream'))} | {kb(x.get('kernel_queued_bytes_per_stream'))} | "
            f"{kb(x.get('gateway_held_bytes_per_stream'))} | {x.get('upstream_finished')} | "
            f"{x.get('upstream_left_open_after_close')} |"
        )
    lines += [
        "",
        "A whole answer can sit in the kernel (the gateway's receive buffers from the upstream autotune up to "
        "tcp_rmem's maximum), so *whole answer written* is reported, not judged.",
    ]
    return "\n".join(lines)


def base_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """modelyard vs base per BASE_CELLS: both medians, RPS ratio, CPU-per-request ratio, verdict."""
    rows = []
    for key in BASE_CELLS:
        my_rps, b_rps = _get(r, key, "modelyard", "rps"), _get(r, key, "base", "rps")
        my_cpu = _get(r, key, "modelyard", "target_cpu_ms_per_req")
        b_cpu = _get(r, key, "base", "target_cpu_ms_per_req")
        rps_ratio = my_rps / b_rps if my_rps is not None and b_rps else None
        cpu_ratio = my_cpu / b_cpu if my_cpu is not None and b_cpu else None
        my_settled = _get(r, key, "modelyard", "settled_cpu_ms_per_req")
        b_settled = _get(r, key, "base", "settled_cpu_ms_per_req")
        settled_ratio = my_settled / b_settled if my_settled is not None and b_settled else None
        if rps_ratio is None or cpu_ratio is None:
            status = "N/A"
        elif rps_ratio >= BASE_RPS_MIN - 1e-9 and cpu_ratio <= BASE_CPU_MAX + 1e-9:
            status = "PASS"
        else:
            status = "FAIL"
        noise = max((_get(r, key, t, "other_cores") or 0.0) for t in ("modelyard", "base"))
        paired = _paired(r, key)
        rows.append(
            {
                "cell": key,
                "modelyard_rps": my_rps,
                "base_rps": b_rps,
                "rps_ratio": rps_ratio,
                "modelyard_cpu_ms": my_cpu,
                "base_cpu_ms": b_cpu,
                "cpu_ratio": cpu_ratio,
                "modelyard_settled_ms": my_settled,
                "base_settled_ms": b_settled,
                "settled_ratio": settled_ratio,
                "base_catchup_s": _get(r, key, "base", "catchup_s"),
                "status": status,
                "noise": noise,
                "paired_rps": [round(a, 3) for a, _ in paired],
                "paired_cpu": [round(b, 3) for _, b in paired],
                "why": _why(r, key, "modelyard", "base"),
            }
        )
    return rows


def _paired(r: dict[str, Any], key: str) -> list[tuple[float, float]]:
    """(RPS ratio, CPU/request ratio) of modelyard over base within each repeat (the two ran back to back)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for c in r.get("cells", []):
        if c["cell"] == key:
            runs = c.get("runs", {})
    out = []
    for a, b in zip(runs.get("modelyard", []), runs.get("base", []), strict=False):
        if "error" in a or "error" in b or not b.get("rps") or not b.get("target_cpu_ms_per_req"):
            continue
        if a.get("rps") is None or a.get("target_cpu_ms_per_req") is None:
            continue
        out.append((a["rps"] / b["rps"], a["target_cpu_ms_per_req"] / b["target_cpu_ms_per_req"]))
    return out


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}x"


def markdown_base(r: dict[str, Any]) -> str:
    """The regression table against the base target (only when ``base`` was in the run)."""
    info = r.get("base") or {}
    cur = info.get("current") or {}
    dirty = cur.get("uncommitted_src") or []
    head = (cur.get("head") or "?")[:12]
    lines = [
        f"#### Against the base: `{info.get('ref', '?')}` ({(info.get('sha') or '?')[:12]})",
        "",
        f"`base` runs `modelyard serve` from `{info.get('src', '?')}` (imports `{info.get('modelyard_file', '?')}`); "
        f"`modelyard` runs the checkout at {head}"
        + (f" plus {len(dirty)} uncommitted file(s) under src/" if dirty else "")
        + f". Same config, same interpreter, interleaved. PASS: RPS >= {BASE_RPS_MIN:.2f}x the base's and CPU "
        f"ms/request <= {BASE_CPU_MAX:.2f}x the base's (ratios of the medians over repeats; the per-repeat ratios "
        "pair the two runs made back to back, which cancels slower drift of a shared machine).",
        "",
    ]
    if info.get("error"):
        lines += [f"Base unavailable: `{info['error'][:400]}`", ""]
    lines += [
        "| cell | modelyard RPS | base RPS | RPS ratio | modelyard CPU ms/req | base CPU ms/req | CPU ratio | result "
        "| other | per repeat: RPS / CPU ratios | records written: CPU ms/req, modelyard / base | ratio "
        "| base catch-up s | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for row in base_rows(r):
        note = "" if row["status"] != "N/A" else row["why"][:160].replace("|", "/").replace("\n", " ")
        per = " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(row["paired_rps"], row["paired_cpu"], strict=True)) or "-"
        lines.append(
            f"| {row['cell']} | {_fmt(row['modelyard_rps'], nd=0)} | {_fmt(row['base_rps'], nd=0)} | "
            f"{_ratio(row['rps_ratio'])} | {_fmt(row['modelyard_cpu_ms'], nd=3)} | {_fmt(row['base_cpu_ms'], nd=3)} "
            f"| {_ratio(row['cpu_ratio'])} | **{row['status']}** | {row['noise']:.2f} | {per} | "
            f"{_fmt(row['modelyard_settled_ms'], nd=3)} / {_fmt(row['base_settled_ms'], nd=3)} | "
            f"{_ratio(row['settled_ratio'])} | {_fmt(row['base_catchup_s'], nd=2)} | {note} |"
        )
    lines += [
        "",
        "*Records written*: the window's CPU plus what the target spent after it until its usage writer had "
        "every record of the window in the database (`/v1/status` backlog 0), per request of the window. A "
        "writer that falls behind under load spills records and replays them later, which the window alone "
        "does not count.",
    ]
    return "\n".join(lines)


def markdown_bar(bars: list[dict[str, Any]]) -> str:
    lines = [
        "| check | modelyard | bar | result | minimal proxy | note |",
        "| --- | ---: | --- | --- | ---: | --- |",
    ]
    for b in bars:
        note = b["note"].replace("|", "/").replace("\n", " ")
        ref = b.get("minimal", "-")
        lines.append(f"| {b['check']} | {b['measured']} | {b['bar']} | **{b['status']}** | {ref} | {note} |")
    return "\n".join(lines)


def _targets_table(r: dict[str, Any]) -> str:
    lines = [
        "| target | status | procs | cold start s | idle RSS MB | idle PSS MB | idle CPU % | peak RSS MB | restarts |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for name, t in r.get("targets", {}).items():
        cold = t.get("cold_start_s") or []
        cs = f"{statistics.median(cold):.2f} (n={len(cold)})" if cold else "-"
        lines.append(
            f"| {name} | {t['status']} | {t.get('processes') or '-'} | {cs} | {_fmt(t.get('idle_rss_mb'), nd=1)} | "
            f"{_fmt(t.get('idle_pss_mb'), nd=1)} | {_fmt(t.get('idle_cpu_pct'), nd=1)} | "
            f"{_fmt(t.get('peak_rss_mb'), nd=1)} | {len(t.get('deaths') or [])} |"
        )
        if t["status"] != "ok":
            notes.append(f"- **{name}** {t['status']}: `{' '.join(t['reason'].split())[:400]}`")
        for d in t.get("deaths") or []:
            last = " / ".join(d["log"].splitlines()[-3:])
            notes.append(f"- **{name}** died {d['when']} (exit {d['returncode']}), restarted; log: `{last[:300]}`")
    return "\n".join(lines + (["", *notes] if notes else []))


def _cells_tables(r: dict[str, Any]) -> str:
    groups: dict[tuple[bool, int, int], list[dict[str, Any]]] = {}
    default = (r.get("settings") or {}).get("chunks")
    for c in r.get("cells", []):
        if not c.get("model"):  # the translated cells have their own table
            groups.setdefault((c["stream"], c["delay_ms"], c.get("chunks", default)), []).append(c)
    out = []
    for (stream, delay, chunks), cells in groups.items():
        what = f"streaming ({chunks} chunks)" if stream else "non-streaming"
        out.append(f"### {what}, upstream delay {delay} ms\n")
        out.append(
            "| conns | target | RPS | p50 ms | p99 ms | +p50 | +p99 | TTFT p50 | +TTFT | CPU ms/req | CPU us/chunk "
            "| errors | busy | other |"
        )
        out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in sorted(cells, key=lambda c: c["connections"]):
            med = c.get("median", {})
            base = med.get("direct") or {}
            for name, m in med.items():
                if "error" in m:
                    out.append(f"| {c['connections']} | {name} | failed: {m['error'][:80]} ||||||||||||")
                    continue

                def d(f: str, m: dict[str, Any] = m, name: str = name, base: dict[str, Any] = base) -> str:
                    if name == "direct" or m.get(f) is None or base.get(f) is None:
                        return "-"
                    return f"{m[f] - base[f]:+.2f}"

                busy = f"{m['machine_busy']:.0%}" if m.get("machine_busy") is not None else "-"
                other = _fmt(m.get("other_cores"))
                ttft = _fmt(m.get("ttft_p50_ms")) if stream else "-"
                cpu = m.get("target_cpu_ms_per_req")
                per_chunk = _fmt(cpu / chunks * 1000, nd=1) if stream and cpu is not None and chunks else "-"
                out.append(
                    f"| {c['connections']} | {name} | {m['rps']:,.0f} | {_fmt(m['p50_ms'])} | {_fmt(m['p99_ms'])} | "
                    f"{d('p50_ms')} | {d('p99_ms')} | {ttft} | {d('ttft_p50_ms') if stream else '-'} | "
                    f"{_fmt(cpu, nd=3)} | {per_chunk} | {m['errors']} | {busy} | {other} |"
                )
        out.append("")
    return "\n".join(out)


def markdown(r: dict[str, Any]) -> str:
    m, v, s = r.get("machine", {}), r.get("versions", {}), r.get("settings", {})
    parts = [
        f"Run {r.get('started')} -> {r.get('finished')}"
        + (" (**interrupted: partial**)" if r.get("interrupted") else ""),
        f"Machine: {m.get('nproc')} cores, {m.get('cpu')}, {m.get('ram_gb')} GB RAM, Linux {m.get('kernel')}, "
        f"Python {m.get('python')}; background load before the run: {r.get('background_busy', 0):.0%}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"Settings: {s.get('repeats')} interleaved repeat(s), {s.get('duration')} s measured after "
        f"{s.get('warmup')} s warm-up per run, load generator `{s.get('engine')}`, {s.get('chunks')} chunks per "
        f"stream ({s.get('long_chunks') or 'no'} in the long-stream cells); medians over repeats (errors summed).",
        "",
        "#### The bar",
        "",
        markdown_bar(r.get("bar", [])),
        "",
        "#### Targets",
        "",
        _targets_table(r),
        "",
    ]
    if "base" in r.get("targets", {}) or r.get("base"):
        parts += [markdown_base(r), ""]
    imp = r.get("import_time") or {}
    if imp.get("import_ms") is not None:
        tops = ", ".join(f"{t['module']} {t['cumulative_ms']} ms" for t in imp.get("top", [])[:5])
        line = f"`import modelyard`: {imp['import_ms']} ms over a bare interpreter ({imp['bare_interpreter_ms']} ms)"
        line += f" (heaviest: {tops})." if tops else "."
        if imp.get("serve_imports_ms") is not None:
            stops = ", ".join(f"{t['module']} {t['cumulative_ms']} ms" for t in imp.get("serve_top", [])[:6])
            line += f" What `modelyard serve` imports (`{SERVE_IMPORTS}`): {imp['serve_imports_ms']} ms ({stops})."
        parts += [line, ""]
    if (r.get("classifier") or {}).get("lengths"):
        parts += [classify_markdown(r["classifier"]), ""]
    if (r.get("compare") or {}).get("wall_s") is not None:
        parts += [compare_markdown(r["compare"]), ""]
    if translated_rows(r):
        parts += [markdown_translated(r), ""]
    if ladder_rows(r):
        parts += [markdown_ladder(r), ""]
    if r.get("slow_readers"):
        parts += [markdown_slow(r), ""]
    soak = r.get("soak") or {}
    if soak.get("growth_pct") is not None:
        lg = soak.get("load", {})
        parts += [
            f"Soak: {soak['target']} {soak['minutes']} min at 64 connections, {lg.get('rps', '-')} RPS, "
            f"{lg.get('errors', '-')} errors; RSS {soak['baseline_rss_mb']} MB (at {soak['baseline_at_s']} s) -> "
            f"{soak['final_rss_mb']} MB ({soak['growth_pct']:+.1f} %).",
            "",
        ]
    parts += [
        "#### Per cell",
        "",
        "+p50/+p99/+TTFT: added over `direct` (the mock upstream alone) in the same cell. CPU ms/req: the "
        "target's own process tree (utime+stime). busy: the whole machine (target + mock + load generator + "
        "anything else). other: cores used by processes that are not part of the benchmark (a shared machine).",
        "",
        _cells_tables(r),
    ]
    return "\n".join(parts)


def write(r: dict[str, Any], stamp: str, update_docs: bool = True) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ".gitkeep").touch()
    js = RESULTS / f"{stamp}.json"
    js.write_text(json.dumps(r, indent=1, default=str) + "\n")
    body = markdown(r)
    latest = RESULTS / "latest.md"
    latest.write_text(f"# modelyard benchmark: latest run\n\n{body}\n")
    paths = [js, latest]
    if update_docs:
        text = DOCS.read_text() if DOCS.exists() else DOCS_INTRO + f"{START}\n{END}\n"
        if START not in text or END not in text:
            text = text.rstrip() + f"\n\n{START}\n{END}\n"
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(f"{head}{START}\n## Latest results\n\n{body}\n{END}{tail}")
        paths.append(DOCS)
    return paths
