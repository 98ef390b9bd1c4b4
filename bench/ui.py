"""Dashboard page weight and first render, on an idle and on a loaded gateway (``make bench-ui``).

Starts the fake providers and ``modelyard serve`` with a master key, logs in with headless chromium
and opens every page ``--repeats`` times with a cold cache, recording per page:

* bytes: every response body the page loaded (HTML, CSS, the script, the JSON it read);
* first paint: the browser's first-contentful-paint;
* drawn: navigation start to the page's data drawn (the "Loading" placeholder replaced).

"loaded" repeats the tour while ``--load`` client threads keep sending chat completions. Medians
are printed as a table and written to bench/results/ui-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from modelyard.server.ui import PAGES  # noqa: E402
from modelyard.testing import fake_class  # noqa: E402

MASTER = "sk-bench-ui"
KINDS = {
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-flash",
    "ollama": "llama3.2:latest",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(workdir: Path, fakes: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    config = {
        "providers": {
            k: {"kind": k, "base_url": str(getattr(f, "base_url", f.url)), "api_key": "sk-x"} for k, f in fakes.items()
        },
        "models": {k: {"provider": k, "model": m} for k, m in KINDS.items()},
        "routes": {"main": {"models": ["openai"], "fallbacks": ["anthropic"]}},
        "default_route": "main",
    }
    (workdir / "modelyard.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {**os.environ, "MODELYARD_MASTER_KEY": MASTER}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "modelyard"), "serve", "--port", str(port), "--config", "modelyard.yaml"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the gateway did not start")


def load(url: str, stop: threading.Event, counter: list[int]) -> None:
    body = {"model": "main", "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(headers={"Authorization": f"Bearer {MASTER}"}, timeout=30) as client:
        while not stop.is_set():
            client.post(f"{url}/v1/chat/completions", json=body)
            counter[0] += 1


def tour(browser: Any, url: str, repeats: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {p: {"kb": [], "fcp_ms": [], "drawn_ms": []} for p, _ in PAGES}
    for _ in range(repeats):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{url}/ui/login")
        page.fill("#key", MASTER)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/overview")
        for path, _ in PAGES:
            sizes: list[int] = []

            def grab(response: Any, sizes: list[int] = sizes) -> None:
                try:
                    sizes.append(len(response.body()))
                except Exception:  # an event stream has no body to read
                    pass

            page.on("response", grab)
            page.goto(f"{url}/ui/{path}")
            page.wait_for_selector("#loading", state="detached")
            timing = page.evaluate(
                "(() => { const nav = performance.getEntriesByType('navigation')[0];"
                " const fcp = performance.getEntriesByName('first-contentful-paint')[0];"
                " return {fcp: fcp ? fcp.startTime : null, now: performance.now(), start: nav.startTime}; })()"
            )
            page.remove_listener("response", grab)
            out[path]["kb"].append(sum(sizes) / 1024)
            out[path]["fcp_ms"].append(timing["fcp"] or 0.0)
            out[path]["drawn_ms"].append(timing["now"] - timing["start"])
        context.close()
    return out


def medians(runs: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {p: {k: round(statistics.median(v), 1) for k, v in figures.items()} for p, figures in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load", type=int, default=16, help="client threads sending chat completions")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    fakes = {k: fake_class(k)().start_in_thread() for k in KINDS}
    workdir = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    proc, url = start_gateway(workdir, fakes)
    results: dict[str, Any] = {"repeats": args.repeats, "load_threads": args.load}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            results["idle"] = medians(tour(browser, url, args.repeats))
            stop, counter = threading.Event(), [0]
            threads = [threading.Thread(target=load, args=(url, stop, counter), daemon=True) for _ in range(args.load)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            t0, n0 = time.monotonic(), counter[0]
            results["loaded"] = medians(tour(browser, url, args.repeats))
            results["load_rps"] = round((counter[0] - n0) / (time.monotonic() - t0), 1)
            stop.set()
            for t in threads:
                t.join(5)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
        for f in fakes.values():
            f.stop_thread()
    head = ("page", "KB", "first paint idle", "drawn idle", "first paint loaded", "drawn loaded")
    print("{:<10} {:>7} {:>17} {:>11} {:>19} {:>13}".format(*head))
    for path, _ in PAGES:
        i, ld = results["idle"][path], results["loaded"][path]
        cells = (path, f"{i['kb']:.1f}", f"{i['fcp_ms']:.0f} ms", f"{i['drawn_ms']:.0f} ms")
        cells += (f"{ld['fcp_ms']:.0f} ms", f"{ld['drawn_ms']:.0f} ms")
        print("{:<10} {:>7} {:>17} {:>11} {:>19} {:>13}".format(*cells))
    print(f"load during the loaded tour: {results['load_rps']} requests/s from {args.load} threads")
    out = ROOT / "bench" / "results" / f"ui-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
