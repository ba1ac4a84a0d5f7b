"""REPORT.md's figures: one section per figure spec, in spec order, each with its text and its drawn figures."""

from __future__ import annotations

from fastformer_bench.report.spec import SPECS


def section(entries: list[dict], baselines: list[str]) -> list[str]:
    """One section per figure spec; a spec drawn under a data-given name finds its figures too."""
    out = ["## Figures", ""]
    words = {"baseline": baselines[0] if baselines else "baseline"}
    for spec in SPECS:
        mine = [e for e in entries if spec.owns(e["kind"])]
        if spec.optional and not mine:
            continue
        out += [f"### {spec.title.format(**words)}", "", spec.text.format(**words), ""]
        for e in mine:
            alt = (e["title"] or "").replace("\n", "; ")  # a line break would end the image syntax
            out += [f"_Skipped: {e['skipped']}._" if e["file"] is None else f"![{alt}]({e['file']})", ""]
    return out
