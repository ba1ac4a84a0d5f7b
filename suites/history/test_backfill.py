"""`history backfill A..B`: this tree's worker measures each commit's implementations and files it; a commit that
fails to import, or whose point fails its check, is filed as a gap with its reason; a second run resumes; the
range, --step and --dry-run pick the commits (history/backfill.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastformer_bench import history
from fastformer_bench.history import backfill
from fastformer_bench.tools.gate_selftest import snapshot

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.name=backfill-test", "-c", "user.email=backfill@test", "-c", "commit.gpgsign=false"]
EAGER = Path("fastformer_bench") / "impls" / "additive_eager.py"
CALL = "    return additive_attention_core(x, w, mask)\n"
#: one small eager point: a commit costs a worktree, a worker's start (torch's import) and under a second of timing
PRESET = """name = "tiny"
[settings]
threads = 1
warmup_s = 0.02
min_time_s = 0.05
min_samples = 5
max_samples = 10
count_flops = false
measure_energy = false
[[grid]]
impl = ["eager"]
seq_len = [128]
width = [32]
heads = [2]
batch = [1]
"""


def _commit(repo: Path, message: str, change) -> str:
    change(repo)
    subprocess.run([*GIT, "-C", str(repo), "commit", "--quiet", "-a", "-m", message], check=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def _edit(path: Path, old: str, new: str):
    def change(repo: Path) -> None:
        text = (repo / path).read_text()
        assert text.count(old) == 1, f"{path}: {old!r} is not there once"
        (repo / path).write_text(text.replace(old, new))
    return change


def _both(*changes):
    def change(repo: Path) -> None:
        for one in changes:
            one(repo)
    return change


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, list[str]]:
    """This tree as a repository, then four commits: a docs change, one that cannot be imported, one whose eager
    answers 1.5x too much, and one that puts eager right again."""
    repo = snapshot(ROOT, tmp_path_factory.mktemp("backfill") / "repo")
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    init, wrong = Path("fastformer_bench") / "__init__.py", CALL.replace("mask)", "mask) * 1.5")
    last = (repo / init).read_text().splitlines(keepends=True)[-1]
    assert last.endswith("\n") and (repo / init).read_text().count(last) == 1
    commits = [base,
               _commit(repo, "docs only", _edit(Path("LICENSE"), "MIT License", "MIT License ")),
               _commit(repo, "a syntax error", _edit(init, last, last + "this is not python\n")),
               _commit(repo, "eager 1.5x wrong", _both(_edit(init, "this is not python\n", ""),
                                                      _edit(EAGER, CALL, wrong))),
               _commit(repo, "eager right again", _edit(EAGER, wrong, CALL))]
    return repo, commits


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "tiny.toml"
    path.write_text(PRESET)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", "history", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def filled(repo, preset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    store = tmp_path_factory.mktemp("store") / "history"
    root, commits = repo
    done = _cli("backfill", f"{commits[0]}..{commits[-1]}", "--repo", str(root), "--preset", str(preset),
                "--history", str(store))
    return store, done


def test_every_commit_of_the_range_is_filed_and_failures_are_gaps_with_their_reason(repo, filled):
    (_, commits), (store, done) = repo, filled
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backfill: 3 measured, 1 filed as failed, 0 filed already" in done.stdout
    (machine, filed), = history.entries(store).items()
    by_commit = {e["commit"]: e for e in filed}
    assert set(by_commit) == set(commits[1:])  # A..B: A itself is not in the range
    docs, broken, wrong, right = (by_commit[c] for c in commits[1:])
    assert all(e["preset"] == "tiny" and e["harness"] == backfill.HARNESS for e in filed)
    assert docs["status"] == right["status"] == "ok" and docs["subject"] == "docs only"
    (point,) = docs["points"]
    assert point["label"] == "eager cpu float32 fwd B=1 N=128 D=32 H=2 C=3" and point["median"] > 0
    assert broken["status"] == "failed" and broken["points"] == [] and "imports fastformer_bench" in broken["reason"]
    assert wrong["status"] == "failed" and "median" not in wrong["points"][0]
    assert wrong["points"][0]["status"] == "incorrect" and "tolerance" in wrong["points"][0]["reason"]
    line = history.series(filed)[point["label"]]
    assert [m is None for m in line["median"]] == [False, True, True, False]
    assert line["reasons"][1].startswith("failed: ") and line["reasons"][2].startswith("incorrect: ")


def test_the_gaps_reach_history_md_and_history_json(filled, tmp_path):
    store, _ = filled
    # the commits' copy bandwidths, measured minutes apart on a shared machine, may differ beyond the 15 % rule
    shown = _cli("show", "--history", str(store), "--out", str(tmp_path / "out"), "--normalize")
    assert shown.returncode == 0, shown.stderr
    (machine,) = json.loads((tmp_path / "out" / "history.json").read_text())["machines"]
    assert [g["reason"].split(":")[0] for g in machine["gaps"]] == ["failed", "incorrect"]
    text = (tmp_path / "out" / "HISTORY.md").read_text()
    assert "Gaps: commits with no time for a point" in text and "incorrect: max relative error" in text
    assert "2 commits with a gap" in text


def test_a_second_backfill_resumes_and_measures_nothing_filed(repo, preset, filled):
    (root, commits), (store, _) = repo, filled
    before = sorted(p.name for p in store.rglob("*.json"))
    again = _cli("backfill", f"{commits[0]}..{commits[-1]}", "--repo", str(root), "--preset", str(preset),
                 "--history", str(store))
    assert again.returncode == 0, again.stderr
    assert "backfill: 0 measured, 0 filed as failed, 4 filed already" in again.stdout
    assert sorted(p.name for p in store.rglob("*.json")) == before


def test_dry_run_and_step_pick_the_commits(repo, preset, tmp_path):
    root, commits = repo
    assert backfill.commits(root, f"{commits[0]}..{commits[-1]}", step=2) == [commits[2], commits[4]]
    assert backfill.commits(root, commits[3]) == [commits[3]]
    listed = _cli("backfill", f"{commits[0]}..{commits[-1]}", "--repo", str(root), "--preset", str(preset),
                  "--history", str(tmp_path / "h"), "--step", "3", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[2] for line in listed.stdout.splitlines()[1:]] == [commits[1][:12], commits[4][:12]]
    assert "would measure" in listed.stdout and not (tmp_path / "h").exists()


@pytest.mark.parametrize("spec, step, message", [("HEAD..HEAD", 1, "names no commit"),
                                                 ("no-such-rev", 1, "failed"), ("HEAD", 0, "--step")])
def test_bad_ranges_exit_2_in_one_line(repo, spec, step, message):
    root, _ = repo
    done = _cli("backfill", spec, "--repo", str(root), "--step", str(step), "--dry-run")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def test_ctrl_c_keeps_the_commits_finished_and_the_next_run_goes_on(repo, preset, tmp_path):
    root, commits = repo
    store = tmp_path / "history"
    command = [sys.executable, "-m", "fastformer_bench", "history", "backfill", f"{commits[2]}..{commits[4]}",
               "--repo", str(root), "--preset", str(preset), "--history", str(store)]
    # its own process group, as a terminal's foreground job: Ctrl-C reaches the workers too
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(store.rglob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # into the next commit's measuring (its worker starts torch), past its `git worktree add`
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "the same command goes on from the next one" in err
    (entry,) = store.rglob("*.json")
    assert json.loads(entry.read_text())["commit"] == commits[3] and not list(store.rglob("*.partial"))
    worktrees = subprocess.run(["git", "-C", str(root), "worktree", "list"], check=True, capture_output=True,
                               text=True).stdout.splitlines()
    assert len(worktrees) == 1, worktrees  # the interrupted commit's checkout is gone
    again = _cli(*command[4:])
    assert again.returncode == 0 and "backfill: 1 measured, 0 filed as failed, 1 filed already" in again.stdout


def test_an_implementation_the_commit_does_not_have_yet_is_no_gap(tmp_path):
    # the worker's answer when a commit predates an implementation of HEAD's preset (stream before d0ece32)
    loaded = backfill.presets.load("history")
    params = {"impl": "stream", "seq_len": 1024, "width": 256, "heads": 4, "batch": 1, "threads": 1}
    missing = {"status": "error", "reason": "ValueError: unknown implementation 'stream'; known: eager, compiled."}
    record = backfill._record(params, missing, loaded, "run", "cpu")
    assert record["status"] == "unsupported" and "not in this commit" in record["reason"]
    broken = {"status": "error", "reason": "RuntimeError: stream kernel failed"}
    assert backfill._record(params, broken, loaded, "run", "cpu")["status"] == "error"  # a real failure stays a gap
