"""A comparison's self-contained HTML report: tables and inline SVG plots, no script, no network
(it opens offline, from a file or an e-mail)."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["html_report"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border-bottom:1px solid #d6dae0;padding:5px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f3f5f7}.tag{display:inline-block;padding:1px 7px;border-radius:9px;background:#e8eefc;margin-right:6px}
.muted{color:#5c6670}.high{color:#116329}.medium{color:#7a4d00}.low{color:#a40e26}svg text{font:11px system-ui}
"""
_COLORS = ("#2f6fde", "#d2492a", "#2a9d5b", "#8b5cf6", "#d4a017", "#0e9aa7", "#c2417f", "#6b7280")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: float | None, fmt: str, missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _scatter(result: dict[str, Any]) -> str:
    """Cost per request (x) against accuracy (y), one dot per model."""
    figs = result["figures"]
    points = [
        (m, f["cost_per_request_usd"], f["accuracy"])
        for m, f in figs.items()
        if f["cost_per_request_usd"] is not None and f["accuracy"] is not None
    ]
    if not points:
        return "<p class=muted>No accuracy figures (the run had no grader).</p>"
    w, h, pad = 520, 300, 48
    xmax = max(p[1] for p in points) * 1.15 or 1.0
    out = [f'<svg width="{w}" height="{h}" role="img" aria-label="cost against accuracy">']
    out.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="#888"/>')
    out.append(f'<line x1="{pad}" y1="10" x2="{pad}" y2="{h - pad}" stroke="#888"/>')
    out.append(f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">cost per request (USD)</text>')
    out.append(f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">accuracy</text>')
    for tick in (0.0, 0.5, 1.0):
        y = h - pad - tick * (h - pad - 10)
        out.append(f'<text x="{pad - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    out.append(f'<text x="{w - 10}" y="{h - pad + 14}" text-anchor="end">{xmax:.6f}</text>')
    for m, x, y in points:
        cx = pad + (x / xmax) * (w - pad - 20)
        cy = h - pad - y * (h - pad - 10)
        color = _COLORS[list(figs).index(m) % len(_COLORS)]
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{color}"><title>{_e(m)}</title></circle>')
        out.append(f'<text x="{cx + 9:.1f}" y="{cy + 4:.1f}">{_e(m)}</text>')
    out.append("</svg>")
    return "".join(out)


def _boxes(result: dict[str, Any]) -> str:
    """Latency distribution per model: a box from p25 to p75, the median, whiskers to min and p95."""
    by_model: dict[str, list[float]] = {}
    for s in result["samples"]:
        if s["ok"]:
            by_model.setdefault(s["model"], []).append(s["latency_ms"])
    if not by_model:
        return "<p class=muted>No successful calls.</p>"
    top = max(max(v) for v in by_model.values()) * 1.05 or 1.0
    row, w, left = 30, 620, 170
    h = row * len(by_model) + 40
    out = [f'<svg width="{w}" height="{h}" role="img" aria-label="latency distributions">']

    def x(v: float) -> float:
        return left + v / top * (w - left - 20)

    for i, (m, values) in enumerate(by_model.items()):
        v = sorted(values)

        def q(p: float, v: list[float] = v) -> float:
            return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]

        y = 10 + i * row
        color = _COLORS[list(result["figures"]).index(m) % len(_COLORS)] if m in result["figures"] else "#555"
        out.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{_e(m)}</text>')
        out.append(f'<line x1="{x(v[0]):.1f}" y1="{y + 10}" x2="{x(q(0.95)):.1f}" y2="{y + 10}" stroke="{color}"/>')
        out.append(
            f'<rect x="{x(q(0.25)):.1f}" y="{y + 3}" width="{max(1.0, x(q(0.75)) - x(q(0.25))):.1f}" height="14" '
            f'fill="{color}" fill-opacity="0.35" stroke="{color}"><title>{_e(m)}: p50 {q(0.5):.0f} ms</title></rect>'
        )
        mid = x(q(0.5))
        out.append(
            f'<line x1="{mid:.1f}" y1="{y + 1}" x2="{mid:.1f}" y2="{y + 19}" stroke="{color}" stroke-width="3"/>'
        )
    out.append(
        f'<text x="{left}" y="{h - 8}">0 ms</text><text x="{w - 20}" y="{h - 8}" text-anchor="end">{top:.0f} ms</text>'
    )
    out.append("</svg>")
    return "".join(out)


def html_report(result: dict[str, Any]) -> str:
    """The report of a finished (or stopped) comparison run."""
    s = result["summary"]
    title = result.get("name") or f"Comparison {result['id']}"
    status = result["status"] + (f": {result['stop_reason']}" if result.get("stop_reason") else "")
    rows = []
    for m, f in result["figures"].items():
        rows.append(
            "<tr>"
            f"<td>{_e(m)}</td><td>{_pct(f['success_rate'])}</td><td>{_pct(f['accuracy'])}</td>"
            f"<td>{_pct(f['consistency'])}</td><td>{f['accurate']} / {f['partial']} / {f['failed']}</td>"
            f"<td>{_num(f['latency_avg_ms'], '.0f')}</td><td>{_num(f['latency_p50_ms'], '.0f')}</td>"
            f"<td>{_num(f['latency_p95_ms'], '.0f')}</td><td>{_num(f['ttft_p50_ms'], '.0f')}</td>"
            f"<td>{_usd(f['total_cost_usd'])}</td><td>{_usd(f['cost_per_request_usd'])}</td>"
            f"<td>{_usd(f['cost_per_accurate_usd'])}</td></tr>"
        )
    recs = []
    for r in result["recommendations"]:
        offs = "; ".join(r["trade_offs"]) or "none"
        recs.append(
            f"<tr><td>{_e(r['model'])}</td><td>{_e(r['summary'])}</td><td>{_e(r['reason'])}</td>"
            f"<td>{_e(offs)}</td><td class={_e(r['confidence'])}>{_e(r['confidence'])}</td></tr>"
        )
    shape = (
        f"{len(result['models'])} models x {result['prompts']} prompts x {result['iterations']} iterations "
        f"({result['calls']['done']} of {result['calls']['planned']} calls)"
    )
    cap = f", cap ${result['max_cost_usd']:g}" if result.get("max_cost_usd") else ""
    money = (
        f"spent {_usd(result['spent_usd'])} (judge {_usd(result['judge_cost_usd'])}), "
        f"estimate {_usd(result['estimate_usd'])}{cap}"
    )
    tags = "".join(
        f"<span class=tag>{label}: <b>{_e(s[key])}</b></span>"
        for label, key in (
            ("winner", "winner"),
            ("best for accuracy", "best_for_accuracy"),
            ("best for cost", "best_for_cost"),
            ("best for speed", "best_for_speed"),
        )
    )
    weights = ", ".join(f"{k} {v:g}" for k, v in s["weights"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class=muted>{_e(result["id"])} - {_e(status)} - {_e(shape)} in {result["duration_s"]:.1f} s - {_e(money)}</p>
<h2>Summary</h2>
<p>{tags}</p>
<p class=muted>Weights: {_e(weights)}; current: {_e(result["current"])}</p>
<h2>Recommendations</h2>
<table><tr><th>model</th><th>expected change vs current</th><th>reason</th><th>trade-offs</th><th>confidence</th></tr>
{"".join(recs)}</table>
<h2>Per model</h2>
<table><tr><th>model</th><th>success</th><th>accuracy</th><th>consistency</th>
<th>accurate / partial / failed</th><th>avg ms</th><th>p50 ms</th><th>p95 ms</th><th>TTFT p50 ms</th>
<th>total</th><th>per request</th><th>per accurate</th></tr>
{"".join(rows)}</table>
<h2>Cost against accuracy</h2>
{_scatter(result)}
<h2>Latency</h2>
{_boxes(result)}
</body></html>
"""
