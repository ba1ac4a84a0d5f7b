"""REPORT.md's figures: one section per figure spec that drew, in spec order, each with its text and its figures;
the kinds with nothing to draw in one closing line that says why (no heading stands empty)."""

from __future__ import annotations

from fastformer_bench.report.spec import SPECS


def section(entries: list[dict], baselines: list[str]) -> list[str]:
    """One section per figure spec that drew; a spec drawn under a data-given name finds its figures too."""
    out = ["## Figures", ""]
    words = {"baseline": baselines[0] if baselines else "baseline"}
    undrawn = []
    for spec in SPECS:
        mine = [e for e in entries if spec.owns(e["kind"])]
        drawn = [e for e in mine if e["file"] is not None]
        undrawn += [f"{spec.title.format(**words)} ({e['skipped']})" for e in mine if e["file"] is None]
        if not drawn:
            continue
        out += [f"### {spec.title.format(**words)}", "", spec.text.format(**words), ""]
        for e in drawn:
            alt = (e["title"] or "").replace("\n", "; ")  # a line break would end the image syntax
            out += [f"![{alt}]({e['file']})", ""]
    if undrawn:
        out += [f"Not drawn, for want of data: {'; '.join(undrawn)}.", ""]
    return out if len(out) > 2 else []
