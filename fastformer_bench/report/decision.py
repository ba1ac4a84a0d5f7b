"""The decision a report leads with: per setting (device, dtype, mode, threads), which additive implementation to
ship, how much faster than the runner-up, how close to the memory roof, and how it fares against each softmax
baseline at N = 8192 and at the largest N both ran.

Pure pandas over the prepared frame (no torch, no plotting). Each setting is read at one shape: the one where the
candidates met the primary baseline at the most N (else the one with the most N), so that every number of a row
but the roof share, which needs inputs far past the cache and says where it was measured, is at that shape.
"""

from __future__ import annotations

import pandas as pd

from fastformer_bench import axes
from fastformer_bench.report import asymptotics
from fastformer_bench.report.analysis import MATCH, SHAPE, SLICE, UNTIMED, baselines, crossovers, key_dict
from fastformer_bench.report.numbers import num, timed

#: the scope a decision is read at when a run measured it: the attention call itself (a layer adds projections
#: and, at a fixed token budget, changes B with N)
CORE = "core"
DEVICE_WORDS = {"cpu": "CPU", "cuda": "GPU"}
#: how each timing method (a record's timing_method) reads in the Answer
TIMING_WORDS = {
    "perf_counter": "wall-clock time around each call, by perf_counter",
    "graph": "device time of CUDA-graph replays, launch cost excluded",
    "launch": "CUDA events around calls launched from Python, launch cost included",
    "cuda_event+l2_flush": "CUDA events around calls launched from Python, the L2 flushed before each",
}


def candidates(facts: dict[str, dict]) -> set[str]:
    """The implementations one would ship: additive and linear in N (all additive ones where none says linear)."""
    additive = {i for i, f in facts.items() if f["family"] == "additive"}
    linear = {i for i in additive if facts[i]["complexity"] == "linear"}
    return linear or additive


def _shape(points: pd.DataFrame, base: pd.DataFrame | None) -> tuple:
    """The shape a setting is read at: most N matched with the primary baseline, then most N, then most
    implementations, then the smallest shape."""
    def rank(item):
        key, g = item
        matched = 0
        if base is not None and len(base):
            same = base.merge(pd.DataFrame([dict(zip(SHAPE, key))]).drop(columns="columns"),
                              on=[k for k in SHAPE if k != "columns"])
            matched = len(set(g["seq_len"]) & set(same["seq_len"]))
        return (-matched, -g["seq_len"].nunique(), -g["impl"].nunique(), key)

    return min(points.groupby(SHAPE, sort=True), key=rank)[0]


def _compared_n(g: pd.DataFrame) -> int:
    """The largest N at which as many candidates ran as can be compared (two, where two ran at all)."""
    per_n = g.groupby("seq_len")["impl"].nunique()
    return int(per_n[per_n >= min(2, int(per_n.max()))].index.max())


def _times_at(g: pd.DataFrame, n: int) -> pd.Series:
    return g[g["seq_len"] == n].groupby("impl")["time_median"].median().sort_values(kind="stable")


def _versus(frame: pd.DataFrame, key: dict, impl: str, base: str, impl_times: pd.Series,
            speedups: list[dict], crossings: list[dict]) -> dict:
    """``impl`` against one baseline at the row's shape: speedup at SPEEDUP_N and at the largest N both ran,
    the crossover, and the baseline's status where it has no time at SPEEDUP_N."""
    n = asymptotics.SPEEDUP_N
    row = {"baseline": base, "at_n": n}
    match = {k: key[k] for k in MATCH if k in key and k != "seq_len"}
    sel = frame
    for k, v in match.items():
        sel = sel[sel[k] == v]
    mine = sel[sel["impl"] == base]
    if mine.empty:
        return {**row, "measured": False}
    same = [r for r in speedups if r["impl"] == impl and r["baseline"] == base
            and all(r.get(k) == key.get(k) for k in SLICE + SHAPE)]
    cross = [r for r in crossings if r["impl"] == impl and r["baseline"] == base
             and all(r.get(k) == key.get(k) for k in SLICE + SHAPE)]
    base_times = timed(mine).groupby("seq_len")["time_median"].median()
    row.update(measured=True, speedup=None, impl_time=None, baseline_time=None, largest_n=None,
               speedup_at_largest_n=None, outcome=None, crossover_n=None, matched_n=None)
    if same:
        s = same[0]
        row.update(speedup=s["speedup"], largest_n=s["largest_n"], speedup_at_largest_n=s["speedup_at_largest_n"])
    if n in base_times.index and n in impl_times.index:
        row.update(impl_time=num(impl_times[n], 4), baseline_time=num(base_times[n], 4))
    elif n not in base_times.index:
        statuses = sorted(set(mine.loc[mine["seq_len"] == n, "status"]))
        row["status_at_n"] = ", ".join(statuses) if statuses else "not measured"
    if cross:
        c = cross[0]
        matched = [int(x) for x, _ in c["time_ratio"]]
        row.update(outcome=c["outcome"], crossover_n=c["crossover_n"], matched_n=[min(matched), max(matched)])
    return row


def _roof(streaming: list[dict], key: dict, impl: str) -> dict | None:
    found = [r for r in streaming if r["impl"] == impl and all(r.get(k) == key.get(k) for k in SLICE)]
    if not found:
        return None
    r = found[0]
    return {k: r.get(k) for k in ("share_median", "copy_bytes_per_s", "share_best_median", "copy_best", "n_values",
                                  "widths", "points", "matching")}


#: the allocator condition a decision is read in: the harness's kept heap (measure/allocator.py), the condition of
#: every point that names none; the other conditions are quoted beside it (``plain``: what a user's process gets)
DECIDED_IN, PLAIN = "warm", "plain"


def condition(t: pd.DataFrame) -> pd.Series:
    """Each row's allocator condition: the one it names, else DECIDED_IN (the sweep process's own)."""
    if "allocator" not in t.columns:
        return pd.Series(DECIDED_IN, index=t.index, dtype=object)
    return t["allocator"].map(lambda v: v if isinstance(v, str) and v not in ("", UNTIMED) else DECIDED_IN)


def decided(frame: pd.DataFrame) -> pd.Series:
    """Which rows of ``frame`` were measured in the condition decisions are read in (DECIDED_IN)."""
    return condition(frame) == DECIDED_IN


def _plain(t: pd.DataFrame, slice_key: dict, shape: dict, impl: str) -> dict | None:
    """``impl`` in a plain process in the row's setting: at the row's shape where measured there (else any shape),
    at the largest N, with the warm heap's time at the same point where the run has it."""
    here = t[(t["impl"] == impl) & (t[list(slice_key)] == pd.Series(slice_key)).all(axis=1)]
    plain = here[here["condition"] == PLAIN]
    if plain.empty:
        return None
    at_shape = plain[(plain[SHAPE] == pd.Series(shape)).all(axis=1)]
    plain = at_shape if len(at_shape) else plain
    top = plain.sort_values(["seq_len"] + SHAPE, kind="stable").iloc[-1]
    same = {k: top[k] for k in SHAPE + ["seq_len"]}
    pick = lambda frame: frame[(frame[list(same)] == pd.Series(same)).all(axis=1)]["time_median"]  # noqa: E731
    seconds = float(pick(plain).median())
    warm = pick(here[here["condition"] == DECIDED_IN])
    out = {"n": int(top["seq_len"]), **{k: (None if pd.isna(top[k]) else int(top[k])) for k in SHAPE},
           "time": num(seconds, 4), "warm_time": None, "ratio_to_warm": None}
    if len(warm):
        out.update(warm_time=num(float(warm.median()), 4), ratio_to_warm=num(seconds / float(warm.median()), 4))
    return out


def decide(frame: pd.DataFrame, facts: dict[str, dict]) -> list[dict]:
    """One row per setting with a candidate timed: its shape, representative N, fastest and runner-up there,
    share of the copy roof, and its standing against every baseline (primary first)."""
    every = timed(frame).copy()
    every["condition"] = condition(every)
    slice_keys = [k for k in SLICE if k != "allocator"]
    # one decision per setting, in the warm heap (a point naming "warm" and one naming none are the same setting)
    t = every[every["condition"] == DECIDED_IN].copy()
    frame = frame[decided(frame)].copy()
    for f in (t, frame):
        if "allocator" in f.columns:
            f["allocator"] = UNTIMED
    ships = candidates(facts)
    t_cand = t[t["impl"].isin(ships)]
    if t_cand.empty:
        return []
    if (t_cand["scope"] == CORE).any():
        t_cand = t_cand[t_cand["scope"] == CORE]
    bases = baselines(facts)
    speedups = asymptotics.speedups(frame)
    crossings = crossovers(frame, facts)
    streaming = asymptotics.streaming_bandwidth(frame)
    rows = []
    for slice_key, s in t_cand.groupby(SLICE, sort=True):
        here = t[(t[SLICE] == pd.Series(dict(zip(SLICE, slice_key)))).all(axis=1)]
        base = here[here["impl"] == bases[0]] if bases else None
        shape = _shape(s, base)
        g = s[(s[SHAPE] == pd.Series(dict(zip(SHAPE, shape)))).all(axis=1)]
        compared = _compared_n(g)
        ranked = _times_at(g, compared)
        key = key_dict(SLICE + SHAPE, tuple(slice_key) + tuple(shape))
        fastest = ranked.index[0]
        # the winner where the candidates were compared, at the largest N it ran (alone, maybe)
        impl_times = g[g["impl"] == fastest].groupby("seq_len")["time_median"].median()
        n = int(impl_times.index.max())
        sl = frame[(frame[SLICE] == pd.Series(dict(zip(SLICE, slice_key)))).all(axis=1)]
        rows.append({**key, "n": n, "candidates": int(g["impl"].nunique()),
                     "fastest": {"impl": fastest, "time": num(impl_times[n], 4)},
                     "runner_up": {"impl": ranked.index[1], "n": compared, "time": num(ranked.iloc[1], 4),
                                   "ratio": num(ranked.iloc[1] / ranked.iloc[0], 4)} if len(ranked) > 1 else None,
                     "roof": _roof(streaming, key, fastest), "allocator": DECIDED_IN,
                     "timing_method": _timing_method(g[g["impl"] == fastest]),
                     "plain": _plain(every, dict(zip(slice_keys, (slice_key[SLICE.index(k)] for k in slice_keys))),
                                     dict(zip(SHAPE, shape)), fastest),
                     "versus": [_versus(sl, key, fastest, b, impl_times, speedups, crossings) for b in bases]})
    return rows


def _timing_method(points: pd.DataFrame) -> str | None:
    """The timing method most of the fastest's points were timed with (None where the records do not say)."""
    if "timing_method" not in points.columns:
        return None
    methods = points["timing_method"].dropna()
    return str(methods.mode().iloc[0]) if len(methods) else None


def ran_alone(row: dict) -> bool:
    """Whether a decision row's setting had one additive implementation: its fastest is the only one run."""
    return row.get("candidates") == 1


def device_word(device: str) -> str:
    """'CPU', 'GPU', or a cluster host's 'CPU (node-a)'."""
    base, _, host = str(device).partition("@")
    return DEVICE_WORDS.get(base, base) + (f" ({host})" if host else "")


def setting(row: dict, device: bool = True) -> str:
    """e.g. 'CPU float32 fwd, 1 thread' (a GPU's thread count says nothing of its speed, so it is left out)."""
    words = ([device_word(row["device"])] if device else []) + [row["dtype"], row["mode"]]
    words += [f"{row['scope']} scope"] if row.get("scope") != CORE else []
    text = " ".join(words)
    if str(row["device"]).partition("@")[0] == "cpu" and row.get("threads"):
        text += f", {row['threads']} thread{'s' if row['threads'] != 1 else ''}"
    # graph- and launch-timed (cold- and warm-L2) rows of one dtype and mode are different settings: name them
    return text + "".join(f", {axes.method_words(k, row[k])}" for k in ("timing", "cache")
                          if row.get(k) not in (None, UNTIMED))


def shape(row: dict) -> str:
    """e.g. 'B = 1, D = 256, H = 8, C = 3'."""
    parts = [f"B = {row['batch']}", f"D = {row['width']}", f"H = {row['heads']}"]
    parts += [f"C = {row['columns']}"] if row.get("columns") else []
    return ", ".join(parts + (["masked"] if row.get("masked") else []))
