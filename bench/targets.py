"""The systems under test: how each is started, checked for readiness and measured at idle.

Targets: ``direct`` (the mock upstream itself: the floor), ``minimal`` (bench/minimal_proxy.py: the ceiling for
a Python gateway), ``modelyard`` / ``modelyard-w2`` (``modelyard serve``, 1 and 2 workers), ``modelyard-redis``
(1 worker with ``state: redis://``: budgets, the key's rpm/tpm and each model's rpm and concurrency shared
through Redis, ``MODELYARD_BENCH_REDIS``), ``modelyard-tr`` (1 worker with bench/translated.bench.yaml: one route
per upstream wire format, for the translated-streams cells), ``base`` / ``base-w2``
(``modelyard serve`` from an exported tree of an earlier commit, ``--base-ref``, default ``wave2-base``: the
regression check), ``litellm`` / ``litellm-w2`` (the LiteLLM proxy from its own venv under bench/build/, 1 and 2
workers) and, with ``--ladder``, ``modelyard-master`` / ``modelyard-key`` / ``modelyard-budgets`` (the bench config
with its per-request features added one at a time: ``LADDER``).
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procs
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = BENCH / "build"
LITELLM_VENV = BUILD / "litellm-venv"
LITELLM_KEY = "sk-bench-7f3a9c2e51d84b6a9e0c4d2f8b1a6e3c"
#: the LiteLLM release the bar is measured against (docs/performance.md names it)
LITELLM_PIN = "1.106.2"
#: modelyard's admin key in the bench config; the load itself uses a virtual key made with it
MODELYARD_MASTER_KEY = "sk-bench-master-2b7e151628aed2a6abf71588"
ALL_TARGETS = (
    "direct",
    "minimal",
    "modelyard",
    "modelyard-w2",
    "modelyard-redis",
    "modelyard-tr",
    "base",
    "base-w2",
    "litellm",
    "litellm-w2",
)
#: the feature ladder (``--ladder``): ``modelyard.bench.yaml`` with its per-request features added one at a
#: time, each step a target of its own, in the order they are added; the last step is ``modelyard`` itself.
#: Every step writes usage records: the server always has its database (their share is the writer thread's,
#: measured by bench/calls.py --no-profile).
LADDER = {
    "modelyard-master": "the master key, a route of one model, no budgets",
    "modelyard-key": "+ a virtual key with rpm/tpm limits (made through /admin)",
    "modelyard-budgets": "+ a global and a per-key budget, and the key's own budget",
}
#: what the last step, ``modelyard`` (the bench config unchanged), adds to the step before it
LADDER_LAST = "+ a pool of two models with a fallback (bench/modelyard.bench.yaml unchanged)"
#: the Redis of the ``modelyard-redis`` target (``state:``): the machine's, in a database of its own
BENCH_REDIS = os.environ.get("MODELYARD_BENCH_REDIS", "redis://127.0.0.1:6379/13")
#: the ref the ``base`` targets run by default (the commit before the change being checked)
DEFAULT_BASE_REF = "wave2-base"
#: printed to the target's log by the ``base`` launcher before it runs the CLI (proof of which code it imports)
BASE_MARKER = "bench-base: modelyard imported from "
CHAT_PATH = "/v1/chat/completions"
PROBE_BODY = b'{"model":"bench","messages":[{"role":"user","content":"ping"}],"max_tokens":8}'


#: the targets whose usage writer the bench waits for after each window (one process each: with
#: ``--workers 2`` ``/v1/status`` would answer for one worker only)
WRITER_TARGETS = ("modelyard", "base", *LADDER)
#: how often ``drain_writer`` asks ``/v1/status`` (each call costs the target well under 1 ms)
DRAIN_POLL_S = 0.2


@dataclass
class Target:
    name: str
    workers: int = 1
    port: int = 0
    api_key: str = "sk-bench"  # modelyard: the master key until start-up, then a virtual key
    proc: subprocess.Popen[bytes] | None = None
    external_pid: int = 0  # for ``direct``: the mock, owned by the runner
    src: Path | None = None  # ``base``: the exported tree's src/ (put on PYTHONPATH)
    log: Path | None = None
    status: str = "pending"  # ok | failed | unavailable
    reason: str = ""
    cold_start_s: list[float] = field(default_factory=list)
    idle_rss_mb: float | None = None
    idle_pss_mb: float | None = None
    idle_cpu_pct: float | None = None
    peak_rss_mb: float | None = None
    processes: int = 0
    deaths: list[dict[str, Any]] = field(default_factory=list)
    #: put in front of the command line (bench/instructions.py: ``valgrind --tool=callgrind ...``)
    wrap: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else self.external_pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CHAT_PATH}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def alive(self) -> bool:
        if self.proc is None:
            return self.external_pid > 0 and Path(f"/proc/{self.external_pid}").exists()
        return self.proc.poll() is None

    def fail(self, reason: str) -> None:
        self.status = "failed"
        self.reason = reason

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "workers": self.workers,
            "processes": self.processes,
            "cold_start_s": self.cold_start_s,
            "idle_rss_mb": self.idle_rss_mb,
            "idle_pss_mb": self.idle_pss_mb,
            "idle_cpu_pct": self.idle_cpu_pct,
            "peak_rss_mb": self.peak_rss_mb,
            "deaths": self.deaths,
        }


def render(template: Path, out: Path, **values: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(string.Template(template.read_text()).substitute(values))
    return out


def post(port: int, body: bytes, api_key: str, path: str = CHAT_PATH, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def admin(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, raw = post(port, json.dumps(body).encode(), MODELYARD_MASTER_KEY, path=path)
    if status != 201:
        raise ValueError(f"POST {path} answered {status}: {raw[:200]!r}")
    data: dict[str, Any] = json.loads(raw)
    return data


def virtual_key(port: int, *, budget: bool = True) -> str:
    """An organisation and a virtual key with rate limits and (``budget``) its own budget, made through /admin."""
    org = admin(port, "/admin/orgs", {"name": f"bench-{port}"})
    body: dict[str, Any] = {"org_id": org["id"], "name": "bench", "rpm": 10_000_000, "tpm": 10_000_000_000}
    if budget:
        body["budget_usd"] = 100_000
    key = admin(port, "/admin/keys", body)
    return str(key["key"])


def ladder_config(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The rendered bench config of a ladder step: ``modelyard.bench.yaml`` without what later steps add."""
    data["routes"]["bench"] = {"models": ["m1"]}
    if name != "modelyard-budgets":
        data.pop("budgets", None)
    return data


def answers(port: int, api_key: str) -> bool:
    try:
        status, body = post(port, PROBE_BODY, api_key, timeout=3.0)
    except OSError:
        return False
    return status == 200 and b'"choices"' in body


def is_modelyard(name: str) -> bool:
    """``modelyard``/``base`` targets: both are ``modelyard serve`` with the bench config and a virtual key."""
    return name.startswith(("modelyard", "base"))


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ValueError(f"git {' '.join(args)}: {out.stderr.strip() or f'exit {out.returncode}'}")
    return out.stdout.strip()


def _base_python_env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(src.resolve())
    return env


def imported_from(src: Path) -> str:
    """Where ``import modelyard`` resolves with the base's environment (a one-shot interpreter, run from /)."""
    code = "import modelyard, modelyard.cli, modelyard.server.factory; print(modelyard.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_base_python_env(src), cwd="/", capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        raise ValueError(f"importing the base's modelyard failed: {last}")
    return out.stdout.strip()


def prepare_base(ref: str) -> dict[str, str]:
    """Export ``ref``'s src/ (``git archive``) into bench/build/base-<sha>/ once, drop older exports, and check
    that the bench's interpreter with ``PYTHONPATH=<that>/src`` imports modelyard from there (not from the
    editable install of the checkout). Raises ValueError with the reason."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    dest = BUILD / f"base-{sha[:12]}"
    done = dest / ".complete"
    if not done.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = BUILD / f".base-{sha[:12]}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", sha, "src", "pyproject.toml"], cwd=ROOT, capture_output=True, timeout=120
        )
        if archive.returncode != 0:
            raise ValueError(f"git archive {sha[:12]} failed: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True, timeout=120)
        # compile once now, so the first cold start of the base does not pay for writing __pycache__
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tmp / "src")], capture_output=True, timeout=300)
        (tmp / ".complete").write_text(f"{ref} {sha}\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    for old in BUILD.glob("base-*"):
        if old != dest and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    src = (dest / "src").resolve()
    where = imported_from(src)
    if not Path(where).resolve().is_relative_to(src):
        raise ValueError(f"with PYTHONPATH={src} modelyard is imported from {where}, not from the base's tree")
    subject = _git("show", "-s", "--format=%s", sha)
    return {"ref": ref, "sha": sha, "src": str(src), "modelyard_file": where, "subject": subject}


def base_from_src(path: str) -> dict[str, str]:
    """The base targets run from ``path``, a src/ directory prepared by hand (a changed copy of the
    tree: a lever tried before it is written into the product, a compiled build).  Raises ValueError
    when that directory is not what ``PYTHONPATH`` would import modelyard from."""
    src = Path(path).resolve()
    if not (src / "modelyard" / "__init__.py").is_file():
        raise ValueError(f"{src} holds no modelyard package")
    where = imported_from(src)
    if not Path(where).resolve().is_relative_to(src):
        raise ValueError(f"with PYTHONPATH={src} modelyard is imported from {where}, not from that directory")
    return {"ref": f"src:{src}", "sha": "src-copy", "src": str(src), "modelyard_file": where, "subject": str(src)}


def working_tree() -> dict[str, Any]:
    """What the ``modelyard`` target runs: the checkout's src/ as it is on disk (HEAD plus uncommitted edits)."""
    try:
        head = _git("rev-parse", "HEAD")
        dirty = [ln[3:] for ln in _git("status", "--porcelain", "--", "src").splitlines() if ln.strip()]
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    return {"head": head, "uncommitted_src": dirty}


def modelyard_bin() -> Path:
    for candidate in (ROOT / ".venv" / "bin" / "modelyard", Path(sys.executable).parent / "modelyard"):
        if candidate.exists():
            return candidate
    return ROOT / ".venv" / "bin" / "modelyard"


def litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    try:
        out = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def ensure_litellm(install: bool, log: Path) -> tuple[bool, str]:
    """(available, reason). Installs ``litellm[proxy]`` (``LITELLM_PIN``) into bench/build/litellm-venv when
    missing and allowed."""
    if (LITELLM_VENV / "bin" / "litellm").exists() and litellm_version():
        return True, ""
    if not install:
        return False, "not installed (bench/build/litellm-venv) and --no-install given"
    print(f"[bench] installing litellm[proxy] into {LITELLM_VENV} (once; log: {log})", file=sys.stderr)
    log.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        ["python3", "-m", "venv", str(LITELLM_VENV)],
        [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "--upgrade", "pip"],
        [
            str(LITELLM_VENV / "bin" / "pip"),
            "install",
            "--quiet",
            f"litellm[proxy]=={LITELLM_PIN}",
            "uvloop",
            "httptools",
        ],
    ]
    with log.open("ab") as fh:
        for step in steps:
            try:
                rc = subprocess.run(step, stdout=fh, stderr=subprocess.STDOUT, timeout=1800).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                return False, f"install failed: {exc}"
            if rc != 0:
                return False, f"install failed ({shlex.join(step[:3])}... exit {rc}); see {log}"
    if not litellm_version():
        return False, f"installed but `import litellm` fails; see {log}"
    return True, ""


def command(t: Target, upstream: str, workdir: Path, extra_modelyard: list[str]) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    if t.name == "minimal":
        cmd = [sys.executable, str(BENCH / "minimal_proxy.py"), "--port", str(t.port), "--upstream", upstream]
        return cmd, env
    if is_modelyard(t.name):
        cfg = render(
            BENCH / ("translated.bench.yaml" if t.name == "modelyard-tr" else "modelyard.bench.yaml"),
            workdir / "modelyard.yaml",
            PORT=str(t.port),
            UPSTREAM=upstream,
            MASTER_KEY=MODELYARD_MASTER_KEY,
            WORKDIR=str(workdir.resolve()),
        )
        if t.name == "modelyard-redis":
            data = yaml.safe_load(cfg.read_text())
            data["state"] = BENCH_REDIS
            for model in data["models"].values():  # every admission goes through the shared limits
                model.update(rpm=100_000_000, max_concurrency=100_000)
            cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        if t.name in LADDER:
            cfg.write_text(yaml.safe_dump(ladder_config(t.name, yaml.safe_load(cfg.read_text())), sort_keys=False))
        cmd = [str(modelyard_bin())]
        if t.name.startswith("base"):
            if t.src is None:
                raise ValueError("the base tree was not prepared")
            env = _base_python_env(t.src)
            boot = (
                "import sys, modelyard; "
                f"print({BASE_MARKER!r} + modelyard.__file__, file=sys.stderr, flush=True); "
                "from modelyard.cli import main; main()"
            )
            cmd = [sys.executable, "-c", boot]
        cmd += ["serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(t.port)]
        if t.workers > 1:
            cmd += ["--workers", str(t.workers)]
        return cmd + extra_modelyard, env
    if t.name.startswith("litellm"):
        cfg = render(BENCH / "litellm.bench.yaml", workdir / "litellm.yaml", UPSTREAM=upstream, API_KEY=t.api_key)
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_TELEMETRY="False",
            LITELLM_LOG="ERROR",
            DISABLE_ADMIN_UI="True",
            NO_DOCS="True",
        )
        cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1"]
        cmd += ["--port", str(t.port), "--num_workers", str(t.workers)]
        return cmd, env
    raise ValueError(f"unknown target {t.name}")


def launch(t: Target, upstream: str, logdir: Path, extra_modelyard: list[str], timeout: float) -> float | None:
    """Start ``t`` (a fresh port), wait for its first 200 answer. Returns spawn→first-answer seconds, or None."""
    t.port = procs.free_port()
    workdir = logdir / t.name
    workdir.mkdir(parents=True, exist_ok=True)
    t.log = logdir / f"{t.name}.log"
    try:
        cmd, env = command(t, upstream, workdir, extra_modelyard)
    except (OSError, KeyError, ValueError) as exc:
        t.fail(f"cannot build command: {exc}")
        return None
    if t.wrap:
        cmd = [*t.wrap, *_interpreter(cmd[0]), *cmd]
    with t.log.open("a") as fh:
        fh.write(f"\n# {shlex.join(cmd)}\n")
    t0 = time.perf_counter()
    try:
        t.proc = procs.spawn(cmd, log=t.log, env=env, cwd=workdir)
    except OSError as exc:
        t.fail(f"cannot start: {exc}")
        return None
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        if t.proc.poll() is not None:
            t.fail(f"exited with {t.proc.returncode} before answering: {procs.tail(t.log, 6)}")
            return None
        if answers(t.port, t.api_key):
            took = time.perf_counter() - t0
            if t.name.startswith("base") and t.src is not None and not _base_imported(t.log, t.src):
                t.fail(f"does not run the base's code: {t.log} has no '{BASE_MARKER}{t.src}/...' line")
                procs.stop(t.proc)
                return None
            if is_modelyard(t.name) and t.name != "modelyard-master":
                try:
                    t.api_key = virtual_key(t.port, budget=t.name != "modelyard-key")
                except (OSError, ValueError, KeyError) as exc:
                    t.fail(f"cannot create the virtual key: {exc}")
                    procs.stop(t.proc)
                    return None
            return took
        time.sleep(0.01)
    t.fail(f"no 200 answer within {timeout:.0f}s: {procs.tail(t.log, 6)}")
    procs.stop(t.proc)
    return None


def _interpreter(program: str) -> list[str]:
    """What a wrapper (valgrind) must run before ``program``: a script's ``#!`` interpreter (a console
    script of this venv or of LiteLLM's), nothing for an executable."""
    with open(program, "rb") as fh:
        head = fh.readline(512)
    return head[2:].decode().split() if head.startswith(b"#!") else []


def _base_imported(log: Path, src: Path) -> bool:
    """The last marker line in the target's log names a file under ``src``."""
    lines = [ln for ln in procs.tail(log, 400).splitlines() if ln.startswith(BASE_MARKER)]
    return bool(lines) and Path(lines[-1][len(BASE_MARKER) :].strip()).resolve().is_relative_to(src.resolve())


def measure_idle(t: Target, settle: float = 1.0, window: float = 1.0, max_wait: float = 20.0) -> None:
    """RSS/PSS once the target is quiet after its first answer (other workers may still be booting: wait, up to
    ``max_wait``, for a ``window`` that uses < 3 % CPU), and the CPU it uses while idle (background tasks)."""
    time.sleep(settle)
    deadline = time.monotonic() + max_wait
    while True:
        tree = procs.process_tree(t.pid)
        cpu0 = procs.cpu_seconds(tree)
        time.sleep(window)
        tree = procs.process_tree(t.pid)
        t.idle_cpu_pct = round((procs.cpu_seconds(tree) - cpu0) / window * 100, 1)
        if t.idle_cpu_pct < 3.0 or time.monotonic() > deadline:
            break
    t.processes = len(tree)
    t.idle_rss_mb = round(procs.rss_bytes(tree) / 2**20, 1)
    t.idle_pss_mb = round(procs.pss_bytes(tree) / 2**20, 1)


def cold_start_samples(t: Target, upstream: str, logdir: Path, extra: list[str], n: int, timeout: float) -> None:
    """Extra spawn→first-answer samples on throwaway instances (each killed right after)."""
    for _ in range(n):
        probe = Target(t.name, workers=t.workers, api_key=t.api_key, src=t.src)
        try:
            took = launch(probe, upstream, logdir / "cold", extra, timeout)
        finally:
            if probe.proc is not None:
                procs.stop(probe.proc)
        if took is None:
            break
        t.cold_start_s.append(round(took, 3))


def usage_writer(t: Target) -> dict[str, Any]:
    """The usage writer's figures from ``/v1/status`` (modelyard and base)."""
    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=10)
    try:
        conn.request("GET", "/v1/status", headers={"Authorization": f"Bearer {MODELYARD_MASTER_KEY}"})
        data: dict[str, Any] = json.loads(conn.getresponse().read())["usage_writer"]
    finally:
        conn.close()
    return data


def drain_writer(t: Target, timeout: float = 60.0) -> dict[str, float] | None:
    """Wait until the target's usage writer has every record in the database (``backlog`` 0: nothing
    queued, being inserted or spilled and not yet replayed) and say what that took: ``catchup_s`` and
    ``catchup_cpu_s`` (the target's processes).  None when it cannot tell (no status, or ``timeout``).

    A writer that falls behind under load spills records to a file and replays them later; the
    bench's window ends before that work is done, so CPU per request in the window undercounts such
    a target.  ``settled_cpu_ms_per_req`` adds this catch-up (bench/README.md)."""
    cpu0, t0 = procs.tree_cpu_seconds(t.pid), time.monotonic()
    try:
        while usage_writer(t).get("backlog", 0) > 0:
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(DRAIN_POLL_S)
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None
    return {"catchup_s": time.monotonic() - t0, "catchup_cpu_s": procs.tree_cpu_seconds(t.pid) - cpu0}
