"""The probe report states a difference only where the cell is conclusive (its control learned it): the runner's
``cell_conclusive`` where the records carry it, softmax's mean at the bar where they do not (the older records).
An inconclusive cell is named in words, never given as a difference, and greyed in every figure."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fastformer_bench.report import probe, probe_cells, probe_decision, probe_speed

BAR = 0.95
GREY_LABEL = "inconclusive: control below 95 %"
SETTINGS = {"steps": 300, "max_steps": 1200, "lrs": [0.001, 0.003, 0.01], "bar": BAR, "val_examples": 256,
            "batch_tokens": 2048, "eval_examples": 512, "threads": 1, "weight_decay": 0.01, "workers": 2}
#: chance per task
CHANCE = {"topic": 0.25, "mqar": 1 / 32, "membership": 0.5}
KINDS = {"topic": "global", "mqar": "pairwise", "membership": "pairwise"}


def _point(task: str, mixer: str, seq_len: int, seed: int, accuracy: float, steps: int = 300, **new) -> dict:
    return {"status": "ok", "reason": None, "run_id": "probe-20261206T000000Z", "kind": "probe", "task": task,
            "task_kind": KINDS[task], "mixer": mixer, "impl": "eager" if mixer == "additive" else "softmax_sdpa",
            "columns": 3, "seq_len": seq_len, "width": 64, "heads": 4, "layers": 2, "pairs": 8, "vocab": 64,
            "steps": steps, "seed": seed, "accuracy": accuracy, "chance": CHANCE[task], "loss": 0.1,
            "train_s": 10.0 * seq_len / 64 * steps / 300 * (2 if mixer == "softmax" else 1), "example": None,
            "query_auc": None, "query_auc_mean": None, **new}


def _cell(task: str, seq_len: int, softmax: list[float], additive: list[float], conclusive: bool,
          extensions: int = 0, sweep_of=None) -> list[dict]:
    """Both mixers' points of one cell, three seeds, with the runner's new fields."""
    steps = 300 * 2 ** extensions
    cell = (task.encode().hex() + f"{seq_len:06x}")[-16:].rjust(16, "0")
    points = []
    for mixer, accuracies in (("softmax", softmax), ("additive", additive)):
        for seed, accuracy in enumerate(accuracies):
            sweep = (sweep_of or {}).get((mixer, seed)) or [
                {"lr": lr, "steps": steps, "val_accuracy": accuracy - 0.01 * k, "accuracy": accuracy - 0.01 * k,
                 "train_s": 1.0} for k, lr in enumerate((0.003, 0.001, 0.01))]
            points.append(_point(task, mixer, seq_len, seed, accuracy, steps, lr=0.003 if mixer == "softmax" else 0.01,
                                 val_accuracy=accuracy, sweep=sweep, extensions=extensions, cell=cell,
                                 cell_conclusive=conclusive,
                                 control="softmax at the bar on every seed" if conclusive else "softmax below the bar"))
    return points


#: softmax seed 2 at the final budget: validation chose 0.003 (90 % on the test set; the runner judges that run)
#: over 0.001 (92 % on the test set, a number the choice never saw); its 93 % was at 600 steps, a round before
SEED_2 = [{"lr": 0.003, "steps": 1200, "val_accuracy": 0.9, "accuracy": 0.90, "train_s": 4.0},
          {"lr": 0.001, "steps": 1200, "val_accuracy": 0.85, "accuracy": 0.92, "train_s": 4.0},
          {"lr": 0.003, "steps": 600, "val_accuracy": 0.93, "accuracy": 0.93, "train_s": 2.0}]


def _records() -> list[dict]:
    """mqar at N = 64: conclusive, softmax ahead by 79 points. mqar at N = 256: the runner says inconclusive (seed
    2 at 90 %) though softmax's mean (96 %) passes the older rule, and its gap (91 points) is the largest: a report
    that recomputed the control would state it. membership: no conclusive cell at all. topic: global, conclusive."""
    return [*_cell("mqar", 64, [0.99, 0.99, 0.99], [0.2, 0.2, 0.2], True),
            *_cell("mqar", 256, [0.99, 0.99, 0.90], [0.05, 0.05, 0.05], False, extensions=2,
                   sweep_of={("softmax", 2): SEED_2}),
            *_cell("membership", 64, [0.70, 0.72, 0.75], [0.5, 0.5, 0.5], False, extensions=2),
            *_cell("topic", 64, [1.0, 1.0, 1.0], [0.99, 0.98, 0.99], True),
            *_cell("topic", 256, [1.0, 1.0, 1.0], [0.97, 0.97, 0.98], True)]


OLD_FIELDS = ("lr", "val_accuracy", "sweep", "extensions", "cell", "cell_conclusive", "control")


def _old(records: list[dict]) -> list[dict]:
    """The same points as the 2026-12-03 records carry them: no lr sweep, no verdict, the grid's steps."""
    return [{**{k: v for k, v in r.items() if k not in OLD_FIELDS}, "steps": 300} for r in records]


SPEED = [{"kind": None, "status": "ok", "mode": "fwd", "scope": "core", "dtype": "float32", "batch": 1, "threads": 1,
          "columns": 3, "impl": impl, "family": family, "complexity": complexity, "width": 64, "seq_len": n,
          "time_median": seconds * n, "run_id": "cpu-1"}
         for impl, family, complexity, seconds in (("eager", "additive", "linear", 1e-6),
                                                   ("softmax_sdpa", "softmax", "quadratic", 1e-5))
         for n in (64, 256)]


@pytest.fixture
def figures(monkeypatch):
    """Every figure the report draws, by name (the Figure object, before it is written)."""
    drawn = {}
    real = probe.save

    def keep(fig, directory, name, title, kind):
        drawn[name] = fig
        return real(fig, directory, name, title, kind)

    for module in (probe, probe_decision, probe_speed):
        monkeypatch.setattr(module, "save", keep)
    return drawn


def _build(records: list[dict], tmp_path, settings: dict) -> tuple[dict, str]:
    runs = [{"label": "probe-20261206T000000Z", "env": {"settings": settings, "cpu_model": "AMD EPYC",
                                                        "logical_cores": 2}}]
    summary = probe.build(pd.DataFrame.from_records(records), runs, tmp_path, [], SPEED)
    return summary, (tmp_path / "REPORT.md").read_text()


def _row(summary: dict, task: str) -> dict:
    return next(r for r in summary["decision"] if r["task"] == task)


def test_the_runners_verdict_decides_and_an_inconclusive_cell_yields_no_difference(tmp_path, figures):
    summary, report = _build(_records(), tmp_path, SETTINGS)
    assert summary["control"] == {"bar": BAR, "source": "records"}
    mqar = _row(summary, "mqar")
    assert (mqar["seq_len"], mqar["gap_points"], mqar["control"]["passed"]) == (64, 79.0, True)
    assert (mqar["learned"], mqar["compared"], mqar["gap_range"]) == (1, 2, [79.0, 79.0])
    membership = _row(summary, "membership")
    assert not membership["control"]["passed"] and membership["gap_range"] is None
    words = "softmax reached 90.0 % at best on seed 2 at the 1,200-step cap: the budget, not the mixer"
    answer = report.split("## Answer")[1].split("## Decision")[0]
    assert "91.0" not in answer and "+91" not in report  # the inconclusive cell's gap is stated nowhere
    assert "No cell of membership is conclusive" in answer and "the budget, not the mixer" in answer
    assert f"- mqar at N = 256, width 64, 8 pairs, 1,200 steps (2 extensions; lr softmax 0.003, additive 0.01): " \
           f"additive 5.0 % [5.0 %–5.0 %] vs softmax 96.0 % [90.0 %–99.0 %] (3 seeds): inconclusive: {words}." in report
    rows = {r["task"].split()[0]: r for r in probe_decision.table_rows(summary["decision"], 300)}
    assert rows["membership"]["difference (points)"] == "– (inconclusive)"
    assert rows["membership"]["control passed ¹"].startswith("no, inconclusive: softmax reached 70.0 % at best "
                                                             "on seed 0 at the 1,200-step cap")
    assert rows["mqar"]["difference (points)"] == "+79.0"
    assert (rows["mqar"]["lr softmax / additive"], rows["mqar"]["steps"]) == ("0.003 / 0.01", "300 (no extension)")
    ceiling = {c["seq_len"]: c for c in summary["mqar_ceiling"]}
    assert ceiling[64]["conclusive"] and not ceiling[256]["conclusive"]
    assert "| inconclusive |" in report.split("## MQAR: theory beside measurement")[1]
    join = {r["task"]: r for r in summary["speed"]["join"]}
    assert not join["membership"]["conclusive"] and join["mqar"]["seq_len"] == 64
    assert "membership at N = 64, width 64, 1,200 steps: inconclusive (" in report
    assert rows["membership"]["at"] == "N = 64, width 64"  # the budget has its own column


def test_the_training_protocol_and_the_tables_come_from_the_settings_and_records(tmp_path, figures):
    summary, report = _build(_records(), tmp_path, {**SETTINGS, "lrs": [0.002, 0.02], "max_steps": 4800})
    protocol = report.split("## Training protocol")[1].split("## Conditions")[0]
    assert "each learning rate of 0.002, 0.02" in protocol and "on 256 validation sequences" in protocol
    assert "reaches 95.0 % on every seed" in protocol and "up to the cap of 4,800 steps" in protocol
    assert "from the grid's budget (300 steps" in protocol
    assert "chosen per point by validation accuracy" in report
    # the cap is the settings': at 4,800 a 1,200-step cell is not at the cap
    assert "on seed 2 at 1,200 steps: the budget, not the mixer" in report
    table = _table(report.split("## Accuracy per configuration")[1])
    assert ["mqar", "softmax", "3", "256", "64", "2", "8", "0.003", "1,200 (2 extensions)", "96.0 % [90.0 %–99.0 %]",
            "3", "3.1 %", "inconclusive"] in [row[:13] for row in table]
    assert ["topic", "additive", "3", "64", "64", "2", "-", "0.01", "300 (no extension)"] in [r[:9] for r in table]
    assert {row[12] for row in table} == {"conclusive", "inconclusive"}
    assert "| train time, every run (median)" in report.split("## Accuracy per configuration")[1].splitlines()[2]
    accuracy = {(r["task"], r["mixer"], r["seq_len"]): r for r in summary["accuracy"]}
    assert accuracy[("mqar", "softmax", 256)]["extensions"] == 2 and accuracy[("mqar", "softmax", 256)]["lr"] == "0.003"


def _table(text: str) -> list[list[str]]:
    """The rows of the first markdown table in ``text``, each a list of its stripped cells (no header)."""
    rows = []
    for line in text.strip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _greyed(ax) -> list[tuple[float, float]]:
    return sorted((float(x), float(y)) for c in ax.collections if c.get_label() == GREY_LABEL
                  for x, y in c.get_offsets())


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_every_figure_greys_the_inconclusive_cells_and_says_so(tmp_path, figures):
    _build(_records(), tmp_path, SETTINGS)
    length = figures["probe_accuracy_vs_length"]
    panels = {ax.get_title(): ax for ax in length.axes}
    assert _greyed(panels["mqar"]) == [(256.0, pytest.approx(0.05)), (256.0, pytest.approx(0.96))]
    assert _greyed(panels["topic"]) == []
    assert GREY_LABEL in _legend_texts(length)

    pareto = {ax.get_title(): ax for ax in figures["probe_pareto"].axes}
    assert sorted(y for _, y in _greyed(pareto["mqar"])) == pytest.approx([0.05] * 3 + [0.9, 0.99, 0.99])
    assert len(_greyed(pareto["membership"])) == 6 and _greyed(pareto["topic"]) == []
    assert GREY_LABEL in _legend_texts(figures["probe_pareto"])

    (ax,) = figures["probe_decision"].axes
    labels = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]
    hatched = {labels[len(labels) - 1 - round(p.get_y() + p.get_height() / 2)] for p in ax.patches
               if p.get_hatch() == probe_cells.HATCH}
    assert hatched == {"membership"}
    assert GREY_LABEL in _legend_texts(figures["probe_decision"])

    speed = {ax.get_title().split("\n")[0]: ax for ax in figures["probe_speed"].axes}
    assert len(_greyed(speed["membership"])) == 2 and _greyed(speed["mqar"]) == []
    assert "inconclusive" in " ".join(t.get_text() for t in speed["membership"].texts)
    assert GREY_LABEL in _legend_texts(figures["probe_speed"])


def test_older_records_keep_the_control_computed_from_the_accuracies(tmp_path, figures):
    summary, report = _build(_old(_records()), tmp_path, {k: v for k, v in SETTINGS.items()
                                                          if k not in ("lrs", "max_steps", "bar", "val_examples")}
                             | {"lr": 0.003})
    assert summary["control"] == {"bar": BAR, "source": "accuracies"}
    mqar = _row(summary, "mqar")  # softmax's mean at N = 256 (96 %) passes: today's decision, the largest gap
    assert (mqar["seq_len"], mqar["gap_points"], mqar["control"]["passed"], mqar["control"]["every_seed"]) == \
        (256, 91.0, True, False)
    assert probe_decision.table_rows([mqar], 300)[0]["control passed ¹"] == "yes in the mean (lowest seed 90.0 %)"
    membership = _row(summary, "membership")
    assert not membership["control"]["passed"] and "note" not in membership["control"]
    assert "## Training protocol" not in report and "peak learning rate 0.003" in report
    assert "lr softmax" not in report and "extensions" not in report
    # the answer's words for a task softmax did not learn are today's
    assert "Softmax attention did not learn membership within this budget (membership: softmax at most 72.3 %, " \
           "chance 50.0 %)" in report
    assert _greyed({ax.get_title(): ax for ax in figures["probe_accuracy_vs_length"].axes}["mqar"]) == []


def test_the_decision_without_cell_verdicts_is_todays():
    headline = {"task": "mqar", "seq_len": 256, "width": 64, "pairs": 8, "steps": 300, "additive": 0.05,
                "softmax": 0.96, "additive_range": [0.05, 0.05], "softmax_range": [0.9, 0.99], "seeds": 3,
                "gap_points": 91.0, "sweep": "length"}
    (row,) = probe_decision.decide([headline], {"mqar": "pairwise"}, BAR)
    assert row["control"] == {"bar": BAR, "passed": True, "every_seed": False}
    (row,) = probe_decision.decide([{**headline, "conclusive": False, "control_note": "the budget"}],
                                   {"mqar": "pairwise"}, BAR)
    assert row["control"]["passed"] is False and row["gap_range"] is None


def test_the_summary_is_json_and_reproducible(tmp_path, figures):
    first, _ = _build(_records(), tmp_path / "a", SETTINGS)
    second, _ = _build(_records(), tmp_path / "b", SETTINGS)
    assert json.dumps(first["decision"], sort_keys=True) == json.dumps(second["decision"], sort_keys=True)
    assert (tmp_path / "a" / "REPORT.md").read_text() == (tmp_path / "b" / "REPORT.md").read_text()


def _global_cell(additive: list[float], **extra) -> pd.DataFrame:
    return pd.DataFrame.from_records([_point("topic", mixer, 1024, seed, accuracy, 600, **extra)
                                      for mixer, accuracies in (("softmax", [1.0, 1.0, 1.0]), ("additive", additive))
                                      for seed, accuracy in enumerate(accuracies)])


@pytest.mark.parametrize(("extra", "cap", "at"), [
    ({}, 600, "at the 600-step cap"),
    ({}, 1000, "at 600 steps (the 1,000-step cap allows no doubling)"),
    ({}, 4800, "at 600 steps"),
    ({"max_steps": 600}, 4800, "at the 600-step cap"),  # a grid's own cap comes before the settings'
])
def test_an_inconclusive_global_cell_names_the_mixer_that_missed_and_where_the_budget_stopped(extra, cap, at):
    cell = _global_cell([0.97, 0.91, 0.93], extensions=1, cell_conclusive=False, **extra)
    marked = probe_cells.mark(cell, BAR, cap)
    assert (marked["conclusive"] == 0).all()
    assert set(marked["control_note"]) == {f"additive C=3 reached 91.0 % at best on seed 1 {at}: the budget, not "
                                           "the mixer"}


def test_the_runners_sentence_stands_where_no_held_point_is_below_the_bar():
    cell = _global_cell([0.97, 0.96, 0.99], extensions=0, cell_conclusive=False, control="a seed timed out")
    assert set(probe_cells.mark(cell, BAR, 600)["control_note"]) == {"a seed timed out"}


def test_a_failed_point_is_no_cells_evidence():
    cell = _global_cell([0.97, 0.96, 0.99])  # older records: softmax's mean decides
    cell.loc[0, ["status", "accuracy"]] = ["timeout", None]
    marked = probe_cells.mark(cell, BAR, None)
    assert pd.isna(marked.loc[0, "conclusive"]) and (marked.loc[1:, "conclusive"] == 1).all()
