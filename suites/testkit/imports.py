"""What a piece of code imports, run in a fresh interpreter: the report, export and history promise no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def loaded_after(code: str, prefixes: tuple[str, ...] = ("torch",)) -> list[str]:
    """The modules named by ``prefixes`` (and their submodules) that running ``code`` leaves imported."""
    probe = (f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') "
             f"for p in {prefixes!r})))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])  # the list the probe printed
