"""The CLI contract (docs/design.md §5): bad requests are one line on stderr and exit 2; run/list/env work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "--preset", "no-such-preset", "--out", "X"], "unknown preset"),
        (["run", "--preset", "quick", "--out", "X", "--seq-len", "12,abc"], "integers"),
        (["run", "--preset", "quick", "--out", "X", "--impl", "bogus"], "unknown implementation"),
        (["run", "--preset", "quick", "--out", "X", "--dtype", "float8"], "unknown dtype"),
        (["run", "--preset", "quick", "--out", "X", "--masked", "maybe"], "true or false"),
        (["run", "--preset", "quick", "--out", "X", "--width", "10", "--heads", "3"], "divisible"),
        (["run", "--preset", "quick", "--out", "X", "--device", "cuda", "--timing", "graph,fast"],
         "unknown timing 'fast'; known: graph, launch"),
        (["run", "--preset", "quick", "--out", "X", "--device", "cuda", "--cache", "hot"],
         "unknown cache 'hot'; known: warm, cold"),
        (["run", "--preset", "quick"], "required"),
        (["frobnicate"], "invalid choice"),
        (["report", "does-not-exist", "--out", "Y"], "no results"),
    ],
)
def test_bad_request_is_one_line_and_exit_2(args, words, tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastformer_bench", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert words in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "X").exists()


def test_bad_preset_file_is_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[grid]]\nimpl = ['eager']\nsequence = [1]\n")
    done = cli("run", "--preset", str(bad), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "unknown grid axes" in done.stderr
    bad.write_text("this is = = not toml")
    done = cli("run", "--preset", str(bad), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "not valid TOML" in done.stderr
    for setting, words in (("max_attempts = 0", "max_attempts"), ("max_spread = -0.5", "max_spread"),
                           ("revisits = -1", "revisits"),
                           ("min_samples = 9\nmax_samples = 3", "min_samples")):
        bad.write_text(f"[settings]\n{setting}\n[[grid]]\nimpl = ['eager']\n")
        done = cli("run", "--preset", str(bad), "--out", str(tmp_path / "o"))
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_run_writes_records_and_run_json_and_exits_0(tmp_path):
    out = tmp_path / "r"
    done = cli("run", "--preset", "quick", "--out", str(out), "--impl", "eager,triton,softmax_naive",
               "--seq-len", "16", "--width", "8", "--heads", "2", "--columns", "2,3", "--min-time", "0.05",
               "--no-progress")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    # softmax with C = 2 makes no sense: skipped, not recorded, not an error
    assert sorted((r["impl"], r["columns"]) for r in records) == [
        ("eager", 2), ("eager", 3), ("softmax_naive", 3), ("triton", 2), ("triton", 3)]
    # conftest turned the Triton interpreter on (no GPU here), and the child process inherits it. Every point is
    # checked and timed; on a busy machine a point timed beside a competitor is stored contended, not ok.
    assert {r["status"] for r in records} <= {"ok", "contended"}, [r["reason"] for r in records]
    assert all(r["max_rel_err"] <= r["tolerance"] and r["time_median"] > 0 for r in records)
    run = json.loads((out / "run.json").read_text())
    assert run["preset"] == "quick" and run["threads"] >= 1 and run["torch"]
    # the machine's state at the start and at the end of the run
    assert run["copy_bytes_per_s"]["cpu"] > 0 and run["copy_bytes_per_s_end"]["cpu"] > 0
    # quick pins its one thread to a CPU no other fastformer-bench process holds, where another is left over,
    # and says which; it may re-measure noisy windows (up to 3), and a contended timing once more
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) > 1:
        (cpu,) = run["cpu_affinity"]
        assert cpu in allowed and f"timing on CPU {cpu}" in done.stderr
    else:
        assert run["cpu_affinity"] is None
    assert all(1 <= r["timing_attempts"] <= 6 and len(r["rejected_samples"]) == r["timing_attempts"] - 1
               for r in records)
    assert "1 combinations skipped" in done.stdout


@pytest.mark.usefixtures("test_impls")
def test_incorrect_point_makes_run_exit_1(tmp_path):
    done = cli("run", "--preset", "quick", "--out", str(tmp_path / "r"), "--impl", "test_wrong", "--seq-len", "16",
               "--width", "8", "--heads", "2", "--no-progress", "--no-flops")
    assert done.returncode == 1, done.stderr


def test_list_and_env():
    listed = cli("list")
    assert listed.returncode == 0
    for name in ("reference", "eager", "compiled", "triton", "softmax_naive", "softmax_sdpa", "quick", "paper-fig2"):
        assert name in listed.stdout
    points = cli("list", "--preset", "paper-fig2")
    assert points.returncode == 0 and "N=65536" in points.stdout and "B=1 " in points.stdout
    env = cli("env")
    assert env.returncode == 0 and "torch" in json.loads(env.stdout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the records of CUDA points on a machine without one")
def test_run_sweeps_the_timing_and_cache_axes_into_the_records(tmp_path):
    out = tmp_path / "r"
    done = cli("run", "--preset", "quick", "--out", str(out), "--impl", "eager", "--seq-len", "16", "--width", "8",
               "--heads", "2", "--device", "cuda", "--timing", "graph,launch", "--cache", "warm,cold",
               "--no-progress")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert sorted((r["timing"], r["cache"]) for r in records) == [("graph", "cold"), ("graph", "warm"),
                                                                  ("launch", "cold"), ("launch", "warm")]
    assert len({r["point_id"] for r in records}) == 4
    assert {r["status"] for r in records} == {"unsupported"} and "no CUDA device" in records[0]["reason"]
    # the same axes on a CPU point make no sense: skipped, said so, not an error
    cpu = cli("run", "--preset", "quick", "--out", str(tmp_path / "c"), "--impl", "eager", "--seq-len", "16",
              "--width", "8", "--heads", "2", "--timing", "launch", "--no-progress")
    assert cpu.returncode == 0, cpu.stderr
    assert "0 points recorded, 1 combinations skipped" in cpu.stdout


def test_report_takes_include_noisy_and_treats_noisy_points_as_ok(tmp_path):
    from testkit.synthetic_results import synthetic_records, write_results

    from fastformer_bench.cli import build_parser
    from fastformer_bench.report import load

    records = synthetic_records()
    records[0] = {**records[0], "status": "noisy", "reason": "p20-p80 spread 9% above the 5% limit"}
    write_results(tmp_path / "r", records)
    args = build_parser().parse_args(["report", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--include-noisy"])
    assert args.include_noisy and not args.include_contended
    kept = load([str(tmp_path / "r")])[0]
    shown = load([str(tmp_path / "r")], include_noisy=True)[0]
    noisy_id = records[0]["point_id"]
    assert kept.loc[kept["point_id"] == noisy_id, "status"].tolist() == ["noisy"]
    assert shown.loc[shown["point_id"] == noisy_id, "status"].tolist() == ["ok"]


def _parsers():
    """The top-level parser and every subcommand's, nested ones (history's) included."""
    from fastformer_bench.cli import build_parser

    found, todo = [], [build_parser()]
    while todo:
        parser = todo.pop()
        found.append(pytest.param(parser, id=parser.prog))
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            todo += action.choices.values()
    return found


@pytest.mark.parametrize("parser", _parsers())
def test_every_help_page_renders(parser):
    # argparse %-formats every help string: a bare "95%" raised TypeError on `fastformer-bench --help`
    text = parser.format_help()
    assert parser.prog in text
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
