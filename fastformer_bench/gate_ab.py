"""A/B: the baseline revision in a temporary git worktree, measured in the same job as the candidate.

Each side runs gate_worker.py against its own tree, both alive at once but only one measuring at a time: the
gate asks them for samples in turn (B C C B B C ...), so a neighbour's load on a shared runner, which comes and
goes over seconds, lands on both sides alike instead of on whichever side ran in that window. Both are pinned to
the same CPUs and run with the same fixed malloc thresholds (see MALLOC_ENV), which removed most of the
per-process bias measured on a shared 2-core runner. Rounds restart both processes, so what remains of
process-level luck (memory layout) is sampled as well.
(A stored baseline's candidate is measured with the ordinary ``run`` command: run_side.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fastformer_bench.gate_instructions import side_env
from fastformer_bench.results import read_points

WORKER = Path(__file__).with_name("gate_worker.py")


class GateError(RuntimeError):
    """A side could not be measured at all (not a property of the code under test)."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def package_tree() -> Path:
    """The source tree this fastformer_bench was imported from (the candidate, by default)."""
    return Path(__file__).resolve().parent.parent


def resolve_rev(repo: Path, rev: str) -> str:
    """The commit ``rev`` names; ValueError (exit 2) when it names none."""
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if done.returncode != 0:
        where = "" if _git(repo, "rev-parse", "--git-dir").returncode == 0 else f" ({repo} is not a git repository)"
        raise ValueError(f"--baseline-rev {rev!r} names no commit{where}.")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(repo: Path, rev: str) -> Iterator[Path]:
    """A detached checkout of ``rev`` beside the repository, removed afterwards."""
    sha = resolve_rev(repo, rev)
    holder = Path(tempfile.mkdtemp(prefix="ffb-baseline-"))
    path = holder / "tree"
    done = _git(repo, "worktree", "add", "--detach", "--quiet", str(path), sha)
    if done.returncode != 0:
        shutil.rmtree(holder, ignore_errors=True)
        raise GateError(f"git worktree add failed: {done.stderr.strip()[:300]}")
    try:
        yield path
    finally:
        _git(repo, "worktree", "remove", "--force", str(path))
        shutil.rmtree(holder, ignore_errors=True)
        _git(repo, "worktree", "prune")


def check_imports_from(tree: Path) -> None:
    """Refuse to measure a side whose processes would import fastformer_bench from somewhere else."""
    probe = subprocess.run([sys.executable, "-c", "import fastformer_bench; print(fastformer_bench.__file__)"],
                           cwd=tree, env=side_env(tree), capture_output=True, text=True)
    found = Path(probe.stdout.strip() or ".").resolve()
    if probe.returncode != 0 or tree.resolve() not in found.parents:
        raise GateError(f"a process started in {tree} imports fastformer_bench from {found}, not from that tree")


def run_side(tree: Path, out: Path, run_args: list[str], timeout: float = 1800) -> list[dict]:
    """One round of one side: ``python -m fastformer_bench run`` in ``tree``; its records."""
    command = [sys.executable, "-m", "fastformer_bench", "run", "--out", str(out), "--no-progress", "--no-flops",
               *run_args]
    try:
        done = subprocess.run(command, cwd=tree, env=side_env_wall(tree), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GateError(f"a run in {tree} exceeded {timeout:g} s") from None
    if done.returncode == 2:  # the request is wrong for that side (bad axis, unknown implementation)
        raise ValueError((done.stderr.strip().splitlines() or ["run refused the request"])[-1])
    if done.returncode not in (0, 1) or not (out / "points.jsonl").exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise GateError(f"the run in {tree} exited {done.returncode}: {tail}")
    return read_points(out / "points.jsonl")


#: glibc's malloc otherwise maps and unmaps every tensor above a threshold it moves as the process runs, so
#: whether a call pays page faults depends on the process's history: a per-process bias of +-20 % on small CPU
#: problems. Fixed thresholds give both sides the steady state of a long-running process.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**31)}


def side_env_wall(tree: Path) -> dict[str, str]:
    env = side_env(tree)
    env.pop("OMP_NUM_THREADS")  # wall-time runs take their thread count from the preset, like any run
    for name, value in MALLOC_ENV.items():
        env.setdefault(name, value)
    return env


class Worker:
    """A running gate_worker.py of one side (its stderr goes to a file, so a full pipe never blocks it)."""

    def __init__(self, name: str, tree: Path, workdir: Path, cpus: set[int] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        script = workdir / WORKER.name  # a copy outside any tree, so the script's folder shadows no module
        shutil.copyfile(WORKER, script)
        self.name, self.log = name, workdir / "stderr.txt"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(script)], cwd=workdir, env=side_env_wall(tree),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def ask(self, payload: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            tail = (self.log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1][:300]
            raise GateError(f"the {self.name} worker died: {tail}")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _measure_point(workers: dict[str, Worker], params: dict[str, dict], settings: dict, samples: int,
                   sample_s: float) -> dict[str, dict]:
    setup = {name: workers[name].ask({"op": "setup", "params": params[name], "threads": settings.get("threads"),
                                      "warmup_s": settings.get("warmup_s", 0.1)}) for name in workers}
    records = {name: {**params[name], **setup[name], "samples": []} for name in workers}
    if any(reply["status"] != "ok" for reply in setup.values()):
        return records
    first = next(iter(workers))
    # The same number of calls per sample on both sides (the first side's estimate): equal windows of time.
    calls = max(1, round(sample_s / max(setup[first]["per_call_s"], 1e-9)))
    names = list(workers)
    for number in range(samples):
        for name in names if number % 2 == 0 else names[::-1]:
            reply = workers[name].ask({"op": "sample", "calls": calls})
            if "error" in reply:
                records[name].update(status="error", reason=reply["error"])
                return records
            records[name]["samples"].append(reply["s"])
    return records


def shared_cpus(threads: int | None) -> set[int] | None:
    """The CPUs both sides are pinned to: the same ones, so a busy neighbour on one core slows both sides alike
    (left to the scheduler, each side tends to stay on its own core, and the neighbour biases one side only)."""
    if not hasattr(os, "sched_getaffinity") or not threads:
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return set(allowed[-int(threads):]) if int(threads) < len(allowed) else None


def interleaved(trees: dict[str, Path], points: list[dict[str, dict]], settings: dict, rounds: int,
                workdir: Path) -> dict[str, list[list[dict]]]:
    """Every point measured by both sides sample by sample (B C C B ...), in ``rounds`` fresh pairs of processes.

    ``points`` holds, per point, each side's Problem parameters; ``settings`` is the preset's [settings]
    (threads, warmup_s, and min_time_s / min_samples: the samples per point and round, and their length).
    """
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}.")
    for tree in trees.values():
        check_imports_from(tree)
    samples = int(settings.get("min_samples", 10))
    cpus = shared_cpus(settings.get("threads"))
    sample_s = float(settings.get("min_time_s", 0.3)) / samples
    found: dict[str, list[list[dict]]] = {name: [] for name in trees}
    for number in range(rounds):
        names = list(trees) if number % 2 == 0 else list(trees)[::-1]
        workers = {name: Worker(name, trees[name], workdir / f"{name}-{number}", cpus) for name in names}
        try:
            measured = [_measure_point(workers, point, settings, samples, sample_s) for point in points]
        finally:
            for worker in workers.values():
                worker.close()
        for name in trees:
            found[name].append([m[name] for m in measured])
        print(f"gate: round {number + 1}/{rounds} done", file=sys.stderr, flush=True)
    return found
