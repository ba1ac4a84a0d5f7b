"""A stored baseline: committed results compared only with results from the same hardware and software.

The fingerprint is what makes two wall times comparable at all: the device kind(s) measured, the CPU model
(CPU points) or GPU name (CUDA points), the torch version, and the CPU thread count (CPU points), and where both
runs recorded them the CPU's signature and cache sizes (cpu_hardware: one CPU name can cover two generations).
Anything else in run.json (hostname, git commit, library versions the kernels never call) may differ.
The machine's state must match too: the same machine type measured 21 or 41 GB/s of copy bandwidth on different
days, and memory-bound times followed it. Two runs whose copy bandwidths (run.json, measured at the start and
end of each run) differ by more than BANDWIDTH_TOLERANCE are refused unless ``--normalize`` scales the
candidate's memory-bound (linear-complexity) points by the bandwidth ratio, naming them. A stored point timed
while other tasks held its CPU (CONTENTION_LIMIT) is not compared: its time says more about the neighbours.
A candidate not stored yet is measured with the ordinary ``run`` command (run_side).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastformer_bench.gate.sides import GateError, side_env_wall
from fastformer_bench.results import POINTS_FILE, points_files, read_points, read_run, read_store

FINGERPRINT = ("device", "cpu_model", "gpu_name", "torch", "threads")
#: relative difference of two runs' copy bandwidths beyond which their times are not comparable as they are
BANDWIDTH_TOLERANCE = 0.10
#: share of a stored point's timing lost to other tasks on its CPU beyond which it is not compared
CONTENTION_LIMIT = 0.05


def copy_bandwidth(run: dict, device: str) -> float | None:
    """The run's copy bandwidth on ``device`` (bytes/s): the mean of its start and end measurements."""
    found = []
    for key in ("copy_bytes_per_s", "copy_bytes_per_s_end"):
        value = run.get(key)
        value = value.get(device) if isinstance(value, dict) else value
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            found.append(float(value))
    return sum(found) / len(found) if found else None


def bandwidth_ratios(baseline_dir: str | Path, base_run: dict, cand_run: dict, devices: set[str],
                     normalize: bool) -> dict[str, float]:
    """Candidate / baseline copy bandwidth per device; ValueError (exit 2) for states that differ beyond the
    tolerance, unless ``normalize``."""
    ratios, far = {}, []
    for device in sorted(devices):
        base, cand = copy_bandwidth(base_run, device), copy_bandwidth(cand_run, device)
        if base is None or cand is None:
            continue
        ratios[device] = cand / base
        if abs(ratios[device] - 1) > BANDWIDTH_TOLERANCE:
            far.append(f"{device} copy bandwidth {base / 1e9:.3g} vs {cand / 1e9:.3g} GB/s")
    if far and not normalize:
        raise ValueError(f"the stored baseline {baseline_dir} was measured in another machine state ("
                         f"{'; '.join(far)}, more than {BANDWIDTH_TOLERANCE:.0%} apart); re-measure it, or pass "
                         "--normalize to scale memory-bound points by the bandwidth ratio.")
    return ratios


def normalized(records: list[dict], ratios: dict[str, float]) -> tuple[list[dict], list[str]]:
    """Memory-bound (linear) candidate points' times as if measured at the baseline's bandwidth, and their ids."""
    out, scaled = [], []
    for r in records:
        ratio = ratios.get(r.get("device"))
        if r.get("status") != "ok" or r.get("complexity") != "linear" or ratio is None or abs(ratio - 1) < 1e-12:
            out.append(r)
            continue
        # time ~ bytes / bandwidth: at the baseline's bandwidth the candidate's time would be ratio x longer
        out.append({**r, "samples": [t * ratio for t in r.get("samples") or []]})
        scaled.append(f"{r['impl']} N={r['seq_len']} D={r['width']}")
    return out, scaled


def without_contended(records: list[dict]) -> list[dict]:
    """Records timed under contention beyond CONTENTION_LIMIT marked ``contended`` (so never compared)."""
    from fastformer_bench.measure.timing import contention_share

    out = []
    for r in records:
        share = contention_share(r.get("contention") or {}) if r.get("status") == "ok" else None
        if share is not None and share > CONTENTION_LIMIT:
            r = {**r, "status": "contended", "reason": f"timed while other tasks held its CPU {share:.0%} of the time"}
        out.append(r)
    return out


def fingerprint(run: dict, records: list[dict]) -> dict:
    """The fingerprint of one results directory (its run.json and its records)."""
    devices = sorted({r["device"] for r in records})
    torch_version = run.get("torch")
    if isinstance(torch_version, dict):
        torch_version = torch_version.get("version")
    found = {"device": ",".join(devices), "torch": torch_version}
    if "cpu" in devices:
        found["cpu_model"] = run.get("cpu_model")
        threads = sorted({r["threads"] for r in records if r["device"] == "cpu" and r.get("threads")})
        found["threads"] = ",".join(map(str, threads)) or run.get("torch_threads")
    if "cuda" in devices:
        names = sorted({r["device_name"] for r in records if r["device"] == "cuda" and r.get("device_name")})
        found["gpu_name"] = ",".join(names) or run.get("gpu_name")
    return found


def cpu_hardware(run: dict, records: list[dict]) -> dict:
    """What a masked CPU name hides, where the run recorded it and measured CPU points: the CPU's signature
    (family, model, stepping) and its cache sizes per level."""
    found = {}
    if not any(r.get("device") == "cpu" for r in records):
        return found
    if run.get("cpu_signature"):
        found["cpu_signature"] = run["cpu_signature"]
    caches = run.get("cpu_caches_bytes")
    if isinstance(caches, dict) and caches:
        found["cpu_caches"] = ", ".join(f"{level} {_binary(size)}" for level, size in sorted(caches.items()))
    return found


def _binary(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def hardware_differences(a: dict, b: dict) -> list[str]:
    """The CPU facts (two cpu_hardware results) both runs recorded and that differ: one CPU name can cover two
    generations."""
    return [f"{key} {a[key]!r} vs {b[key]!r}" for key in sorted(set(a) & set(b)) if a[key] != b[key]]


def differences(baseline: dict, candidate: dict) -> list[str]:
    return [f"{key} {baseline.get(key)!r} vs {candidate.get(key)!r}" for key in FINGERPRINT
            if (key in baseline or key in candidate) and baseline.get(key) != candidate.get(key)]


def load(directory: str | Path) -> tuple[dict, list[dict]]:
    """run.json and the records of a results directory; ValueError (exit 2) when it holds none."""
    path = Path(directory)
    if not points_files(path):
        raise ValueError(f"no results at {directory}: expected a directory holding {POINTS_FILE} or its shards.")
    return read_run(path), read_store(path)


def check_comparable(baseline_dir: str | Path, base_run: dict, base_records: list[dict], cand_run: dict,
                     cand_records: list[dict]) -> None:
    """ValueError (one line, exit 2) naming every fingerprint field that differs, and the CPU's hardware facts
    where both runs measured CPU points and recorded them."""
    diff = differences(fingerprint(base_run, base_records), fingerprint(cand_run, cand_records))
    diff += hardware_differences(cpu_hardware(base_run, base_records), cpu_hardware(cand_run, cand_records))
    if diff:
        raise ValueError(f"the stored baseline {baseline_dir} was measured elsewhere (baseline vs candidate: "
                         f"{'; '.join(diff)}); re-measure the baseline here or use --baseline-rev.")


def run_side(tree: Path, out: Path, run_args: list[str], timeout: float = 1800) -> list[dict]:
    """One side measured now: ``python -m fastformer_bench run`` in ``tree``; its records."""
    command = [sys.executable, "-m", "fastformer_bench", "run", "--out", str(out), "--no-progress", "--no-flops",
               *run_args]
    try:
        done = subprocess.run(command, cwd=tree, env=side_env_wall(tree), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GateError(f"a run in {tree} exceeded {timeout:g} s") from None
    if done.returncode == 2:  # the request is wrong for that side (bad axis, unknown implementation)
        raise ValueError((done.stderr.strip().splitlines() or ["run refused the request"])[-1])
    if done.returncode not in (0, 1) or not (out / POINTS_FILE).exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise GateError(f"the run in {tree} exited {done.returncode}: {tail}")
    return read_points(out / POINTS_FILE)
