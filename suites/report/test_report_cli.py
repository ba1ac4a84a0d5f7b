"""The report runs without torch and, through the CLI, maps bad results to exit 2 with one line.

(A successful report is covered in-process by test_figures.py; each subprocess here costs a pandas/seaborn import.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.imports import loaded_after
from testkit.synthetic_results import synthetic_records, write_results

ROOT = Path(__file__).resolve().parents[2]
HAS_CLI = (ROOT / "fastformer_bench" / "cli.py").exists()


def _small(tmp_path: Path) -> Path:
    records = [r for r in synthetic_records() if r["mode"] == "fwd" and r["scope"] == "core" and r["columns"] == 3
               and r["width"] == 64 and r["impl"] in ("eager", "softmax_sdpa") and r["seq_len"] >= 256]
    return write_results(tmp_path / "results", records)


def test_report_never_imports_torch(tmp_path):
    results, out = str(_small(tmp_path)), str(tmp_path / "out")
    code = f"import fastformer_bench.report as r\nr.build_report([{results!r}], {out!r})"
    assert loaded_after(code) == []
    assert (tmp_path / "out" / "REPORT.md").exists()


@pytest.mark.skipif(not HAS_CLI, reason="fastformer_bench/cli.py is not there yet")
def test_cli_report_bad_input_exits_2_with_one_line(tmp_path):
    (tmp_path / "points.jsonl").write_text(json.dumps({"schema": 7, "impl": "eager"}) + "\n")
    done = subprocess.run([sys.executable, "-m", "fastformer_bench", "report", str(tmp_path), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "schema" in done.stderr
    assert not (tmp_path / "out" / "REPORT.md").exists()

