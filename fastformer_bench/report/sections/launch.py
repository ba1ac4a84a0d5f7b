"""Launch-bound CUDA points: where the same point timed by launch (k calls enqueued from Python) takes more than
LAUNCH_BOUND times its time by graph (the k calls replayed from a CUDA graph), launching it costs more than
running it, and its launch time says more about Python than about the kernel. Nothing here without both methods."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count, times
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import key_columns, shape_of, slice_of

#: launch time / graph time above which a point is launch-bound
LAUNCH_BOUND = 1.5
#: what must agree for a launch-timed and a graph-timed point to be the same point
_SAME = [k for k in analysis.SLICE if k != "timing"] + ["impl"] + analysis.SHAPE + ["seq_len"]


def launch_vs_graph(frame: pd.DataFrame) -> list[dict]:
    """Each CUDA point timed both ways: its two medians, their ratio, and whether it is launch-bound."""
    t = analysis.timed(frame)
    t = t[t["device"].map(lambda d: str(d).partition("@")[0] == "cuda").astype(bool)]
    launch, graph = t[t["timing"] == "launch"], t[t["timing"] == "graph"]
    if launch.empty or graph.empty:
        return []
    medians = [g.groupby(_SAME, sort=True)["time_median"].median().rename(name)
               for g, name in ((launch, "launch_s"), (graph, "graph_s"))]
    both = pd.concat(medians, axis=1, join="inner").reset_index()
    rows = []
    for _, r in both.iterrows():
        ratio = r["launch_s"] / r["graph_s"]
        rows.append({**analysis.key_dict(_SAME, tuple(r[k] for k in _SAME)), "launch_s": r["launch_s"],
                     "graph_s": r["graph_s"], "launch_over_graph": round(float(ratio), 4),
                     "launch_bound": bool(ratio > LAUNCH_BOUND)})
    return rows


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    rows = launch_vs_graph(frame)
    return {"launch_bound": rows} if rows else {}  # no key at all without both methods: older summaries unchanged


def _named(r: dict) -> str:
    return f"{r['impl']} N = {count(r['seq_len'])} ({times(r['launch_over_graph'])})"


def conclusions(s: dict) -> list[str]:
    """One sentence per slice and shape: which points are launch-bound, and which of those timed both ways are not."""
    groups: dict[tuple, list[dict]] = {}
    for r in s.get("launch_bound", []):
        groups.setdefault((slice_of(r), shape_of(r), r["width"]), []).append(r)
    out = []
    for (slice_, shape, width), group in sorted(groups.items()):
        bound = [r for r in group if r["launch_bound"]]
        if bound:
            out.append(f"- Launch-bound ({slice_}, {shape}, width {width}): timed by launch, "
                       f"{', '.join(_named(r) for r in bound)} took more than {LAUNCH_BOUND:g}x its CUDA-graph time: "
                       "launching these calls from Python costs more than running them, so their launch times "
                       "measure the host, and their graph times the kernels.")
        else:
            out.append(f"- No point is launch-bound ({slice_}, {shape}, width {width}): launch timing stays within "
                       f"{LAUNCH_BOUND:g}x graph timing at every N timed both ways "
                       f"({', '.join(_named(r) for r in group)}).")
    return out


def bound_at(s: dict, row: dict, impl: str, n) -> bool:
    """Whether ``impl`` at N = ``n`` in ``row``'s launch-timed slice and shape is launch-bound."""
    if row.get("timing") != "launch":
        return False
    same = [k for k in _SAME if k not in ("impl", "seq_len", "columns")]
    return any(r["launch_bound"] and r["impl"] == impl and r["seq_len"] == n
               and all(r.get(k) == row.get(k) for k in same) for r in s.get("launch_bound", []))


def tables(s: dict) -> list[str]:
    return titled("Launch timing against CUDA-graph timing", [
        {**key_columns(r), "N": count(r["seq_len"]), "graph ms": f"{r['graph_s'] * 1e3:.4g}",
         "launch ms": f"{r['launch_s'] * 1e3:.4g}", "launch / graph": times(r["launch_over_graph"]),
         "launch-bound": "yes" if r["launch_bound"] else "no"} for r in s.get("launch_bound", [])],
        f"A point is launch-bound where its launch-timed median is more than {LAUNCH_BOUND:g}x its graph-timed one.")
