"""``make audit``: known vulnerabilities in the installed dependencies, with pip-audit.

Exit 1 on any known vulnerability (each is printed with its fix versions).  Only when the
vulnerability service cannot be reached, or answers for none of the dependencies (a package
mirror without vulnerability data, as on an offline build machine), it prints ``SKIPPED:
vulnerability service unreachable`` and exits 0, saying why.  Otherwise it prints what it
audited and exits 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
_UNREACHABLE = ("ConnectionError", "Max retries exceeded", "Failed to resolve", "Name or service not known",
                "Temporary failure in name resolution", "timed out", "Connection refused", "SSLError")  # fmt: skip


def main() -> int:
    cmd = [str(BIN / "pip-audit"), "--format", "json", "--progress-spinner", "off", "--skip-editable"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        report = {}
    deps = report.get("dependencies")
    if not deps:
        if any(marker in done.stderr for marker in _UNREACHABLE):
            print(f"SKIPPED: vulnerability service unreachable ({done.stderr.strip().splitlines()[-1][:200]})")
            return 0
        print(done.stderr.strip() or "pip-audit gave no report", file=sys.stderr)
        return done.returncode or 1
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    for d in vulnerable:
        for v in d["vulns"]:
            fixes = ", ".join(v.get("fix_versions") or []) or "no fix yet"
            print(f"VULNERABLE: {d['name']} {d['version']}: {v['id']} (fixed in {fixes})")
    if vulnerable:
        print(f"{len(vulnerable)} of {len(deps)} dependencies have known vulnerabilities")
        return 1
    if audited == 0:
        print(
            f"SKIPPED: vulnerability service unreachable (it answered for none of the {len(deps)} installed "
            "dependencies: a package mirror without vulnerability data)"
        )
        return 0
    print(f"audited {audited} dependencies ({len(skipped)} not known to the service): no known vulnerability")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
