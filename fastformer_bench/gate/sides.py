"""A side of a gate: which tree its processes import fastformer_bench from, and the environment they run in.

Every process the gate starts for a side (a worker, a valgrind run, a ``run`` command) takes its environment from
here, so the baseline and the candidate are set up the same way: only the tree on PYTHONPATH differs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: the scripts a side's processes run (copied out of this package: see copy_worker)
WORKERS = Path(__file__).with_name("workers")

#: glibc's malloc otherwise maps and unmaps every tensor above a threshold it moves as the process runs, so
#: whether a call pays page faults depends on the process's history (docs/gate.md §2); fixed thresholds give both
#: sides the steady state of a long-running process.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**31)}


class GateError(RuntimeError):
    """A side could not be measured at all (not a property of the code under test)."""


class InstructionError(GateError):
    """A side's callgrind run failed or left no counts."""


def side_env(tree: Path) -> dict[str, str]:
    """The environment of a process that must import fastformer_bench from ``tree`` (not an installed copy)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH", "")]))
    env["PYTHONHASHSEED"] = "0"  # the same dict/set iteration order in every process
    env["OMP_NUM_THREADS"] = "1"
    return env


def side_env_wall(tree: Path) -> dict[str, str]:
    """side_env for wall-time processes: the thread count is the preset's, the malloc thresholds are fixed."""
    env = side_env(tree)
    env.pop("OMP_NUM_THREADS")  # wall-time runs take their thread count from the preset, like any run
    for name, value in MALLOC_ENV.items():
        env.setdefault(name, value)
    return env


def copy_worker(name: str, workdir: Path) -> Path:
    """Copy the worker script ``name`` (and the side API it imports) into ``workdir``; the copy's path.

    A copy outside any tree, so the script's folder shadows no module of the side it runs against, and the
    script is this gate's version whichever revision the side is.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    for file in (name, "side_api.py"):
        shutil.copyfile(WORKERS / file, workdir / file)
    return workdir / name


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def package_tree() -> Path:
    """The source tree this fastformer_bench was imported from (the candidate, by default)."""
    return Path(__file__).resolve().parents[2]


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
