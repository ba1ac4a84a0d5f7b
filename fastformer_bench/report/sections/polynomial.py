"""t = a + b·N + c·N²: how much of each time the N² term is, at the largest N of each linear implementation."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import asymptotics
from fastformer_bench.report.fmt import count, n_range, short
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import key_columns, shape_of, slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"poly_rule": asymptotics.POLY_RULE, "poly_fits": asymptotics.polynomial_fits(frame)}


def conclusions(s: dict) -> list[str]:
    """One line per slice, shape, width and fit range: the N² term's share of each linear implementation's time."""
    out, groups = [], {}
    for r in s.get("poly_fits", []):
        if r.get("complexity") == "linear" and r["c_ci"] is not None and r["quadratic_share_at_n_max"] is not None:
            groups.setdefault((slice_of(r), shape_of(r), r["width"], r["fit_range"]), []).append(r)
    for (slice_, shape, width, rule), group in sorted(groups.items()):
        parts = [f"{r['impl']} {r['quadratic_share_at_n_max'] * 100:.0f} % at N = {count(r['n_max'])}"
                 + ("" if r["c_ci"][0] > 0 or r["c_ci"][1] < 0 else " (c's CI includes 0)") for r in group]
        out.append(f"- N² term c·N² / t of the linear implementations ({slice_}, {shape}, width {width}, {rule}): "
                   f"{', '.join(parts)}.")
    return out


def _with_ci(value, ci) -> str:
    return short(value) if ci is None else f"{short(value)} [{short(ci[0])}, {short(ci[1])}]"


def tables(s: dict) -> list[str]:
    return titled("t = a + b·N + c·N²", [
        {**key_columns(r), "N range": n_range(r["n_min"], r["n_max"]), "range": r["fit_range"],
         "b (s/token)": _with_ci(r["b"], r["b_ci"]), "c (s/token²)": _with_ci(r["c"], r["c_ci"]),
         "c·N²/t at N max": short(r["quadratic_share_at_n_max"]), "max rel residual": short(r["max_rel_residual"])}
        for r in s.get("poly_fits", [])], f"{s['poly_rule']}.")
