"""`run --executor ...`: a request that cannot be submitted is one line on stderr and exit 2, before anything is
submitted or written (docs/design.md §5). The runs themselves are in suites/cluster (they need a Slurm cluster)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

RUN = ["run", "--preset", "quick", "--impl", "eager", "--seq-len", "64", "--width", "32", "--heads", "2"]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("extra, words", [
    (["--executor", "kubernetes"], "invalid choice: 'kubernetes'"),
    (["--partition", "gpu"], "--partition applies to a cluster run"),
    (["--jobs", "3"], "--jobs applies to a cluster run"),
    (["--executor", "local", "--jobs", "0"], "--jobs must be at least 1"),
    (["--executor", "local", "--time-min", "0"], "--time-min must be at least 1"),
    (["--executor", "local", "--partition", "gpu"], "apply to --executor slurm only"),
    (["--executor", "local", "--slurm-option", "account"], "KEY=VALUE"),
])
def test_a_wrong_cluster_request_is_one_line_and_exit_2(tmp_path, extra, words):
    out = tmp_path / "out"
    done = cli(*RUN, "--out", str(out), *extra)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()  # refused before the directory was touched


def test_executor_slurm_without_sbatch_is_refused_before_anything_is_written(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()  # a PATH holding no Slurm commands
    out = tmp_path / "out"
    done = cli(*RUN, "--out", str(out), "--executor", "slurm", env={**os.environ, "PATH": str(bare)})
    assert done.returncode == 2, done.stderr
    assert "needs Slurm's sbatch on PATH" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
