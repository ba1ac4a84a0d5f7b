"""A checkout's committed reports: reports/<name> is made from results/<name> (and the results BESIDE names for
it) and nothing else, so each can be regenerated, and checked to regenerate byte for byte.

A speed or probe run goes through ``build_report``; a performance history (reports/<name>/history.json) through
``history.show`` and its interactive pages (html/) with the options its history.json records.
"""

from __future__ import annotations

import json
from pathlib import Path

#: the files that make each kind of report, beside its figures/
REPORT_FILES = ("REPORT.md", "summary.json")
HISTORY_FILES = ("HISTORY.md", "history.json")
#: results a report reads beside its own: the probe's accuracies beside the cpu study's time per token
BESIDE = {"probe": ("cpu",)}


def names(root: str | Path) -> list[str]:
    """The reports committed under root/reports, by name."""
    reports = Path(root) / "reports"
    return sorted(p.name for p in reports.iterdir() if p.is_dir()) if reports.is_dir() else []


def regenerate(root: str | Path, name: str, out: str | Path) -> tuple[str, ...]:
    """Build root/reports/<name> anew from root/results/<name> into ``out``; the names of its files."""
    root, out = Path(root), Path(out)
    recorded = root / "reports" / name / "history.json"
    if recorded.exists():
        from fastformer_bench import history
        from fastformer_bench.history import html

        options = json.loads(recorded.read_text())
        history.show(root / "results" / name, out, normalize=options["normalized"], margin=options["margin"])
        # the interactive pages beside it, links to commits only where a `commit_url` template is recorded
        pages = html.write(root / "results" / name, out / "html", normalize=options["normalized"],
                           margin=options["margin"], commit_url=options.get("commit_url"))
        return (*HISTORY_FILES, "html/index.html", *(f"html/{p.name}" for p in pages))
    from fastformer_bench.report import build_report

    build_report([str(root / "results" / n) for n in (name, *BESIDE.get(name, ()))], str(out))
    return REPORT_FILES
