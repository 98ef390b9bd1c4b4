"""The layer order (docs/architecture.md) is a test: import-linter's contracts from pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_point_down_the_layer_order() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_one_gateway_class() -> None:
    """``Gateway`` names the SDK's front end only; the server's state object has its own name."""
    hits = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "src" / "modelyard").rglob("*.py")
        if "class Gateway" in p.read_text(encoding="utf-8")
    ]
    assert hits == ["src/modelyard/sdk.py"]
