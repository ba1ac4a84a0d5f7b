"""Conventions every command-line user expects: `--version`, `list --json` for machines, the same facts as text."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

import fastformer_bench
from fastformer_bench import impls, presets


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", *args], capture_output=True, text=True,
                          timeout=300)


def test_version_prints_the_package_version_and_exits_0():
    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"fastformer-bench {fastformer_bench.__version__}"


def test_list_json_names_every_implementation_and_preset_with_what_the_text_says():
    done = _cli("list", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert [impl["name"] for impl in listing["implementations"]] == impls.names()
    assert [preset["name"] for preset in listing["presets"]] == presets.names()
    by_name = {impl["name"]: impl for impl in listing["implementations"]}
    # the sentence the registry gives where it cannot run (the child inherits TRITON_INTERPRET), null where it can
    for device in ("cpu", "cuda"):
        assert {name: impl["unsupported_reason"][device] for name, impl in by_name.items()} == \
            {name: impls.get(name).unsupported_reason(device, torch.float32) for name in impls.names()}
    assert by_name["reference"]["complexity"] == "quadratic" and by_name["stream"]["complexity"] == "linear"
    text = _cli("list").stdout
    assert all(impl["description"] in text for impl in listing["implementations"])


def test_list_preset_json_gives_every_point_with_its_axes_and_id():
    done = _cli("list", "--preset", "quick", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    problems, skipped = presets.expand(presets.load("quick"))
    assert [p["point_id"] for p in listing["points"]] == [p.point_id for p in problems]
    assert {p["impl"] for p in listing["points"]} == {p.impl for p in problems}
    assert len(listing["skipped"]) == len(skipped)
    text = _cli("list", "--preset", "quick").stdout.splitlines()
    assert [line.split()[0] for line in text if not line.startswith("skipped")] == [p.point_id for p in problems]


def test_list_json_of_a_probe_preset_labels_its_points():
    listing = json.loads(_cli("list", "--preset", "probe-quick", "--json").stdout)
    assert listing["kind"] == "probe" and all(p["label"].startswith(p["task"]) for p in listing["points"])


RUN = ["run", "--preset", "quick", "--seq-len", "64", "--width", "32", "--heads", "2", "--no-progress"]


def test_run_ends_with_a_paragraph_naming_the_outcome_and_the_report_command(tmp_path, test_impls):
    done = _cli(*RUN, "--impl", "eager,test_wrong", "--out", str(tmp_path / "r"))
    assert done.returncode == 1, done.stderr  # test_wrong is checked incorrect: a check failed
    last = done.stdout.strip().splitlines()[-1]
    # eager is ok, or contended where this busy machine's neighbours held its CPU: both are counted
    assert any(last.startswith(f"Done: 2 points in {tmp_path / 'r'} ({counts}).")
               for counts in ("1 incorrect, 1 ok", "1 contended, 1 incorrect"))
    assert "A check failed (exit 1): test_wrong " in last and f"fastformer-bench report {tmp_path / 'r'}" in last


def test_run_json_is_one_document_a_machine_can_read(tmp_path, test_impls):
    done = _cli(*RUN, "--impl", "eager,test_wrong", "--out", str(tmp_path / "r"), "--json")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["statuses"] in ({"incorrect": 1, "ok": 1}, {"contended": 1, "incorrect": 1})
    assert summary["failed"] is True
    assert ("test_wrong", "incorrect") in [(p["impl"], p["status"]) for p in summary["not_ok"]]
    stored = [json.loads(line) for line in (tmp_path / "r" / "points.jsonl").read_text().splitlines()]
    assert summary["points"] == len(stored) == 2
