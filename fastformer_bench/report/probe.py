"""The capability probe's report: what additive attention learns next to softmax attention, with seeds' spread.

Works from the probe records' DataFrame alone (never imports torch), like the speed report, and is as
reproducible: the same records give byte-identical REPORT.md and summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fastformer_bench.report import output, probe_cells, probe_decision, probe_speed, probe_theory
from fastformer_bench.report.fmt import count
from fastformer_bench.report.plotting import legend, n_tick, percent, save, style, units
from fastformer_bench.report.probe_decision import MIXER_COLOURS, pct1, where

MIXER_MARKERS = {"additive": "o", "softmax": "s"}
#: the longest sequence the example figure draws
EXAMPLE_TOKENS = 128


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"].copy()


def _spread(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Accuracy per group over seeds: mean, min, max, seeds."""
    grouped = frame.groupby(by, dropna=False)["accuracy"]
    table = grouped.agg(mean="mean", low="min", high="max", seeds="count").reset_index()
    return table.sort_values(by).reset_index(drop=True)


def _mixer_label(row) -> str:
    return f"additive C={row['columns']}" if row["mixer"] == "additive" else "softmax"


def _inconclusive(points: pd.DataFrame, by: list[str]) -> set[tuple]:
    """The groups of ``by`` with a point whose cell is inconclusive (its control below the bar)."""
    if "conclusive" not in points.columns:
        return set()
    found = points[points["conclusive"] == 0]
    return {tuple(k) if isinstance(k, tuple) else (k,) for k in found.groupby(by).groups}


def _grey_markers(ax, xs, ys, marker: str, bar: float) -> None:
    """Inconclusive cells' points, drawn over their line in grey (the legend says what grey means)."""
    if len(xs):
        ax.scatter(xs, ys, marker=marker, s=46, color=probe_cells.GREY, edgecolors=probe_cells.EDGE,
                   hatch=probe_cells.HATCH, zorder=4, label=probe_cells.label(bar))


def _mixer_lines(ax, points: pd.DataFrame, x: str, chance: float, bar: float = probe_cells.BAR) -> None:
    """One line per mixer (mean over seeds, band: the seeds' range) against ``x``, chance dotted, and the points
    of inconclusive cells greyed."""
    grey = _inconclusive(points, ["mixer_label", x])
    for label, line in _spread(points, ["mixer_label", x]).groupby("mixer_label"):
        mixer = label.split()[0]
        ax.plot(line[x], line["mean"], marker=MIXER_MARKERS[mixer], color=MIXER_COLOURS[mixer], label=label,
                alpha=1.0 if label in ("softmax", "additive C=3") else 0.6)
        ax.fill_between(line[x], line["low"], line["high"], color=MIXER_COLOURS[mixer], alpha=0.15)
        greyed = line[[(label, v) in grey for v in line[x]]]
        _grey_markers(ax, list(greyed[x]), list(greyed["mean"]), MIXER_MARKERS[mixer], bar)
    ax.axhline(chance, color="#777777", linestyle=":", label="chance")


def _accuracy_axes(ax, ticks: list) -> None:
    """Accuracy in percent; the swept values, and only they, as x ticks."""
    ax.set_xticks(ticks, [n_tick(int(t)) for t in ticks])
    ax.minorticks_off()
    percent(ax.yaxis)


def _task_panels(ok: pd.DataFrame) -> tuple[Figure, list]:
    """One figure with a panel per task, side by side, in the tasks' sorted order (as ``groupby("task")``)."""
    tasks = ok["task"].nunique()
    fig = Figure(figsize=(4.2 * tasks, 3.8), layout="constrained")
    return fig, list(fig.subplots(1, tasks, squeeze=False)[0])


def accuracy_vs_length(frame: pd.DataFrame, directory: Path, bar: float = probe_cells.BAR) -> list[dict]:
    """Accuracy against N, one panel per task, one line per mixer (band: the seeds' range; dotted: chance)."""
    ok = _ok(frame)
    if ok.empty or ok["seq_len"].nunique() < 2:
        return []
    ok["mixer_label"] = ok.apply(_mixer_label, axis=1)
    with style():
        fig, panels = _task_panels(ok)
        for ax, (task, part) in zip(panels, ok.groupby("task")):
            sweeps = part.groupby(["mixer_label", *LINE]).filter(
                lambda g: g["seq_len"].nunique() >= 2)
            _mixer_lines(ax, sweeps, "seq_len", float(part["chance"].iloc[0]), bar)
            ax.set(xscale="log", ylim=(0, 1.02), title=task, xlabel="sequence length N", ylabel="held-out accuracy")
            _accuracy_axes(ax, sorted(sweeps["seq_len"].unique()))
        legend(fig, list(panels))
        return [save(fig, directory, "probe_accuracy_vs_length",
                     "Probe accuracy vs sequence length (mean over seeds; band: min–max)", "probe_length")]


def _mqar_sweep(frame: pd.DataFrame, directory: Path, x: str, panel: str, xlabel: str, figure: tuple,
                bar: float = probe_cells.BAR) -> list[dict]:
    """MQAR accuracy against ``x``: one panel per value of ``panel`` and per N, vocabulary and step budget (a
    configuration measured at two or more values of ``x``), one line per mixer; ``figure``: name, title, kind."""
    ok = _ok(frame)
    ok = ok[ok["task"] == "mqar"]
    keys = [panel, "seq_len", "vocab", "grid_steps"]
    ok = ok.groupby(keys).filter(lambda g: g[x].nunique() >= 2)
    if ok.empty:
        return []
    ok["mixer_label"] = ok.apply(_mixer_label, axis=1)
    panels = [part for _, part in ok.groupby(keys)]  # in the order of the keys' values
    with style():
        fig = Figure(figsize=(3.8 * len(panels), 3.6), layout="constrained")
        for ax, part in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            _mixer_lines(ax, part, x, float(part["chance"].iloc[0]), bar)
            first = part.iloc[0]
            _ceiling_line(ax, part, x, int(first["vocab"]))
            budgets = sorted({int(b) for b in part["steps"]})
            budget = count(budgets[0]) if len(budgets) == 1 else f"{count(budgets[0])}–{count(budgets[-1])}"
            where = f"N={int(first['seq_len'])}, vocab {int(first['vocab'])}, {budget} steps"
            title = f"{int(first['pairs'])} pairs" if panel == "pairs" else f"{panel} {int(first[panel])}"
            ax.set(ylim=(0, 1.02), title=f"{title} ({where})", xlabel=xlabel, ylabel="held-out accuracy")
            if x == "pairs":
                ax.set_xscale("log", base=2)
            _accuracy_axes(ax, sorted(part[x].unique()))
        legend(fig, fig.axes)
        return [save(fig, directory, *figure)]


def _ceiling_line(ax, part: pd.DataFrame, x: str, vocab: int) -> None:
    """The one-pooled-pair ceiling (probe_theory) against ``x``, dashed."""
    xs = sorted(part[x].unique())
    pairs = xs if x == "pairs" else [int(part["pairs"].iloc[0])] * len(xs)
    ax.plot(xs, [probe_theory.ceiling(int(p), probe_theory.values(vocab)) for p in pairs], color="#0072B2",
            linestyle="--", linewidth=1.2, label="additive ceiling (one pair pooled): (1 + (p − 1)/V)/p, V values")


def accuracy_vs_width(frame: pd.DataFrame, directory: Path, bar: float = probe_cells.BAR) -> list[dict]:
    """MQAR accuracy against model width, one panel per number of pairs (and N, vocabulary, step budget)."""
    return _mqar_sweep(frame, directory, "width", "pairs", "model width D", (
        "probe_mqar_vs_width", "MQAR accuracy vs width (Zoology's test of recall; mean over seeds, band: min–max)",
        "probe_width"), bar)


def accuracy_vs_pairs(frame: pd.DataFrame, directory: Path, bar: float = probe_cells.BAR) -> list[dict]:
    """MQAR accuracy against the number of key-value pairs, one panel per width (and N, vocabulary, budget)."""
    return _mqar_sweep(frame, directory, "pairs", "width", "key-value pairs (log scale)", (
        "probe_mqar_vs_pairs", "MQAR accuracy vs pairs, per width (mean over seeds, band: min–max)", "probe_pairs"),
        bar)


def pareto(frame: pd.DataFrame, directory: Path, bar: float = probe_cells.BAR) -> list[dict]:
    """Accuracy against training time per task: what each mixer's accuracy costs on this CPU."""
    ok = _ok(frame)
    if ok.empty:
        return []
    # a swept point's train_s is every run's: each learning rate, each round of its cell
    swept = "sweep" in ok.columns and ok["sweep"].notna().any()
    xlabel = "training time, every lr and round (marker size ~ N)" if swept else "training time (marker size ~ N)"
    with style():
        fig, panels = _task_panels(ok)
        for ax, (task, part) in zip(panels, ok.groupby("task")):
            for mixer, points in part.groupby("mixer"):
                grey = points["conclusive"].eq(0) if "conclusive" in points else pd.Series(False, points.index)
                sizes = 12 + 3 * np.log2(points["seq_len"]) ** 2
                ax.scatter(points["train_s"][~grey], points["accuracy"][~grey], s=sizes[~grey],
                           marker=MIXER_MARKERS[mixer], color=MIXER_COLOURS[mixer], alpha=0.6, label=mixer)
                if grey.any():
                    ax.scatter(points["train_s"][grey], points["accuracy"][grey], s=sizes[grey],
                               marker=MIXER_MARKERS[mixer], color=probe_cells.GREY, edgecolors=probe_cells.EDGE,
                               alpha=0.6, label=probe_cells.label(bar))
            ax.set(xscale="log", ylim=(0, 1.02), title=task, xlabel=xlabel, ylabel="held-out accuracy")
            units(ax.xaxis, "s")
            percent(ax.yaxis)
        legend(fig, list(panels))
        return [save(fig, directory, "probe_pareto", "Accuracy vs training time (each point: one seed and size)",
                     "probe_pareto")]


def example_weights(frame: pd.DataFrame, directory: Path, bar: float = probe_cells.BAR) -> list[dict]:
    """One held-out topic sequence with the additive model's learned pooling weights a_c drawn over its tokens."""
    ok = _ok(frame)
    ok = ok[(ok["task"] == "topic") & (ok["mixer"] == "additive") & ok["example"].notna()]
    if ok.empty:
        return []
    record = ok.sort_values(["seq_len", "columns", "seed"], ascending=[False, True, True]).iloc[0]
    example = record["example"]
    tokens = min(len(example["tokens"]), EXAMPLE_TOKENS)
    relevant = np.array(example["relevant"][:tokens], dtype=bool)
    weights = np.array(example["weights"])[:, :, :tokens]  # [layers, C-1, N]
    layers, columns = weights.shape[:2]
    with style():
        fig = Figure(figsize=(11, 1.6 + 1.5 * layers * columns), layout="constrained")
        panels = fig.subplots(layers * columns, 1, squeeze=False)[:, 0]
        positions = np.arange(tokens)
        for index, ax in enumerate(panels):
            layer, column = divmod(index, columns)
            row = weights[layer, column]
            ax.bar(positions, row, color=np.where(relevant, "#D55E00", "#999999"), width=0.9)
            auc = (record["query_auc"] or [[None]])[layer][column]
            ax.set(ylabel=f"a_{column}", xlim=(-1, tokens),
                   title=f"layer {layer + 1}, column {column}" + (f": AUC {auc:.2f}" if auc is not None else ""))
        panels[-1].set_xlabel("token position (orange: the class's topic words; grey: noise words)")
        title = (f"Learned static-query weights a_c over one held-out topic sequence (N={int(record['seq_len'])}, "
                 f"seed {int(record['seed'])}, first {tokens} tokens)")
        return [save(fig, directory, "probe_example_weights", title, "probe_example")]


FIGURES = (accuracy_vs_length, accuracy_vs_width, accuracy_vs_pairs, pareto, example_weights)


def grid_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``grid_steps``: each point's steps before its cell's extensions (its steps where the records
    do not say)."""
    if "extensions" not in frame.columns:
        return frame.assign(grid_steps=frame["steps"])
    doubled = 2 ** frame["extensions"].fillna(0).astype(int)
    return frame.assign(grid_steps=(frame["steps"] // doubled).astype(int))


def summarize(frame: pd.DataFrame) -> dict:
    """Tables and headline numbers (JSON-ready) from the probe records."""
    if "grid_steps" not in frame.columns:
        frame = grid_steps(frame)
    ok = _ok(frame)
    by = ["task", "mixer", "columns", "seq_len", "width", "heads", "layers", "pairs", "vocab", "grid_steps",
          "steps"]
    table = _spread(ok, by) if not ok.empty else pd.DataFrame(columns=[*by, "mean", "low", "high", "seeds"])
    chance = ok.groupby(by)["chance"].first().reset_index() if not ok.empty else None
    if chance is not None:
        table = table.merge(chance, on=by)
    times = ok.groupby(by)["train_s"].median().reset_index(name="train_s") if not ok.empty else None
    if times is not None:
        table = table.merge(times, on=by)
    if not ok.empty:
        if "conclusive" not in ok.columns:  # a frame not through build: the older rule at the default bar
            ok = probe_cells.mark(ok, probe_cells.BAR, None)
        table = table.merge(probe_cells.columns(ok, by), on=by)
    auc = ok[ok["query_auc_mean"].notna()].groupby(["task", "columns", "seq_len"])["query_auc_mean"]
    return {
        "points": int(len(frame)),
        "status_counts": {str(k): int(v) for k, v in frame["status"].value_counts().sort_index().items()},
        "accuracy": json.loads(table.to_json(orient="records")),
        "static_query_auc": json.loads(auc.agg(["mean", "min", "max"]).reset_index().to_json(orient="records")),
        "headlines": headlines(table),
        "task_kinds": {str(t): str(k) for t, k in sorted(frame.groupby("task")["task_kind"].first().items())}
        if "task_kind" in frame.columns else {},
        "failed": [{"point": f"{r.task} {r.mixer} N={r.seq_len} seed={r.seed}", "status": r.status,
                    "reason": r.reason} for r in frame[frame["status"] != "ok"].itertuples()],
    }


#: the probe's own sanity bars (issue 14): if a mixer cannot reach these, the probe is broken, not the mixer.
#: Each: what it says, the configuration (C = 3, the settings' step budget, the study's main width 64), the bar.
SANITY_BAR = 0.95
SANITY = (
    ("softmax solves MQAR at N = 64, 8 pairs", {"task": "mqar", "mixer": "softmax", "seq_len": 64, "pairs": 8}),
    ("additive solves topic at N = 256", {"task": "topic", "mixer": "additive", "seq_len": 256}),
    ("softmax solves topic at N = 256", {"task": "topic", "mixer": "softmax", "seq_len": 256}),
)


def sanity(frame: pd.DataFrame, steps: int | None) -> list[dict]:
    """Each sanity bar against this run's own points at its configuration (width 64, C = 3, the settings' steps):
    every seed's accuracy, their mean, and how many seeds reach the bar; "measured": False where the run has none."""
    ok = _ok(frame)
    found = []
    for claim, key in SANITY:
        rows = ok[(ok["columns"] == 3) & (ok["width"] == 64)] if not ok.empty else ok
        if steps is not None and not rows.empty:
            rows = rows[rows["grid_steps" if "grid_steps" in rows else "steps"] == steps]
        for name, value in key.items():
            rows = rows[rows[name] == value] if not rows.empty else rows
        seeds = rows.sort_values("seed")[["seed", "accuracy"]] if not rows.empty else rows
        entry = {"claim": claim, **key, "width": 64, "bar": SANITY_BAR, "measured": not seeds.empty}
        if not seeds.empty:
            accuracies = [float(a) for a in seeds["accuracy"]]
            entry.update(seeds=[int(s) for s in seeds["seed"]], accuracy=accuracies,
                         mean=float(np.mean(accuracies)),
                         seeds_at_bar=sum(a >= SANITY_BAR for a in accuracies))
        found.append(entry)
    return found


def _sanity_lines(checks: list[dict]) -> list[str]:
    lines = []
    for c in checks:
        if not c["measured"]:
            lines.append(f"- {c['claim']} (width 64): not in this run.")
            continue
        per_seed = " / ".join(pct1(a) for a in c["accuracy"])
        verdict = ("every seed reaches it" if c["seeds_at_bar"] == len(c["accuracy"]) else
                   f"{len(c['accuracy']) - c['seeds_at_bar']} of {len(c['accuracy'])} seeds below it")
        lines.append(f"- {c['claim']} (width 64, bar {pct1(c['bar'])}): mean {pct1(c['mean'])}; seeds "
                     f"{', '.join(str(s) for s in c['seeds'])}: {per_seed}; {verdict}.")
    return lines


def _gap(table: pd.DataFrame, task: str, key: dict) -> dict | None:
    rows = table[(table["task"] == task) & (table["columns"] == 3)]
    for name, value in key.items():
        rows = rows[rows[name] == value]
    found = {m: rows[rows["mixer"] == m] for m in ("additive", "softmax")}
    if any(part.empty for part in found.values()):
        return None
    additive, softmax = (found[m].iloc[0] for m in ("additive", "softmax"))
    extra = {"steps": int(softmax["steps"]), "conclusive": probe_cells.flag(softmax.get("conclusive")),
             "control_note": softmax.get("control_note")}
    if "lr" in softmax:
        extra["lr"] = {"softmax": softmax["lr"], "additive": additive["lr"]}
    if "extensions" in softmax and pd.notna(softmax["extensions"]):
        extra["extensions"] = int(softmax["extensions"])
    return {"task": task, **{k: int(v) for k, v in key.items()}, "additive": float(additive["mean"]),
            "softmax": float(softmax["mean"]), "additive_range": [float(additive["low"]), float(additive["high"])],
            "softmax_range": [float(softmax["low"]), float(softmax["high"])], "seeds": int(additive["seeds"]),
            "chance": float(additive["chance"]) if "chance" in additive and pd.notna(additive["chance"]) else None,
            "gap_points": round(100 * float(softmax["mean"] - additive["mean"]), 1), **extra}


#: what makes two configurations of one task the same sweep line (besides the swept axis); grid_steps: the
#: budget the grid set, before the runner's extensions of an inconclusive cell (each doubles its steps)
LINE = ["width", "heads", "layers", "pairs", "vocab", "grid_steps"]


def headlines(table: pd.DataFrame) -> list[dict]:
    """Additive vs softmax (C = 3) along each task's N sweep (the configuration measured at the most N), along
    each width sweep (a configuration measured at several widths, one N), and along each pairs sweep (several
    pairs, one N and width) not already listed by a width sweep."""
    found: list[dict] = []
    if table.empty:
        return found
    listed: set[tuple] = set()
    both = table[table["columns"] == 3]
    for task in sorted(both["task"].unique()):
        part = both[both["task"] == task]
        lines = part.groupby(LINE)["seq_len"].nunique()
        if not lines.empty:  # the configuration measured at the most N (all N, when one was measured)
            key = dict(zip(LINE, lines.idxmax()))
            for n in sorted(part["seq_len"].unique()):
                gap = _gap(table, task, {"seq_len": int(n), **key})
                if gap:
                    found.append({**gap, "sweep": "length"})
        for axis in ("width", "pairs"):
            others = [k for k in LINE if k != axis]
            for values, sweep in part.groupby([*others, "seq_len"]):
                if sweep[axis].nunique() < 2:
                    continue
                key = dict(zip([*others, "seq_len"], values))
                for value in sorted(sweep[axis].unique()):
                    gap = _gap(table, task, {**key, axis: int(value)})
                    identity = (task, *(gap[k] for k in [*LINE, "seq_len"])) if gap else None
                    if gap and identity not in listed:
                        listed.add(identity)
                        found.append({**gap, "sweep": axis})
    return found


def _settings(runs: list[dict]) -> dict:
    return next((r["env"].get("settings") for r in runs if r["env"].get("settings")), {}) or {}


def _session_lines(runs: list[dict]) -> list[str]:
    """What run.json says of sessions that resumed the run under other conditions (their points' train_s differ)."""
    lines = []
    for run in runs:
        for session in run["env"].get("resumed_sessions") or []:
            if isinstance(session, dict) and session.get("note"):
                added = f"{session['points_added']} points" if session.get("points_added") else "points"
                lines.append(f"- A resumed session added {added}: {session['note']}.")
    return lines


def title(runs: list[dict]) -> str:
    """e.g. 'Capability probe: what additive attention gives up against softmax attention (AMD EPYC, 2 cores)'."""
    from fastformer_bench.report.markdown import machine

    return f"Capability probe: what additive attention gives up against softmax attention ({machine(runs)})"


def _conditions(settings: dict, runs: list[dict]) -> list[str]:
    return ["## Conditions", "",
            f"- Training: {settings.get('steps', '?')} AdamW steps (unless a grid set its own budget: the "
            f"table's steps column) of {settings.get('batch_tokens', '?')} tokens "
            f"(batch = tokens // N sequences), {settings.get('workers', 1)} point(s) at once, peak "
            f"learning rate {_lr_words(settings)} (10 % warm-up, cosine decay), weight decay "
            f"{settings.get('weight_decay', '?')}, {settings.get('threads', '?')} CPU thread(s), float32; every "
            "batch generated fresh from the seed (no example is seen twice).",
            f"- Accuracy: on {settings.get('eval_examples', '?')} held-out sequences from another seed stream "
            "(MQAR: over query positions). Models differ only in the mixer: same embedding, positions, MLP "
            "blocks, norms, head, width and depth.",
            "- Spread: mean over seeds, with the lowest and highest seed in brackets.",
            "- Every accuracy is after a fixed step budget, the same for both mixers at a configuration: a mixer "
            "that falls at a longer N (or a narrower width, or more pairs) may only need more steps there. The "
            "probe compares what the mixers learn for the same training, not what they could learn without "
            "limit.", *_session_lines(runs), ""]


def _lr_words(settings: dict) -> str:
    """The settings' one learning rate, or, where they sweep several, where each point's comes from."""
    lrs = settings.get("lrs") or []
    if len(lrs) > 1:
        return "chosen per point by validation accuracy (Training protocol)"
    return f"{float(lrs[0]):g}" if lrs else str(settings.get("lr", "?"))


def _lr_list(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


def protocol(settings: dict, bar: float) -> list[str]:
    """The Training protocol paragraph, from run.json's settings (lrs, val_examples, bar, steps, max_steps); none
    for runs of one learning rate and no extensions (a cap at or below the steps)."""
    swept = len(settings.get("lrs") or []) > 1
    if not swept and (settings.get("max_steps") or 0) <= (settings.get("steps") or 0):
        return []
    said = []
    if swept:
        said.append(f"Every point (a mixer, its columns and a seed) trains at each learning rate of "
                    f"{_lr_list(settings['lrs'])} and keeps the one with the highest accuracy on "
                    f"{count(settings['val_examples']) if settings.get('val_examples') else 'the'} validation "
                    "sequences, a split apart from the held-out sequences its reported accuracy is measured on.")
    said.append(f"A cell (the points that differ only in mixer, implementation, columns and seed) is conclusive "
                f"when its control reaches {pct1(bar)} on every seed: softmax attention on pairwise tasks, both "
                "mixers on global tasks.")
    if (settings.get("max_steps") or 0) > (settings.get("steps") or 0):
        said.append(f"An inconclusive cell trains again with its steps doubled (an extension), from the grid's "
                    f"budget ({count(settings['steps']) if settings.get('steps') else '?'} steps unless the grid "
                    f"set its own) up to the cap of {count(settings['max_steps'])} steps; the tables give each "
                    "cell's final budget and how many extensions it took.")
    said.append("A cell still inconclusive at the end is reported as inconclusive, greyed in the figures, and "
                "never as a difference: it shows the budget was too small, not what additive attention gives up.")
    return ["## Training protocol", "", " ".join(said), ""]


def _lr_budget(h: dict) -> str:
    """', 1,200 steps (2 extensions; lr softmax 0.003, additive 0.01)' where the records carry them, else
    nothing."""
    if "extensions" not in h and "lr" not in h:
        return ""
    lr = h.get("lr") or {}
    extensions = f"{probe_cells.extensions_text(h['extensions'])}; " if h.get("extensions") is not None else ""
    return (f", {count(h['steps'])} steps ({extensions}lr softmax {lr.get('softmax', '-')}, additive "
            f"{lr.get('additive', '-')})")


def _identity(h: dict) -> str:
    """What makes two headlines one comparison: everything but the sweep that listed it."""
    return json.dumps({k: v for k, v in h.items() if k != "sweep"}, sort_keys=True, default=str)


def _comparisons(summary: dict, steps: int | None) -> list[str]:
    lines = ["## Every comparison", "", f"- {summary['points']} points: "
             + ", ".join(f"{c} {status}" for status, c in summary["status_counts"].items()) + "."]
    sweeps: dict[tuple, list[str]] = {}
    for h in summary["headlines"]:  # a comparison on two sweeps (N and pairs, say) is listed once, naming both
        sweeps.setdefault(_identity(h), []).append(h["sweep"])
    for h in summary["headlines"]:
        names = sweeps.pop(_identity(h), None)
        if names is None:
            continue
        named = [n for n in names if n != "length"]
        sweep = (f" ({' and '.join(named)} sweep{'s' if len(named) > 1 else ''}"
                 + (", also the length sweep" if "length" in names and named else "") + ")") if named else ""
        said = (f"softmax ahead by {h['gap_points']:+.1f} points" if h.get("conclusive") is not False else
                f"inconclusive: {h.get('control_note') or 'the control missed the bar'}")
        at = where(h, h["steps"]) + _lr_budget(h) if _lr_budget(h) else where(h, steps)
        lines.append(f"- {h['task']} at {at}{sweep}: additive {pct1(h['additive'])} "
                     f"[{pct1(h['additive_range'][0])}–{pct1(h['additive_range'][1])}] vs softmax "
                     f"{pct1(h['softmax'])} [{pct1(h['softmax_range'][0])}–{pct1(h['softmax_range'][1])}] "
                     f"({h['seeds']} seeds): {said}.")
    return lines + [""]


def _decision(summary: dict, steps: int | None, headline: list[dict]) -> list[str]:
    rows = summary.get("decision") or []
    if not rows:
        return []
    seeds = sorted({r["seeds"] for r in rows})
    bar = pct1(rows[0]["control"]["bar"])
    if (summary.get("control") or {}).get("source") == "records":
        among = "the conclusive ones (the cell's control at the bar on every seed)"
        note = (f"¹ The cell is conclusive: its control (softmax attention on pairwise tasks, both mixers on global "
                f"tasks) reached {bar} on every seed at that budget, so the training can teach the task and a gap is "
                "the mixer's. Where no cell of a task is conclusive, the row states no difference: the budget, not "
                "the mixer.")
    else:
        among = "those where softmax reached the probe's sanity bar"
        note = (f"¹ Softmax reaches the probe's sanity bar ({bar}) at that comparison: the training can teach the "
                "task, so a gap is the mixer's. Where it does not, the gap says nothing.")
    return ["## Decision", "",
            f"Per task, the comparison (C = 3, width and step budget as stated; {'/'.join(map(str, seeds))} seeds) "
            f"with the largest gap among {among}: the most additive attention was seen to give up on a task the "
            "training can teach.", "",
            output.table(probe_decision.table_rows(rows, steps)), "", note, "",
            *[line for f in headline for line in (f"![{f['title']}]({f['file']})", "")]]


def _configuration(r: dict) -> dict:
    """A row of the accuracy table: the cell, its chosen lr and budget where the records carry them, whether its
    control passed."""
    row = {"task": r["task"], "mixer": r["mixer"], "C": r["columns"], "N": count(r["seq_len"]), "D": r["width"],
           "layers": r["layers"], "pairs": r["pairs"] if r["task"] == "mqar" else "-"}
    if "lr" in r:
        row["lr"] = r["lr"]
    row["steps"] = probe_cells.budget(r.get("steps"), r.get("extensions"))
    conclusive = r.get("conclusive")
    row.update({"accuracy": f"{pct1(r['mean'])} [{pct1(r['low'])}–{pct1(r['high'])}]", "seeds": r["seeds"],
                "chance": pct1(r["chance"]), "control": "-" if conclusive is None else
                "conclusive" if conclusive else "inconclusive",
                # a swept point's train_s is every run's (each learning rate, each round of its cell)
                "train time, every run (median)" if "lr" in r else "train time (median)": f"{r['train_s']:.1f} s"})
    return row


def render(summary: dict, runs: list[dict]) -> str:
    """REPORT.md of a probe run: the answer and the decision first, then the details, the environment last."""
    from fastformer_bench.report.markdown import environment

    settings = _settings(runs)
    steps = settings.get("steps")
    headline = [f for f in summary["figures"] if f["kind"] in HEADLINE_KINDS]
    lines = [f"# {title(runs)}", "",
             f"Results: {', '.join(r['label'] for r in runs)}. Regenerate with `fastformer-bench report`; do not edit "
             "by hand.", "", "## Answer", "",
             " ".join(probe_decision.answer(summary.get("decision") or [], steps, settings)), ""]
    lines += _decision(summary, steps, headline)
    if summary.get("speed"):
        lines += probe_speed.section(summary["speed"]["join"], summary["speed"]["inputs"], steps,
                                     [f for f in summary["figures"] if f["kind"] == "probe_speed"])
    bar = (summary.get("control") or {}).get("bar", probe_cells.BAR)
    lines += protocol(settings, bar) + _conditions(settings, runs) + _comparisons(summary, steps)
    lines += probe_theory.section(summary.get("mqar_ceiling") or [])
    if summary.get("sanity"):
        lines += ["## Sanity (the probe's own bar)", "",
                  "Where a mixer misses these, the training is suspect, not the mixer. From this run's points, "
                  "at the settings' step budget:", "", *_sanity_lines(summary["sanity"]), ""]
    others = [f for f in summary["figures"] if f not in headline and f["kind"] != "probe_speed"]
    if others:
        lines += ["## Figures", ""] + [f"### {f['title']}\n\n![{f['title']}]({f['file']})\n" for f in others]
    lines += ["## Accuracy per configuration", "", output.table([_configuration(r) for r in summary["accuracy"]]), ""]
    if summary["static_query_auc"]:
        lines += ["## Static-query analysis", "",
                  "ROC AUC of the learned pooling weights a_c (head-averaged) for the tokens that carry the answer "
                  "(topic words; count's markers) against the others, over 64 held-out sequences, averaged over "
                  "layers and columns: 0.5 = the static query ignores them, 1.0 = it ranks every one above every "
                  "other token.", "", output.table([
                      {"task": r["task"], "C": r["columns"], "N": count(r["seq_len"]), "AUC mean": f"{r['mean']:.3f}",
                       "min (seed)": f"{r['min']:.3f}", "max (seed)": f"{r['max']:.3f}"}
                      for r in summary["static_query_auc"]]), ""]
    if summary["failed"] or summary.get("unreadable"):
        lines += ["## Caveats", ""]
        lines += [f"- {f['point']}: {f['status']} ({f['reason']})" for f in summary["failed"]]
        lines += [f"- unreadable line: {u}" for u in summary.get("unreadable", [])]
        lines.append("")
    lines += environment(runs)
    return "\n".join(lines).rstrip("\n") + "\n"


#: the figures the Decision section shows (the others follow the details)
HEADLINE_KINDS = ("probe_decision", "probe_length")


def _impls(frame: pd.DataFrame) -> dict[str, str]:
    """The implementation each mixer's models used (the records' ``impl``; the most common where they differ);
    a mixer whose records name none is left out."""
    found = {}
    for mixer in ("additive", "softmax"):
        impls = frame.loc[frame["mixer"] == mixer, "impl"].dropna() if "impl" in frame else pd.Series(dtype=str)
        if not impls.empty:
            found[mixer] = str(impls.value_counts().sort_index().idxmax())
    return found


def build(frame: pd.DataFrame, runs: list[dict], out_dir: Path, unreadable: list[str],
          speed: list[dict] | None = None) -> dict:
    """Figures, REPORT.md and summary.json of a probe run; ``speed``: the records of a speed study to set the
    accuracies beside (probe_speed), when given."""
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(figures_dir.glob("*.png")):  # figures of an earlier report must not linger beside new ones
        stale.unlink()
    steps = int(_settings(runs).get("steps", 0))  # for records that do not say (every record here does, so far)
    frame = frame.assign(steps=frame["steps"].fillna(steps).astype(int) if "steps" in frame else steps)
    settings = _settings(runs)
    bar = float(settings.get("bar", probe_cells.BAR))
    frame = probe_cells.mark(grid_steps(frame), bar, settings.get("max_steps"))
    summary = summarize(frame)
    summary["control"] = {"bar": bar, "source": "records" if probe_cells.recorded(frame) else "accuracies"}
    summary["sanity"] = sanity(frame, steps or None)
    summary["decision"] = probe_decision.decide(summary["headlines"], summary["task_kinds"], bar)
    drawn = probe_decision.figure(summary["decision"], figures_dir, steps or None)
    summary["mqar_ceiling"] = probe_theory.cells(summary["accuracy"])
    used = _impls(frame)
    if speed and len(used) == 2:  # both mixers' implementations are known: their times can be looked up
        rows = probe_speed.join(summary["headlines"], used, speed, bar)
        summary["speed"] = {"inputs": sorted({str(r.get("run_id")) for r in speed if r.get("run_id")}),
                            "join": rows}
        drawn += probe_speed.figure(rows, figures_dir, steps or None)
    summary["figures"] = drawn + [entry for draw in FIGURES for entry in draw(frame, figures_dir, bar)]
    if unreadable:
        summary["unreadable"] = unreadable
    summary["inputs"] = [r["label"] for r in runs]
    summary["environment"] = [{"label": r["label"], **r["env"]} for r in runs]
    summary = output.clean(summary)
    output.write(out_dir, render(summary, runs), summary)
    return summary
