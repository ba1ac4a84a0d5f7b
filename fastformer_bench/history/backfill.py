"""`history backfill A..B`: this tree's harness and preset measure the implementations of each commit of a range,
and each commit is filed in the history as it finishes.

The way the A/B gate measures a baseline revision (gate/sides.py, gate/ab.py): the commit is checked out in a
temporary worktree, its processes import fastformer_bench from that tree (sides.check_imports_from), and this
tree's worker script (gate/workers/wall.py) builds each point of this tree's preset with the commit's Problem and
implementations, checks it against the commit's reference, and times it in samples on the thread's CPU clock. The
samples become an ordinary results directory (run.json + points.jsonl), filed with ``history.add``.

A commit whose code cannot be imported, or whose worker dies, is filed as ``failed`` with the reason; a point
that fails its correctness check (or errs) is filed with its status and reason. Both are gaps in the trend, never
times. Commits already filed for this machine and preset are skipped, so an interrupted backfill (Ctrl-C: the
commit being measured is lost, the finished ones stay filed) goes on where it stopped when run again.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from fastformer_bench import impls, presets, results
from fastformer_bench.gate.ab import claim_for, interleaved, sampling
from fastformer_bench.gate.sides import GateError, package_tree, worktree
from fastformer_bench.history.store import add, add_failure, filed, machine_fingerprint
from fastformer_bench.measure.bandwidth import last_level_cache_bytes
from fastformer_bench.measure.env import copy_bandwidth, cpu_caches, cpu_model, cpu_signature
from fastformer_bench.measure.flops import analytic_flops, minimal_bytes
from fastformer_bench.presets import Preset
from fastformer_bench.problem import Problem

#: the preset a backfill measures unless told otherwise (presets/history.toml)
PRESET = "history"
#: what the entries say measured them: the A/B gate's worker, one round
HARNESS = "backfill: gate worker (workers/wall.py), thread CPU time on one thread"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"git {' '.join(args)} failed in {repo}: "
                         f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    return done.stdout


def commits(repo: str | Path, spec: str, step: int = 1) -> list[str]:
    """The commits ``spec`` names, oldest first: a range ``A..B`` (first-parent history, as ``git rev-list``), or
    one revision; every ``step``-th of them, the newest always among them. ValueError for an empty range."""
    if step < 1:
        raise ValueError(f"--step must be at least 1, got {step}.")
    repo = Path(repo)
    if ".." in spec or spec.endswith(("^!", "^@")):
        found = _git(repo, "rev-list", "--reverse", "--first-parent", spec, "--").split()
    else:
        found = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}").split()
    if not found:
        raise ValueError(f"{spec!r} names no commit in {repo}.")
    return found[::-1][::step][::-1]


def machine(problems: list, settings: dict) -> dict:
    """This machine's fingerprint for ``problems`` (store.machine_fingerprint, as `history add` of a run here
    gives)."""
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    run = {"cpu_model": cpu_model(), "cpu_signature": cpu_signature(), "cpu_caches_bytes": cpu_caches(),
           "torch": torch_version, "torch_threads": settings.get("threads")}
    return machine_fingerprint(run, [{"device": p.device, "threads": p.threads or settings.get("threads")}
                                     for p in problems])


def _subject(repo: Path, commit: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "show", "-s", "--format=%s", commit], capture_output=True, text=True)
    return done.stdout.strip()


def _record(params: dict, measured: dict, loaded: Preset, run_id: str, cpu: str | None) -> dict:
    """One worker's point as a results record (results.new_record): this tree's Problem, facts and work counts,
    the commit's status, errors and samples."""
    problem = Problem(**params)
    impl = impls.get(problem.impl)
    shape = dict(batch=problem.batch, seq_len=problem.seq_len, width=problem.width, heads=problem.heads,
                 columns=problem.columns)
    axes = {**problem.params(), "threads": problem.threads or loaded.settings.get("threads")}
    record = results.new_record(
        run_id=run_id, point_id=problem.point_id, **axes, **impls.facts(problem.impl),
        device_name=cpu if problem.device == "cpu" else None, preset=loaded.name,
        settings_hash=presets.settings_for(loaded).digest,
        status=measured["status"], reason=measured.get("reason"), max_abs_err=measured.get("max_abs_err"),
        max_rel_err=measured.get("max_rel_err"))
    # the analytic counts, as the flops meter records them: a property of the point, whichever commit ran it
    record["flops"] = analytic_flops(impl.family, impl.quadratic, problem.scope, problem.mode, **shape)
    record["bytes_min"] = minimal_bytes(impl.family, problem.scope, problem.mode,
                                        dtype_bytes=problem.torch_dtype.itemsize, **shape)
    if measured["status"] == "error" and f"unknown implementation {problem.impl!r}" in (measured.get("reason") or ""):
        # an implementation added later: its series starts where it arrives, no gap before it
        record.update(status="unsupported", reason=f"{problem.impl} is not in this commit")
    samples = measured.get("samples") or []
    if measured["status"] == "ok" and samples:
        p20, median, p80 = (float(v) for v in np.percentile(samples, [20, 50, 80]))
        record.update(samples=samples, time_median=median, time_p20=p20, time_p80=p80,
                      calls_per_sample=sampling(measured["per_call_s"], loaded.settings)[0],
                      timing_method=measured.get("clock"))
    elif measured["status"] == "ok":
        record.update(status="error", reason="the worker returned no samples")
    return record


def measure(repo: Path, commit: str, loaded: Preset, out: Path, *, cpus: set[int] | None = None) -> Path:
    """Measure ``commit``'s implementations with this tree's worker at the points of the preset ``loaded`` into
    the results directory it returns (under ``out``); GateError when the commit cannot be measured at all (its
    code fails to import, its worker dies)."""
    problems, _ = presets.expand(loaded)
    settings = dict(loaded.settings)
    started = datetime.now(timezone.utc)
    run_id = f"{loaded.name}-{commit[:12]}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    bandwidth = copy_bandwidth("cpu", threads=settings.get("threads"))  # the machine's state, as a run records it
    with worktree(repo, commit) as tree:
        found = interleaved({"commit": tree}, [{"commit": p.params()} for p in problems], settings, 1,
                            out / "rounds", cpus=cpus, label=f"backfill {commit[:12]}")["commit"][0]
    cpu = cpu_model()
    store = results.ResultStore(out / "results")
    for problem, measured in zip(problems, found):
        store.append(_record(problem.params(), measured, loaded, run_id, cpu))
    store.write_run({"run_id": run_id, "git_commit": commit, "preset": loaded.name, "settings": settings,
                     "cpu_model": cpu, "cpu_signature": cpu_signature(), "cpu_caches_bytes": cpu_caches(),
                     "last_level_cache_bytes": last_level_cache_bytes(), "torch": version("torch"),
                     "torch_threads": settings.get("threads"),
                     "copy_bytes_per_s": {"cpu": bandwidth}, "started_at": started.isoformat(),
                     "ended_at": datetime.now(timezone.utc).isoformat(), "harness": HARNESS})
    return store.directory


def _harness_commit() -> str | None:
    done = subprocess.run(["git", "-C", str(package_tree()), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None if done.returncode == 0 else None


def backfill(spec: str, *, preset: str = PRESET, history: str | Path = "results/history", repo: str | Path = ".",
             step: int = 1, dry_run: bool = False, say: Callable[[str], None] = print) -> dict:
    """Measure and file every commit of ``spec`` (see commits) not yet filed for this machine and ``preset``.
    Returns {"measured": [...], "failed": [...], "skipped": [...], "planned": [...]} (commits)."""
    repo = Path(repo).resolve()
    loaded = presets.load(preset)
    problems, _ = presets.expand(loaded)
    found = machine(problems, loaded.settings)
    todo = commits(repo, spec, step)
    done = {e["commit"] for e in filed(history, found) if e.get("preset") == loaded.name}
    summary: dict = {"planned": [c for c in todo if c not in done], "skipped": [c for c in todo if c in done],
                     "measured": [], "failed": []}
    say(f"backfill: {len(todo)} commit(s) in {spec}, {len(summary['skipped'])} filed already for this machine and "
        f"preset {loaded.name} ({len(problems)} points each)")
    if dry_run:
        for commit in todo:
            say(f"  {'filed already' if commit in done else 'would measure'} {commit[:12]} {_subject(repo, commit)}")
        return summary
    cpus = claim_for({"commit": repo}, [{"commit": p.params()} for p in problems], loaded.settings) \
        if summary["planned"] else None
    extra = {"preset": loaded.name, "harness": HARNESS, "harness_commit": _harness_commit()}
    for number, commit in enumerate(summary["planned"], 1):
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ffb-backfill-") as tmp:
            try:
                results_dir = measure(repo, commit, loaded, Path(tmp), cpus=cpus)
            except GateError as exc:
                # the commit's code, not the machine: filed, so the page shows the gap and its reason
                if "git worktree add failed" in str(exc):
                    raise
                add_failure(history, commit, found, status="failed", reason=str(exc), repo=repo, extra=extra)
                summary["failed"].append(commit)
                say(f"backfill: [{number}/{len(summary['planned'])}] {commit[:12]} failed: {exc}")
                continue
            target = add(results_dir, history, commit=commit, repo=repo, extra=extra, require_time=False)
        summary["measured"].append(commit)
        say(f"backfill: [{number}/{len(summary['planned'])}] {commit[:12]} filed {target} "
            f"({time.monotonic() - began:.0f} s)")
    return summary
