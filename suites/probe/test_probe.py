"""The capability probe: tasks mean what they say, training is deterministic, the pipeline runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from fastformer_bench.impls.additive_eager import eager_additive_attention, pooling_weights
from fastformer_bench.probe import tasks
from fastformer_bench.probe.point import ProbePoint, ProbeSettings, expand
from fastformer_bench.probe.runner import run_probe
from fastformer_bench.probe.train import _auc, train_point

REPO = Path(__file__).resolve().parents[2]


# -- tasks ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", tasks.NAMES)
def test_a_task_is_a_function_of_its_seed(task):
    first, again = (tasks.generate(task, 16, 64, 128, seed=3) for _ in range(2))
    other = tasks.generate(task, 16, 64, 128, seed=4)
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.tokens, other.tokens)
    assert first.tokens.shape == (16, 64) and int(first.tokens.max()) < tasks.shape(task, 64, 128).vocab


def test_topic_tokens_are_the_labels_topic_words_or_noise():
    batch = tasks.generate("topic", 64, 128, 64, seed=0, share=0.3)
    per_class = 64 // (2 * tasks.TOPIC_CLASSES)
    topic_class = torch.where(batch.relevant, batch.tokens // per_class, batch.targets[:, None])
    assert torch.equal(topic_class, batch.targets[:, None].expand_as(topic_class))
    assert bool((batch.tokens[~batch.relevant] >= tasks.TOPIC_CLASSES * per_class).all())
    assert 0.2 < float(batch.relevant.float().mean()) < 0.4


def test_count_labels_say_which_marker_occurs_more_and_never_tie():
    batch = tasks.generate("count", 256, 64, 32, seed=1)
    zeros, ones = (batch.tokens == 0).sum(1), (batch.tokens == 1).sum(1)
    assert bool((zeros != ones).all()) and bool((zeros >= 1).all()) and bool((ones >= 1).all())
    assert torch.equal(batch.targets, (ones > zeros).long())
    assert 0.3 < float(batch.targets.float().mean()) < 0.7


def test_every_mqar_query_is_labelled_with_its_keys_value():
    batch = tasks.generate("mqar", 32, 64, 64, seed=2, pairs=8)
    for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
        values = {tokens[i]: tokens[i + 1] for i in range(0, 16, 2)}
        assert len(values) == 8  # distinct keys
        queries = [(t, y) for t, y in zip(tokens[16:], targets[16:]) if y != tasks.IGNORE]
        assert sorted(t for t, _ in queries) == sorted(values)
        assert all(values[t] == y for t, y in queries)
        assert all(y == tasks.IGNORE for y in targets[:16])


def test_duplicate_labels_say_whether_a_token_repeats():
    batch = tasks.generate("duplicate", 128, 48, 16, seed=5)
    repeats = torch.tensor([len(set(row)) < len(row) for row in batch.tokens.tolist()]).long()
    assert torch.equal(batch.targets, repeats)
    assert 0.3 < float(repeats.float().mean()) < 0.7


@pytest.mark.parametrize(("params", "message"), [
    ({"task": "mqar", "mixer": "softmax", "seq_len": 32, "pairs": 16}, "needs seq_len >= 48"),
    ({"task": "mqar", "mixer": "softmax", "seq_len": 256, "pairs": 40, "vocab": 64}, "vocabulary of at least 81"),
    ({"task": "topic", "mixer": "additive", "seq_len": 64, "width": 30, "heads": 4}, "not divisible"),
    ({"task": "nope", "mixer": "additive", "seq_len": 64}, "unknown task"),
    ({"task": "topic", "mixer": "softmax", "seq_len": 64, "columns": 4}, "exactly three columns"),
    ({"task": "topic", "mixer": "softmax", "seq_len": 64, "impl": "eager"}, "not a softmax mixer"),
])
def test_impossible_points_are_refused_in_one_sentence(params, message):
    with pytest.raises(ValueError, match=message):
        ProbePoint(**params)


def test_settings_are_range_checked():
    with pytest.raises(ValueError, match="steps"):
        ProbeSettings(steps=0)
    with pytest.raises(ValueError, match="topic_share"):
        ProbeSettings(topic_share=1.5)


# -- analysis -----------------------------------------------------------------------------------------------------
def test_pooling_weights_are_the_weights_the_core_pools_with():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 2, 17, 8, generator=g), torch.randn(2, 2, 4, generator=g)
    a = pooling_weights(x, w)  # [C-1, B, H, N]
    assert torch.allclose(a.sum(-1), torch.ones(2, 2, 2))
    # Rebuild the output from the weights alone: G_{c+1} = x_{c+1} * sum_n a_c G_c.
    G = x[0].reshape(2, 17, 2, 4)
    for c in range(2):
        G = x[c + 1].reshape(2, 17, 2, 4) * torch.einsum("bhn,bnhd->bhd", a[c], G)[:, None]
    assert torch.allclose(G.reshape(2, 17, 8), eager_additive_attention(x, w), atol=1e-6)


def test_auc_ranks_relevant_tokens():
    relevant = torch.tensor([[True, False, True, False]]).numpy()
    assert _auc(torch.tensor([[0.4, 0.1, 0.3, 0.2]]).numpy(), relevant) == 1.0
    assert _auc(torch.tensor([[0.1, 0.4, 0.2, 0.3]]).numpy(), relevant) == 0.0
    assert _auc(torch.tensor([[0.25, 0.25, 0.25, 0.25]]).numpy(), relevant) == 0.5


# -- training -----------------------------------------------------------------------------------------------------
TINY = ProbeSettings(steps=12, batch_tokens=256, eval_examples=32, threads=1)


@pytest.mark.parametrize("mixer", ["additive", "softmax"])
def test_training_is_deterministic_for_a_seed(mixer):
    point = ProbePoint(task="topic", mixer=mixer, seq_len=32, width=16, heads=2, layers=1, vocab=32)
    first, again = train_point(point, TINY), train_point(point, TINY)
    assert first["accuracy"] == again["accuracy"] and first["loss"] == again["loss"]
    assert first["train_loss"] == again["train_loss"]
    other = train_point(ProbePoint(**{**point.params(), "seed": 1}), TINY)
    assert other["loss"] != first["loss"]


def test_additive_records_carry_the_static_query_analysis():
    point = ProbePoint(task="topic", mixer="additive", seq_len=32, width=16, heads=2, layers=2, columns=4, vocab=32)
    record = train_point(point, TINY)
    assert len(record["query_auc"]) == 2 and all(len(layer) == 3 for layer in record["query_auc"])
    assert all(0 <= a <= 1 for layer in record["query_auc"] for a in layer)
    weights = torch.tensor(record["example"]["weights"])
    assert weights.shape == (2, 3, 32) and torch.allclose(weights.sum(-1), torch.ones(2, 3), atol=1e-4)


# -- per-grid budget ---------------------------------------------------------------------------------------------
def test_a_points_steps_override_the_settings_and_are_part_of_its_identity():
    plain = ProbePoint(task="mqar", mixer="softmax", seq_len=32, pairs=4, vocab=32)
    longer = ProbePoint(**{**plain.params(), "steps": 5})
    assert "steps" not in plain.params() and longer.params()["steps"] == 5
    assert plain.point_id != longer.point_id
    assert plain.budget(TINY) is TINY and longer.budget(TINY) == ProbeSettings(**{**asdict(TINY), "steps": 5})
    assert "steps=5" in longer.label and "steps" not in plain.label
    with pytest.raises(ValueError, match="steps must be >= 0"):
        ProbePoint(**{**plain.params(), "steps": -1})


def test_a_grid_without_budget_axes_keeps_the_ids_of_the_committed_results():
    # Budget axes (steps, max_steps) enter a point's identity only where a grid sets them: a point trained with the
    # settings' budget keeps the id it had before they existed (here one of the committed study's points).
    committed = {(r := json.loads(line))["point_id"]: r
                 for line in (REPO / "results" / "probe" / "points.jsonl").read_text().splitlines()}
    point = ProbePoint(task="mqar", mixer="softmax", seq_len=64, width=64, heads=4, layers=2, pairs=8, vocab=64)
    found = committed.get(point.point_id)
    assert found is not None and found["steps"] == 300 * 2 ** found.get("extensions", 0)  # the settings' budget
    assert ProbePoint(**{**point.params(), "max_steps": 600}).point_id not in committed


def test_a_grids_steps_are_the_steps_its_points_train_for(tmp_path):
    grid = {"task": ["topic"], "mixer": ["additive"], "seq_len": [16], "width": [8], "heads": [2], "layers": [1],
            "vocab": [16]}
    points = expand([grid, {**grid, "steps": [3]}])
    assert [p.steps for p in points] == [0, 3]
    records = run_probe(points, TINY, str(tmp_path / "out"), preset="test", progress=False)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert [r["steps"] for r in records] == [TINY.steps, 3]  # the settings' steps, then the grid's
    assert [r["point_id"] for r in records] == [p.point_id for p in points]
    assert records[0]["train_loss"] != records[1]["train_loss"]
    again = run_probe(points, TINY, str(tmp_path / "out"), preset="test", resume=True, progress=False)
    assert again == []


# -- sanity: if a mixer cannot reach these, the probe is broken, not the mixer -------------------------------------
def test_softmax_attention_solves_mqar_at_n64_with_8_pairs():
    from fastformer_bench import presets

    settings = ProbeSettings(**presets.load("probe").settings)
    point = ProbePoint(task="mqar", mixer="softmax", seq_len=64, pairs=8, vocab=SANITY_VOCAB)
    assert train_point(point, settings, lr=3e-3, steps=300)["accuracy"] >= 0.95


@pytest.mark.parametrize("mixer", ["additive", "softmax"])
def test_both_mixers_solve_topic_at_n256(mixer):
    from fastformer_bench import presets

    settings = ProbeSettings(**presets.load("probe").settings)
    point = ProbePoint(task="topic", mixer=mixer, seq_len=256)
    assert train_point(point, settings, lr=3e-3, steps=300)["accuracy"] >= 0.95


SANITY_VOCAB = 64


# -- end to end ---------------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


SMALL = ("--task", "topic,mqar", "--seq-len", "32", "--width", "16", "--heads", "2", "--layers", "1",
         "--pairs", "4", "--vocab", "32", "--seed", "0")


def test_a_probe_run_resumes_and_reports(tmp_path):
    out, report = tmp_path / "probe", tmp_path / "report"
    done = _cli("run", "--preset", "probe-quick", "--out", str(out), *SMALL, "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert {(r["task"], r["mixer"]) for r in records} == {(t, m) for t in ("topic", "mqar")
                                                        for m in ("additive", "softmax")}
    assert all(r["kind"] == "probe" and r["status"] == "ok" and 0 <= r["accuracy"] <= 1 for r in records)
    again = _cli("run", "--preset", "probe-quick", "--out", str(out), *SMALL, "--resume", "--no-progress")
    assert again.returncode == 0 and len((out / "points.jsonl").read_text().splitlines()) == len(records)
    other = _cli("run", "--preset", "probe-quick", "--out", str(out), *SMALL, "--resume", "--threads", "2")
    assert other.returncode == 2 and "different probe settings" in other.stderr
    built = _cli("report", str(out), "--out", str(report))
    assert built.returncode == 0, built.stderr[-2000:]
    text = (report / "REPORT.md").read_text()
    assert "topic at N = 32" in text and "mqar at N = 32" in text
    assert (report / "figures" / "probe_pareto.png").exists()


@pytest.mark.parametrize("args", [
    ("--task", "sorting"), ("--task", "mqar", "--pairs", "64", "--seq-len", "64"), ("--width", "30", "--heads", "4"),
    ("--dtype", "float16"), ("--executor", "slurm"), ("--steps", "-1"),
])
def test_bad_probe_requests_exit_2_in_one_line(tmp_path, args):
    done = _cli("run", "--preset", "probe-quick", "--out", str(tmp_path / "x"), *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "x" / "points.jsonl").exists()


@pytest.mark.parametrize("flag", [("--task", "topic"), ("--steps", "10")])
def test_probe_flags_on_a_speed_preset_exit_2(tmp_path, flag):
    done = _cli("run", "--preset", "quick", "--out", str(tmp_path / "x"), *flag)
    assert done.returncode == 2 and "probe presets only" in done.stderr


def _probe_run(tmp_path: Path, settings_steps: int, points: list[dict], **common) -> Path:
    """A probe results directory of ok ``points`` (each over a record of ``common`` fields), as a run writes it."""
    out = tmp_path / "probe"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"kind": "probe", "settings": {"steps": settings_steps}}))
    record = {"schema": 2, "kind": "probe", "run_id": "r", "status": "ok", "reason": None, "impl": "eager",
              "columns": 3, "chance": 0.25, "train_s": 1.0, "loss": 0.1, "query_auc": None, "query_auc_mean": None,
              "example": None, **common}
    lines = [json.dumps({**record, "point_id": f"p{n}", **point}) for n, point in enumerate(points)]
    (out / "points.jsonl").write_text("\n".join(lines) + "\n")
    return out


def test_the_probe_report_never_imports_torch(tmp_path):
    points = [{"task": task, "mixer": mixer, "seq_len": n, "seed": seed,
               "accuracy": 0.5 + 0.1 * seed + 0.2 * (mixer == "softmax")}
              for task in ("topic", "mqar") for mixer in ("additive", "softmax") for n in (32, 64) for seed in (0, 1)]
    out = _probe_run(tmp_path, 3, points, width=16, heads=2, layers=1, pairs=4, vocab=32)
    code = ("import sys, fastformer_bench.report as r; "
            f"s = r.build_report([{str(out)!r}], {str(tmp_path / 'report')!r}); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')), len(s['headlines']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "4"]
    text = (tmp_path / "report" / "REPORT.md").read_text()
    # The comparison's words after the colon are the decision rule's (this control is below the bar).
    assert "topic at N = 64, width 16: additive 55.0 % [50.0 %–60.0 %] vs softmax 75.0 % [70.0 %–80.0 %] (2 seeds): " \
        in text


def test_the_probe_report_draws_accuracy_against_pairs_with_each_grids_steps(tmp_path):
    from fastformer_bench.report import build_report

    points = [{"mixer": mixer, "pairs": pairs, "seed": seed,
               "accuracy": (1.0 if mixer == "softmax" else 0.5) / pairs + 0.01 * seed}
              for mixer in ("additive", "softmax") for pairs in (4, 16, 64) for seed in (0, 1, 2)]
    out = _probe_run(tmp_path, 3, points, task="mqar", seq_len=64, width=16, heads=2, layers=1, vocab=130,
                     chance=1 / 65, steps=10)
    summary = build_report([str(out)], str(tmp_path / "report"))
    assert (tmp_path / "report" / "figures" / "probe_mqar_vs_pairs.png").exists()
    assert [(h["pairs"], h["steps"], h["sweep"]) for h in summary["headlines"] if h["sweep"] == "pairs"] == [
        (4, 10, "pairs"), (16, 10, "pairs"), (64, 10, "pairs")]
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert ("mqar at N = 64, width 16, 64 pairs, 10 steps (pairs sweep): additive 1.8 % [0.8 %–2.8 %] vs softmax "
            "2.6 % [1.6 %–3.6 %] (3 seeds)") in text


def test_a_comparison_on_the_length_and_the_pairs_sweep_is_listed_once_naming_both(tmp_path):
    from fastformer_bench.report import build_report

    # N = 64 and 256 at 4 pairs (the length sweep), 4 and 16 pairs at N = 64 (the pairs sweep): N = 64 at 4 pairs
    # is on both
    points = [{"mixer": mixer, "pairs": pairs, "seq_len": n, "seed": seed,
               "accuracy": (1.0 if mixer == "softmax" else 0.5) / pairs + 0.01 * seed + 0.001 * n / 64}
              for mixer in ("additive", "softmax") for n, pairs in ((64, 4), (256, 4), (64, 16)) for seed in (0, 1)]
    out = _probe_run(tmp_path, 3, points, task="mqar", width=16, heads=2, layers=1, vocab=130, chance=1 / 65,
                     steps=10)
    summary = build_report([str(out)], str(tmp_path / "report"))
    assert sorted(h["sweep"] for h in summary["headlines"] if (h["seq_len"], h["pairs"]) == (64, 4)) == [
        "length", "pairs"]  # the summary keeps both sweeps' lists whole
    listed = [line for line in (tmp_path / "report" / "REPORT.md").read_text().split("## Every comparison")[1]
              .split("\n## ")[0].splitlines() if line.startswith("- mqar")]
    assert len(listed) == 3, listed
    assert sum("N = 64, width 16, 4 pairs" in line for line in listed) == 1
    assert any("N = 64, width 16, 4 pairs" in line and "(pairs sweep, also the length sweep)" in line
               for line in listed)


def test_a_resumed_session_under_other_conditions_is_stated_in_the_conditions():
    from fastformer_bench.report.probe import _session_lines

    runs = [{"label": "r", "env": {"resumed_sessions": [
        {"points_added": 30, "note": "trained one at a time on one core"}, {"git_commit": "abc"}]}}]
    assert _session_lines(runs) == ["- A resumed session added 30 points: trained one at a time on one core."]
    assert _session_lines([{"label": "r", "env": {}}]) == []


def test_the_probe_report_checks_its_sanity_bars_per_seed_at_their_own_configuration(tmp_path):
    from fastformer_bench.report import build_report

    mqar = {"task": "mqar", "mixer": "softmax", "seq_len": 64, "pairs": 8}
    points = [{**mqar, "seed": seed, "accuracy": acc} for seed, acc in ((0, 0.99), (1, 0.94), (2, 1.0))]
    points += [{**mqar, "seed": 0, "accuracy": 0.1, "width": 32},  # the width sweep: not the sanity configuration
               {**mqar, "seed": 0, "accuracy": 0.2, "steps": 1000},  # another step budget: neither
               {**mqar, "seed": 0, "accuracy": 0.3, "columns": 4}]
    points += [{"task": "topic", "mixer": "additive", "seq_len": 256, "pairs": 8, "seed": s, "accuracy": 0.97}
               for s in (0, 1)]
    out = _probe_run(tmp_path, 300, points, width=64, heads=4, layers=2, vocab=64, steps=300)
    summary = build_report([str(out)], str(tmp_path / "report"))
    checks = {c["claim"]: c for c in summary["sanity"]}
    mqar_check = checks["softmax solves MQAR at N = 64, 8 pairs"]
    assert mqar_check["accuracy"] == [0.99, 0.94, 1.0] and mqar_check["seeds_at_bar"] == 2
    assert checks["additive solves topic at N = 256"]["seeds_at_bar"] == 2
    assert not checks["softmax solves topic at N = 256"]["measured"]
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert ("- softmax solves MQAR at N = 64, 8 pairs (width 64, bar 95.0 %): mean 97.7 %; seeds 0, 1, 2: "
            "99.0 % / 94.0 % / 100.0 %; 1 of 3 seeds below it.") in text
    assert "- additive solves topic at N = 256 (width 64, bar 95.0 %): mean 97.0 %; seeds 0, 1: 97.0 % / 97.0 %; " \
           "every seed reaches it." in text
    assert "- softmax solves topic at N = 256 (width 64): not in this run." in text
