"""The probe's learning-rate sweep, its control rule and its extensions: the rate is picked on validation, a cell
is conclusive only when its control passes, an inconclusive cell doubles its steps up to the cap, resume skips
decided cells; the membership task means what it says."""

from __future__ import annotations

import json

import pytest
import torch

from fastformer_bench.probe import tasks
from fastformer_bench.probe import train as train_module
from fastformer_bench.probe.point import ProbePoint, ProbeSettings, expand
from fastformer_bench.probe.runner import cell_id, run_probe
from fastformer_bench.probe.train import train_point


def _fake(accuracy):
    """A train_point whose test and validation accuracies are ``accuracy(point, lr, steps)`` -> (val, test)."""
    calls = []

    def fake(point, settings, lr=None, steps=None):
        calls.append((point.point_id, lr, steps))
        val, test = accuracy(point, lr, steps)
        return {"accuracy": test, "val_accuracy": val, "chance": 0.5, "loss": 1.0, "train_loss": 1.0,
                "train_s": 1.0, "steps": steps, "steps_run": steps, "lr": lr, "params": 1, "task_kind": "x",
                "query_auc": None, "query_auc_mean": None, "example": None}

    return fake, calls


def _grid(task="mqar", mixers=("additive", "softmax"), seeds=(0,), **more):
    return expand([{"task": [task], "mixer": list(mixers), "seq_len": [32], "width": [8], "heads": [2],
                    "layers": [1], "pairs": [4], "vocab": [32], "seed": list(seeds), **more}])


def _records(out):
    return [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]


# -- the rate is chosen on validation, never on the test set -------------------------------------------------------
def test_the_rate_is_chosen_by_validation_accuracy_not_test_accuracy(tmp_path, monkeypatch):
    # lr 0.01 looks best on the test set, lr 0.001 on validation: the record must say 0.001 and its test accuracy.
    fake, _ = _fake(lambda p, lr, steps: (0.9, 0.5) if lr == 0.001 else (0.6, 0.99))
    monkeypatch.setattr(train_module, "train_point", fake)
    settings = ProbeSettings(steps=10, lrs=[0.01, 0.001])
    records = run_probe(_grid(), settings, str(tmp_path / "out"), preset="t", progress=False)
    assert [(r["lr"], r["val_accuracy"], r["accuracy"]) for r in records] == [(0.001, 0.9, 0.5)] * 2
    assert [[(run["lr"], run["accuracy"]) for run in r["sweep"]] for r in records] == [[(0.01, 0.99), (0.001, 0.5)]] * 2


def test_a_validation_tie_keeps_the_first_rate_of_the_list(tmp_path, monkeypatch):
    fake, _ = _fake(lambda p, lr, steps: (0.7, lr))
    monkeypatch.setattr(train_module, "train_point", fake)
    records = run_probe(_grid(), ProbeSettings(steps=10, lrs=[0.3, 0.1, 0.2]), str(tmp_path / "o"), preset="t",
                        progress=False)
    assert {r["lr"] for r in records} == {0.3}


# -- the control rule and the extensions ---------------------------------------------------------------------------
def test_an_inconclusive_cell_doubles_its_steps_until_the_control_passes(tmp_path, monkeypatch):
    # softmax passes from 40 steps on; additive never does (pairwise: it need not).
    fake, calls = _fake(lambda p, lr, steps: (0.99, 0.99) if p.mixer == "softmax" and steps >= 40 else (0.3, 0.3))
    monkeypatch.setattr(train_module, "train_point", fake)
    settings = ProbeSettings(steps=10, max_steps=1000, lrs=[0.001, 0.01])
    records = run_probe(_grid(seeds=(0, 1)), settings, str(tmp_path / "out"), preset="t", progress=False)
    assert sorted({steps for _, _, steps in calls}) == [10, 20, 40]  # stopped once conclusive, far below the cap
    assert len(calls) == 3 * 4 * 2  # three rounds, every point (2 mixers x 2 seeds) at every rate
    assert all(r["steps"] == 40 and r["extensions"] == 2 and r["cell_conclusive"] for r in records)
    assert all([run["steps"] for run in r["sweep"]] == [10, 10, 20, 20, 40, 40] for r in records)
    assert all(r["train_s"] == 6.0 for r in records)  # the sum over the sweep
    assert {r["cell"] for r in records} == {cell_id(_grid()[0])}
    assert "softmax had to reach 95 % on every seed at 40 steps; lowest 99.0 %" in records[0]["control"]


@pytest.mark.parametrize(("cap", "rounds"), [(80, [10, 20, 40, 80]), (79, [10, 20, 40]), (0, [10])])
def test_an_inconclusive_cell_stops_at_the_cap_and_says_so(tmp_path, monkeypatch, cap, rounds):
    fake, calls = _fake(lambda p, lr, steps: (0.5, 0.5))
    monkeypatch.setattr(train_module, "train_point", fake)
    records = run_probe(_grid(), ProbeSettings(steps=10, max_steps=cap), str(tmp_path / "out"), preset="t",
                        progress=False)
    assert sorted({steps for _, _, steps in calls}) == rounds
    assert all(r["steps"] == rounds[-1] and r["extensions"] == len(rounds) - 1 for r in records)
    assert not any(r["cell_conclusive"] for r in records)


def test_a_global_task_needs_both_mixers_at_the_bar_a_pairwise_one_only_softmax(tmp_path, monkeypatch):
    fake, _ = _fake(lambda p, lr, steps: (0.99, 0.99) if p.mixer == "softmax" else (0.9, 0.9))
    monkeypatch.setattr(train_module, "train_point", fake)
    settings = ProbeSettings(steps=10, max_steps=20)
    topic = run_probe(_grid("topic"), settings, str(tmp_path / "topic"), preset="t", progress=False)
    mqar = run_probe(_grid("mqar"), settings, str(tmp_path / "mqar"), preset="t", progress=False)
    assert not any(r["cell_conclusive"] for r in topic) and all(r["extensions"] == 1 for r in topic)
    control = topic[0]["control"]
    assert "both mixers had to reach 95 %" in control and "lowest 90.0 % (additive C=3" in control
    assert all(r["cell_conclusive"] and r["extensions"] == 0 for r in mqar)


def test_a_cell_is_the_points_that_differ_in_mixer_columns_and_seed_only():
    points = _grid(seeds=(0, 1)) + _grid(mixers=("additive",), columns=[4])
    assert len({cell_id(p) for p in points}) == 1
    others = _grid(seq_len=[64]) + _grid(width=[16]) + _grid(pairs=[2]) + _grid(steps=[5]) + _grid("topic")
    assert len({cell_id(p) for p in others} | {cell_id(points[0])}) == 6


def test_a_cell_without_softmax_has_no_control_and_is_not_extended(tmp_path, monkeypatch):
    fake, calls = _fake(lambda p, lr, steps: (0.99, 0.99))
    monkeypatch.setattr(train_module, "train_point", fake)
    records = run_probe(_grid(mixers=("additive",)), ProbeSettings(steps=10, max_steps=80), str(tmp_path / "o"),
                        preset="t", progress=False)
    assert len(calls) == 1 and not records[0]["cell_conclusive"] and "no control" in records[0]["control"]


def test_a_failed_run_is_recorded_and_never_chosen_over_an_ok_one(tmp_path, monkeypatch):
    fake, _ = _fake(lambda p, lr, steps: (0.9, 0.9))

    def failing(point, settings, lr=None, steps=None):
        if lr == 0.01:
            raise RuntimeError("boom")
        return fake(point, settings, lr, steps)

    monkeypatch.setattr(train_module, "train_point", failing)
    records = run_probe(_grid(), ProbeSettings(steps=10, lrs=[0.01, 0.001], max_steps=40), str(tmp_path / "o"),
                        preset="t", progress=False)
    assert all(r["status"] == "ok" and r["lr"] == 0.001 and r["extensions"] == 0 for r in records)
    assert [run["status"] for run in records[0]["sweep"]] == ["error", "ok"]


# -- resume works per cell ------------------------------------------------------------------------------------------
def test_resume_skips_decided_cells_and_retrains_a_partly_recorded_one_whole(tmp_path, monkeypatch):
    fake, calls = _fake(lambda p, lr, steps: (0.99, 0.99))
    monkeypatch.setattr(train_module, "train_point", fake)
    points = _grid(seeds=(0, 1)) + _grid("topic")
    settings = ProbeSettings(steps=10, lrs=[0.001, 0.01])
    out = tmp_path / "out"
    first = run_probe(points, settings, str(out), preset="t", progress=False)
    assert len(first) == 6 and len(calls) == 12
    calls.clear()
    assert run_probe(points, settings, str(out), preset="t", resume=True, progress=False) == [] and calls == []
    lines = (out / "points.jsonl").read_text().splitlines()
    dropped = json.loads(lines[0])
    (out / "points.jsonl").write_text("\n".join(lines[1:]) + "\n")
    again = run_probe(points, settings, str(out), preset="t", resume=True, progress=False)
    assert [r["point_id"] for r in again] == [dropped["point_id"]]
    assert len(calls) == 4 * 2  # the whole mqar cell (2 mixers x 2 seeds) at both rates, not the topic cell
    assert len(_records(out)) == 6


# -- settings -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "message"), [
    ({"lrs": []}, "non-empty list"), ({"lrs": 0.1}, "non-empty list"), ({"lrs": [0.1, 0.0]}, "rates > 0"),
    ({"lrs": [0.1, 0.1]}, "not repeat"), ({"lrs": ["x"]}, "rates > 0"), ({"bar": 1.5}, "at most 1"),
    ({"bar": 0}, "bar must be > 0"), ({"max_steps": -1}, "max_steps must be >= 0"),
    ({"val_examples": 0}, "val_examples must be >= 1"), ({"eval_every": 2.5}, "eval_every must be an integer"),
])
def test_bad_sweep_settings_are_refused_in_one_sentence(changes, message):
    with pytest.raises(ValueError, match=message) as caught:
        ProbeSettings(**changes)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")


def test_settings_written_with_one_lr_are_read_as_a_one_rate_sweep():
    old = ProbeSettings(**{"steps": 300, "lr": 0.003})
    assert old.lrs == (0.003,) and old == ProbeSettings(steps=300, lrs=[0.003])
    assert "lr" not in json.loads(json.dumps(old.__dict__)) and old.cap == 300
    assert ProbeSettings(steps=300, max_steps=1200).cap == 1200


# -- real training: the validation split, the early stop, determinism ---------------------------------------------
TINY = ProbeSettings(steps=8, batch_tokens=256, eval_examples=32, val_examples=32, threads=1)


def test_the_validation_split_is_neither_the_test_set_nor_a_training_batch():
    point = ProbePoint(task="mqar", mixer="softmax", seq_len=32, pairs=4, vocab=32, width=8, heads=2, layers=1)
    validation = train_module.validation_set(point, TINY)
    test = train_module._examples(point, TINY.eval_examples, point.seed * train_module.EVAL_OFFSET + 1, TINY)
    first_batch = train_module._examples(point, 8, point.seed * train_module.STREAM_OFFSET + 2, TINY)
    assert not torch.equal(validation.tokens, test.tokens)
    assert not torch.equal(validation.tokens[:8], first_batch.tokens)


def test_a_run_is_deterministic_with_the_early_stop_and_the_rate_matters():
    point = ProbePoint(task="topic", mixer="additive", seq_len=32, width=8, heads=2, layers=1, vocab=32)
    settings = ProbeSettings(**{**TINY.__dict__, "lrs": (0.01, 0.001), "eval_every": 2})
    first, again = train_point(point, settings, lr=0.01), train_point(point, settings, lr=0.01)
    keys = ("accuracy", "val_accuracy", "loss", "train_loss", "steps_run")
    assert [first[k] for k in keys] == [again[k] for k in keys]
    assert first["lr"] == 0.01 and 0 < first["steps_run"] <= 8
    assert train_point(point, settings, lr=0.001)["train_loss"] != first["train_loss"]


def test_two_workers_write_the_records_one_worker_writes(tmp_path):
    points = _grid("topic", seeds=(0,))
    settings = ProbeSettings(steps=4, batch_tokens=128, eval_examples=16, val_examples=16, lrs=[0.01, 0.003])
    one = run_probe(points, settings, str(tmp_path / "one"), preset="t", progress=False)
    two = run_probe(points, ProbeSettings(**{**settings.__dict__, "workers": 2}), str(tmp_path / "two"), preset="t",
                    progress=False)
    keys = ("point_id", "lr", "accuracy", "val_accuracy", "steps", "cell", "cell_conclusive")
    assert sorted([r[k] for k in keys] for r in one) == sorted([r[k] for k in keys] for r in two)


# -- recall -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seq_len", "vocab", "pairs"), [(64, 64, 8), (256, 64, 8), (32, 16, 4), (64, 130, 16)])
def test_every_recall_query_is_labelled_with_its_keys_value_among_noise(seq_len, vocab, pairs):
    batch = tasks.generate("recall", 100, seq_len, vocab, seed=3, pairs=pairs)
    k = (vocab - 1) // 3
    length = seq_len - 2 * pairs
    for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
        context = tokens[:length]
        values = {t: context[i + 1] for i, t in enumerate(context) if 1 <= t <= k}  # each key, then its value
        assert len(values) == pairs and all(k < v <= 2 * k for v in values.values())
        assert sum(1 for t in context if 1 <= t <= 2 * k) == 2 * pairs  # the rest is noise
        assert all(t > 2 * k for t in context if not 1 <= t <= 2 * k) and 0 not in context
        assert tokens[length::2] == [0] * pairs and sorted(tokens[length + 1::2]) == sorted(values)
        assert [y for y in targets if y != tasks.IGNORE] == [values[t] for t in tokens[length + 1::2]]
        assert all(y == tasks.IGNORE for y in targets[:length + 1:])
    assert tasks.shape("recall", seq_len, vocab).chance == 1 / k


@pytest.mark.parametrize(("params", "message"), [({"seq_len": 60, "pairs": 16}, "needs seq_len >= 64"),
                                                 ({"seq_len": 64, "pairs": 8, "vocab": 24}, "at least 25")])
def test_recall_is_refused_where_it_cannot_be_generated(params, message):
    with pytest.raises(ValueError, match=message):
        ProbePoint(task="recall", mixer="softmax", **params)


# -- membership (generatable, in no preset: the control does not learn it at this scale) -----------------------
@pytest.mark.parametrize(("seq_len", "vocab"), [(64, 64), (256, 64), (48, 16)])
def test_membership_labels_say_whether_the_query_occurs_in_the_context(seq_len, vocab):
    batch = tasks.generate("membership", 200, seq_len, vocab, seed=7)
    queries = tasks.membership_queries(seq_len)
    length = seq_len - 2 * queries
    labels = []
    for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
        context = set(tokens[:length])
        assert 0 not in context and tokens[length::2] == [0] * queries  # markers only before the queries
        assert all(y == tasks.IGNORE for i, y in enumerate(targets) if i < length or (i - length) % 2 == 0)
        for query, label in zip(tokens[length + 1::2], targets[length + 1::2]):
            assert 1 <= query < vocab and label == int(query in context)
            labels.append(label)
    assert len(labels) == 200 * queries and 0.45 < sum(labels) / len(labels) < 0.55
    assert tasks.shape("membership", seq_len, vocab).chance == 0.5


def test_membership_is_refused_where_it_cannot_be_generated():
    with pytest.raises(ValueError, match="membership needs a vocabulary of at least 5"):
        ProbePoint(task="membership", mixer="softmax", seq_len=64, vocab=4)
