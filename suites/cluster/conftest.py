"""The cluster suite (tox -e cluster): sweeps through a real single-node Slurm (scripts/slurm-up.sh) and through
submitit's local executor. Not part of `tox -e tests`: it needs the cluster, and minutes.

Without a cluster the Slurm tests are skipped, naming why; with FASTFORMER_BENCH_REQUIRE_CLUSTER=1 (tox -e
cluster, which has just started one) they fail instead, so a cluster that did not come up is never a green run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: tiny points with a short timing, no CPU pinning (several jobs share this machine's few cores)
TEST_PRESET = """
name = "cluster-test"
description = "tiny points for the cluster suite"
[settings]
threads = 1
warmup_s = 0.05
min_time_s = 0.2
min_samples = 3
max_samples = 20
time_limit_s = 60
[[grid]]
impl = ["eager", "softmax_sdpa", "reference"]
seq_len = [64, 128]
width = [32]
heads = [2]
batch = [1]
"""


def slurm_problem() -> str | None:
    """Why no Slurm cluster can take jobs here (None when one can)."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (start one with scripts/slurm-up.sh)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    states = done.stdout.split()
    if done.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        return f"no Slurm node is up (sinfo: {(done.stderr or done.stdout).strip()[:200] or 'nothing'})"
    return None


@pytest.fixture
def slurm() -> None:
    problem = slurm_problem()
    if problem is not None:
        if os.environ.get("FASTFORMER_BENCH_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"the cluster suite needs a Slurm cluster: {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def test_preset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("preset") / "cluster-test.toml"
    path.write_text(TEST_PRESET)
    return str(path)


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastformer_bench", *args]


def interruptible() -> None:
    """preexec_fn: SIGINT at its default in the child, as in a terminal. A suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the
    submitter would never see the Ctrl-C the tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout)


def submissions(out: Path) -> list[dict]:
    path = out / "cluster.json"
    return json.loads(path.read_text())["submissions"] if path.exists() else []


def cancel_all(out: Path) -> None:
    """scancel every job this results directory submitted (a failed test must not leave jobs behind)."""
    ids = [job for entry in submissions(out) if entry["executor"] == "slurm" for job in entry["jobs"]]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@pytest.fixture(scope="session", autouse=True)
def time_limit_run(request, tmp_path_factory, test_preset):
    """The time-limit test's sweep, started with the session so its minutes overlap the other tests.

    Slurm warns a job (SIGUSR2) 90 s before its limit (submitit's signal_delay_s): with --time-min 3 and a
    shard of 8 points of 20 s each, the warning comes mid-shard.
    """
    wanted = any(item.name.startswith("test_time_limit") for item in request.session.items)
    if not wanted or slurm_problem() is not None:
        yield None
        return
    out = tmp_path_factory.mktemp("time-limit") / "out"
    started = time.monotonic()
    proc = subprocess.Popen(cli_command("run", "--preset", test_preset, "--out", str(out), "--seq-len",
                                        "64,96,128,160", "--impl", "eager,softmax_sdpa", "--min-time", "20",
                                        "--no-flops", "--executor", "slurm", "--jobs", "1", "--time-min", "3"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    yield {"proc": proc, "out": out, "started": started}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)  # reads and closes its pipes (the test may not have)
    cancel_all(out)
