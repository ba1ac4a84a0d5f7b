"""`run --dry-run` and `scripts/gpu-session.sh --dry-run`: the lent-GPU session is planned point by point before it
runs, fits its budget, and keeps every point within the GPU's memory unless the preset expects it out of memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastformer_bench import axes, cli, impls, plan, plan_preset, presets
from fastformer_bench.point import Settings
from fastformer_bench.problem import Problem

REPO = Path(__file__).resolve().parents[2]
#: the one command of a lent-GPU session may run this long (docs/gpu.md §2)
COMMAND_LIMIT_S = 9 * 60
POINT_LINE = re.compile(r"^\s*\d+\s+\S+\s+(bfloat16|float16|float32|float64)\s+(fwd|fwd_bwd)\s")


@pytest.mark.parametrize("device", sorted(plan.DEVICES))
def test_the_gpu_session_plans_every_point_within_the_budget_and_the_memory(device):
    problems, skipped = presets.expand(presets.load("gpu"))
    found = plan_preset.plan_preset("gpu", device)
    assert [p.problem.point_id for p in found.points] == [p.point_id for p in problems] and not skipped
    assert {p.problem.device for p in found.points} == {"cuda"}
    assert found.total_s <= COMMAND_LIMIT_S
    assert not found.over_memory(), [p.problem for p in found.over_memory()]
    assert not found.over_time_limit(), [p.problem for p in found.over_time_limit()]
    assert all(0 < p.peak_bytes <= found.device.memory_bytes for p in found.points if p.expected != "oom")
    # no point is expected out of memory: triton's fwd_bwd at a million tokens, whose whole float64 check would hold
    # about 140 GB with the point's own, is checked in chunks over N (reference_chunked) and planned within the memory
    assert not [p for p in found.points if p.expected == "oom"]
    million = [p for p in found.points if (p.problem.impl, p.problem.mode, p.problem.seq_len)
               == ("triton", "fwd_bwd", 2**20)]
    assert [p.check for p in million] == ["chunked"]
    assert plan.whole_check_bytes(million[0].problem, impls.get(million[0].reference)) > 100e9  # beside 20 GB
    assert million[0].peak_bytes < 0.5 * found.device.memory_bytes
    assert all(p.check == "whole" for p in found.points if p.problem.seq_len < 2**20)
    # the grid the issue asked for: triton against SDPA in bf16 at B = 8, D = 1024, B·N·D = 2^22 .. 2^28, both
    # modes, graph timing throughout and launch timing at the small N; fp32 at 2^26 .. 2^27
    bf16 = [p.problem for p in found.points if p.problem.dtype == "bfloat16" and p.problem.batch == 8
            and p.problem.impl in ("triton", "softmax_sdpa")]
    for impl in ("triton", "softmax_sdpa"):
        for mode in ("fwd", "fwd_bwd"):
            sizes = {p.seq_len * p.batch * p.width for p in bf16 if (p.impl, p.mode, p.timing) == (impl, mode, "graph")}
            assert {2**22, 2**28} <= sizes
            assert {p.seq_len for p in bf16 if (p.impl, p.mode, p.timing) == (impl, mode, "launch")} == {512, 2048}
    assert {p.problem.seq_len * 8 * 1024 for p in found.points if p.problem.dtype == "float32"} == {2**26, 2**27}
    # the million-token point the session exists to show, beside the sizes softmax attention reaches
    assert max(p.problem.seq_len for p in found.points if p.problem.impl == "triton") >= 2**20


def test_the_cli_dry_run_prints_every_point_and_the_total(capsys):
    assert cli.main(["run", "--preset", "gpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    problems, _ = presets.expand(presets.load("gpu"))
    assert len([line for line in out.splitlines() if POINT_LINE.match(line)]) == len(problems)
    total = float(re.search(rf"^{plan.TOTAL_LINE} ([0-9.]+) s", out, re.M).group(1))
    assert 0 < total <= COMMAND_LIMIT_S
    assert "largest peak" in out and "h100" in out
    # overrides plan the narrower request, and --out is needed only to measure
    assert cli.main(["run", "--preset", "gpu", "--dry-run", "h200", "--impl", "triton", "--dtype", "float32"]) == 0
    narrowed = [line for line in capsys.readouterr().out.splitlines() if POINT_LINE.match(line)]
    assert narrowed and all(" triton " in line and "float32" in line for line in narrowed)
    assert cli.main(["run", "--preset", "gpu"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_the_session_script_dry_run_exits_0_within_its_budget(tmp_path):
    # the CPU environment's python3 first on PATH, as the script's default interpreter
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OUT": str(tmp_path / "out")}
    env.pop("BUDGET", None)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu-session.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    problems, _ = presets.expand(presets.load("gpu"))
    assert len([line for line in done.stdout.splitlines() if POINT_LINE.match(line)]) == len(problems)
    phases = dict(re.findall(r"^(setup|correctness|preset|report|pack|session)\s+\d+\s+(\d+)$", done.stdout, re.M))
    assert set(phases) == {"setup", "correctness", "preset", "report", "pack", "session"}
    assert sum(int(phases[name]) for name in phases if name != "session") == int(phases["session"])
    assert int(phases["session"]) <= COMMAND_LIMIT_S
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def _huge_preset(tmp_path: Path, expect: str = "") -> Path:
    path = tmp_path / "huge.toml"
    path.write_text(f"""[settings]
time_limit_s = 100000
[[grid]]
impl = ["triton"]
device = ["cuda"]
dtype = ["float32"]
mode = ["fwd_bwd"]
batch = [1]
width = [1024]
heads = [16]
seq_len = [65536, 2097152]
{expect}""")
    return path


def test_a_point_above_the_gpu_memory_fails_the_dry_run_unless_the_preset_expects_it(tmp_path, capsys):
    path = _huge_preset(tmp_path)
    assert cli.main(["run", "--preset", str(path), "--dry-run", "h100"]) == 1
    assert "ABOVE THE DEVICE'S MEMORY" in capsys.readouterr().out
    expected = _huge_preset(tmp_path, '[[expect_oom]]\ndevice_model = ["h100"]\nseq_len = [2097152]\n')
    assert cli.main(["run", "--preset", str(expected), "--dry-run", "h100"]) == 0
    out = capsys.readouterr().out
    assert "expected oom" in out and "1 expected oom" in out
    found = plan_preset.plan_preset(str(expected), "h100")
    assert [p.expected for p in found.points] == [None, "oom"] and not found.over_memory()
    typo = _huge_preset(tmp_path, '[[expect_oom]]\nseq_lens = [2097152]\n')
    assert cli.main(["run", "--preset", str(typo), "--dry-run"]) == 2
    assert "unknown: ['seq_lens']" in capsys.readouterr().err
    # the point's own inputs and working set fit; its graph's pool beside them (and the whole float64 check, which
    # goes in chunks) does not
    big = found.points[1]
    own = plan._values(big.problem) * 4 + plan.working_bytes(big.problem, impls.get("triton"))
    assert own < found.device.memory_bytes < big.peak_bytes
    assert big.check == "chunked"


def test_a_point_past_its_time_limit_fails_the_dry_run(tmp_path, capsys):
    path = tmp_path / "slow.toml"
    path.write_text('[settings]\ntime_limit_s = 5\n[[grid]]\nimpl = ["eager"]\ndevice = ["cuda"]\nbatch = [8]\n'
                    'width = [1024]\nheads = [16]\nseq_len = [32768]\n')
    assert cli.main(["run", "--preset", str(path), "--dry-run"]) == 1
    assert "past the 5 s point limit" in capsys.readouterr().out


def test_each_implementation_gets_the_profile_its_facts_describe():
    assert plan.profile_of(impls.get("triton")) is plan.FUSED_LINEAR
    assert plan.profile_of(impls.get("compiled")) is plan.COMPILED_OPS
    assert plan.profile_of(impls.get("eager")) is plan.OPS
    assert plan.profile_of(impls.get("softmax_sdpa")) is plan.FUSED_ATTENTION
    for name in ("reference", "softmax_naive", "softmax_blocked"):
        assert plan.profile_of(impls.get(name)) is plan.MATERIALISED


def test_compiling_costs_once_per_shape_and_inputs_dominate_large_points():
    settings = Settings(min_time_s=0.3, max_spread=0.05, max_attempts=3, measure_energy=False)
    device, seen = plan.DEVICES["h100"], set()
    point = Problem(impl="compiled", batch=8, seq_len=8192, width=1024, heads=16, device="cuda", dtype="bfloat16")
    first = plan.plan_point(point, settings, device, seen)
    again = plan.plan_point(point.with_(timing="launch"), settings, device, seen)  # the same graph, compiled
    assert first.parts["compile"] > 10 and again.parts["compile"] == 0
    # drawn on the host in float64, twice (the first session's code), the inputs were most of a large point;
    # drawn once on the device and upcast there for the check, they are a small part of it
    host_drawn = plan.plan_point(point, settings, device, set(), host=plan.FIRST_SESSION_HOST)
    assert host_drawn.parts["inputs"] > 5 * host_drawn.parts["timing"]
    assert first.parts["inputs"] < 0.05 * host_drawn.parts["inputs"] and first.parts["inputs"] < first.parts["timing"]


def _first_session_stages() -> list[tuple[str, float, list[Problem], Settings]]:
    """The first GPU session's stages (results/gpu-check: one process each, stopped at its limit during the point
    after the ones it stored): the limit, the points stored, the settings."""
    root = REPO / "results" / "gpu-check"
    run = json.loads((root / "run.json").read_text())
    settings = Settings(**run["settings"])
    limits = {("triton", "bfloat16"): 110, ("eager", "bfloat16"): 80, ("compiled", "bfloat16"): 110,
              ("triton", "float16"): 60}  # docs/gpu.md §6 (the softmax stage's check has changed since)
    stages: dict[tuple, list] = {}
    for line in (root / "points.jsonl").read_text().splitlines():
        record = json.loads(line)
        key = (record["impl"], record["dtype"])
        if key in limits:
            stages.setdefault(key, []).append(Problem(**{a: record[a] for a in axes.NAMES if record.get(a) is not None
                                                          and a != "threads"}))
    return [(f"{impl} {dtype}", limits[(impl, dtype)], problems, settings)
            for (impl, dtype), problems in stages.items()]


@pytest.mark.parametrize("stage", _first_session_stages(), ids=lambda stage: stage[0])
def test_the_model_explains_the_first_gpu_session(stage):
    # Each stage stored these points and was stopped during the next: what they took is at most the limit, and not
    # far below it. A model that ignored the inputs' draws or compile times would predict a fraction of it.
    _, limit, problems, settings = stage
    seen: set = set()
    # that session's code drew every input in float64 on the host, twice: the model's host rates are checked on it
    host = plan.FIRST_SESSION_HOST
    predicted = host.process_start_s + sum(plan.plan_point(p, settings, plan.DEVICES["h200"], seen, host=host).seconds
                                           for p in problems)
    assert 0.6 * limit <= predicted <= 1.15 * limit


def test_a_cpu_preset_dry_run_says_in_one_line_what_it_does_not_plan(capsys):
    assert cli.main(["run", "--preset", "quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    problems, _ = presets.expand(presets.load("quick"))
    (unplanned,) = [line for line in out.splitlines() if "not planned (" in line]
    counts = dict(re.findall(r"(\w+) (\d+)", unplanned.split("(", 1)[1].split(")")[0]))
    assert {impl: int(n) for impl, n in counts.items()} == {
        impl: sum(p.impl == impl for p in problems) for impl in {p.impl for p in problems}}
    assert unplanned.endswith("the plan models GPU points only")
    total = next(line for line in out.splitlines() if line.startswith(plan.TOTAL_LINE))
    assert total.endswith(f"the {len(problems)} points not planned are not in it")
    assert not [line for line in out.splitlines() if POINT_LINE.match(line)] and "by part" not in out
