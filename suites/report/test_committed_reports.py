"""Every committed report regenerates byte for byte from its committed results, and none shows a machine's path.

reports/<name> is built from results/<name> (report.committed). A report that differs was edited by hand or not
regenerated after a change to the report code: `python scripts/regenerate_reports.py` rewrites them all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastformer_bench.report import committed

ROOT = Path(__file__).resolve().parents[2]
REPORTS = committed.names(ROOT)


@pytest.fixture(scope="module", params=REPORTS)
def rebuilt(request, tmp_path_factory) -> tuple[str, Path, tuple[str, ...]]:
    out = tmp_path_factory.mktemp(request.param)
    return request.param, out, committed.regenerate(ROOT, request.param, out)


def test_every_committed_report_has_its_results():
    assert REPORTS, "no committed reports"
    assert [name for name in REPORTS if not (ROOT / "results" / name).is_dir()] == []


def test_a_committed_report_regenerates_byte_identically(rebuilt):
    name, out, files = rebuilt
    saved = ROOT / "reports" / name
    for file in files:
        assert (out / file).read_bytes() == (saved / file).read_bytes(), f"reports/{name}/{file} differs"
    drawn = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert drawn == sorted(p.name for p in (saved / "figures").iterdir())
    changed = [f for f in drawn if (out / "figures" / f).read_bytes() != (saved / "figures" / f).read_bytes()]
    assert changed == [], f"reports/{name}: figures differ"


def test_a_committed_report_names_no_path_of_the_machine_that_made_it(rebuilt):
    name, _out, files = rebuilt
    for file in files:
        text = (ROOT / "reports" / name / file).read_text()
        found = re.findall(r"(?<![\w.)\]])/(?:work|tmp|home|usr|root|opt|mnt|Users)/[^\s\"|)]*", text)
        assert found == [], f"reports/{name}/{file}: {found}"
