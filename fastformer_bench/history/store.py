"""Filed runs per machine: ``add`` files one results directory under ``HISTORY/<machine fingerprint>/`` as one
JSON entry (commit, commit time, copy bandwidth, and each ok point's median with its p20-p80 band), or an
instruction gate's --json report (each point's instructions per call, under a fingerprint of its own);
``entries`` reads them back, ``check_one_machine`` says whether one folder's runs compare. JSON only, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from fastformer_bench.gate.compare import point_key, point_label
from fastformer_bench.gate.stored import FINGERPRINT, cpu_hardware, fingerprint, hardware_differences, load


def machine_key(found: dict) -> str:
    """A folder name for a fingerprint: readable where it can be, unique by a hash."""
    words = "-".join(str(found.get(k) or "") for k in ("device", "cpu_model", "gpu_name", "threads"))
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", words).strip("-")[:60]
    digest = hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


def machine_fingerprint(run: dict, records: list[dict]) -> dict:
    """The stored gate's fingerprint plus the CPU facts a masked CPU name hides, where the run recorded them: one
    name can cover two generations, and their times must not make one trend. A run without them keeps the folder
    runs filed before them."""
    return {**fingerprint(run, records), **cpu_hardware(run, records)}


def _commit_facts(repo: Path, commit: str) -> tuple[str | None, str | None]:
    """The commit's time (ISO 8601) and subject line, or None where git cannot say."""
    done = subprocess.run(["git", "-C", str(repo), "show", "-s", "--format=%cI%n%s", commit], capture_output=True,
                          text=True)
    if done.returncode != 0:
        return None, None
    time, _, subject = done.stdout.partition("\n")
    return time.strip() or None, subject.strip() or None


#: statuses of points that ran here and said something about the code: filed as gaps with their reason
#: (unsupported points never run on this machine, and are left out)
GAP_STATUSES = ("incorrect", "error", "crashed", "timeout", "oom")


def _timed(results: str | Path) -> tuple[dict, dict, list[dict]]:
    """(run.json, fingerprint, points) of a results directory: each timed, correct point's median and band, and
    each point that failed here with its status and reason (a gap, never a time)."""
    run, records = load(results)  # ValueError (exit 2) for a directory without results
    llc = run.get("last_level_cache_bytes")
    points = []
    for r in records:
        point = {"key": list(point_key(r)), "label": point_label(r), "complexity": r.get("complexity"), "unit": "s"}
        if llc and r.get("bytes_min"):
            # only a point whose data outgrows the cache follows the copy bandwidth (--normalize scales it)
            point["memory_bound"] = r.get("complexity") == "linear" and r["bytes_min"] > llc
        if r.get("status") == "ok" and r.get("time_median") is not None:
            points.append({**point, "median": r["time_median"], "p20": r.get("time_p20"), "p80": r.get("time_p80")})
        elif r.get("status") in GAP_STATUSES:
            points.append({**point, "status": r["status"], "reason": r.get("reason")})
    return run, machine_fingerprint(run, records), points


def _counted(report: Path) -> tuple[dict, dict, list[dict]]:
    """The same from an instruction gate's --json report: each compared point's candidate count per call."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        payload = json.loads(report.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {report} as a gate report: {exc}.") from None
    if not isinstance(payload, dict) or payload.get("mode") != "instructions":
        raise ValueError(f"{report} is not the --json report of an instruction-count gate (--instructions).")
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    points = [{"key": [row["label"]], "label": f"{row['label']} [instructions]", "complexity": None,
               "unit": "instructions", "median": row["candidate"], "p20": None, "p80": None}
              for row in payload.get("rows", []) if row.get("ratio") is not None and row.get("candidate")]
    # Counts depend on the code and the libraries, not on the machine's speed: the fingerprint says so.
    return {}, {"device": "cpu (instruction counts)", "torch": torch_version}, points


def add(results: str | Path, history: str | Path, *, commit: str | None = None, repo: str | Path = ".",
        extra: dict | None = None, require_time: bool = True) -> Path:
    """File ``results`` (a results directory, or an instruction gate's --json report) in ``history``; the entry's
    path. ``extra``: more fields for the entry (the backfill's preset and harness); ``require_time=False`` files a
    run whose every point failed (status "failed", each point a gap). ValueError for bad input."""
    path = Path(results)
    run, found, points = _counted(path) if path.is_file() else _timed(path)
    commit = commit or run.get("git_commit")
    if not commit:
        raise ValueError(f"{results} does not say which commit it measured; give --commit.")
    timed = any(p.get("median") is not None for p in points)
    if not points or (require_time and not timed):
        raise ValueError(f"{results} holds no correct, measured point to file.")
    failed = {} if timed else {"status": "failed", "reason": "no point measured correctly: "
                               + "; ".join(sorted({f"{p['status']}: {p.get('reason')}" for p in points}))[:500]}
    bandwidth = run.get("copy_bytes_per_s")
    if isinstance(bandwidth, dict):
        bandwidth = bandwidth.get("cpu") or next(iter(bandwidth.values()), None)
    return _file({"run_id": run.get("run_id"), "preset": run.get("preset"), "copy_bytes_per_s": bandwidth,
                  "points": points, **failed, **(extra or {})}, history, commit, found, Path(repo))


def add_failure(history: str | Path, commit: str, found: dict, *, status: str, reason: str,
                repo: str | Path = ".", extra: dict | None = None) -> Path:
    """File a commit that could not be measured at all (its code failed to import): a gap with ``reason`` in every
    series of the machine ``found`` (a fingerprint), never a time."""
    return _file({"status": status, "reason": reason, "points": [], **(extra or {})}, history, commit, found,
                 Path(repo))


def _file(fields: dict, history: str | Path, commit: str, found: dict, repo: Path) -> Path:
    commit_time, subject = _commit_facts(repo, commit)
    entry = {"commit": commit, "commit_time": commit_time, "subject": subject, "status": "ok",
             "added": datetime.now(timezone.utc).isoformat(timespec="microseconds"), "fingerprint": found, **fields}
    folder = Path(history) / machine_key(found)
    folder.mkdir(parents=True, exist_ok=True)

    def compact(text: str) -> str:
        return re.sub(r"[^0-9T]", "", text.split("+")[0])

    # Commit time first (history order), then the filing time to the microsecond (two filings never collide).
    name = f"{compact(entry['commit_time'] or entry['added'])[:15]}-{commit[:12]}-{compact(entry['added'])}.json"
    target = folder / name
    # written whole or not at all: an interrupted backfill never leaves half an entry that stops `show`
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    os.replace(partial, target)
    return target


def filed(history: str | Path, found: dict) -> list[dict]:
    """The entries already filed for the machine ``found`` (a fingerprint), in file order; none if no folder."""
    return _read_folder(Path(history) / machine_key(found))


def _read_folder(folder: Path) -> list[dict]:
    loaded = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read history entry {path}: {exc}.") from None
    return loaded


def entries(history: str | Path) -> dict[str, list[dict]]:
    """Every filed entry, per machine folder, in commit-time order (then filing time)."""
    root = Path(history)
    if not root.is_dir():
        raise ValueError(f"no history at {history}: file a run first with `fastformer-bench history add`.")
    found: dict[str, list[dict]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        loaded = _read_folder(folder)
        if loaded:
            found[folder.name] = sorted(loaded, key=lambda e: (e.get("commit_time") or "", e.get("added") or ""))
    if not found:
        raise ValueError(f"the history at {history} holds no entries.")
    return found


def check_one_machine(filed: list[dict], normalize: bool) -> None:
    """Entries of one folder must share a fingerprint; their bandwidths may differ only with ``normalize``."""
    prints = {json.dumps({k: e["fingerprint"].get(k) for k in FINGERPRINT}, sort_keys=True) for e in filed}
    hardware = [{k: v for k, v in e["fingerprint"].items() if k not in FINGERPRINT} for e in filed]
    if len(prints) > 1 or any(hardware_differences(hardware[0], other) for other in hardware[1:]):
        raise ValueError("one history folder holds runs of different machines; file each machine's runs apart.")
    bandwidths = [e.get("copy_bytes_per_s") for e in filed if e.get("copy_bytes_per_s")]
    if not normalize and bandwidths and max(bandwidths) / min(bandwidths) > 1.15:
        raise ValueError(f"the runs' copy bandwidths differ up to {max(bandwidths) / min(bandwidths):.2f}x; "
                         "pass --normalize to scale memory-bound points by it, or file runs of one machine state.")
