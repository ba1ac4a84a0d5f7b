"""Instruction counts per call under valgrind's callgrind: the gate's deterministic mode for shared CPU runners.

torch.utils.benchmark's ``Timer.collect_callgrind`` starts one valgrind process per statement, each paying the
~20-60 s it takes to import torch under valgrind; the gate instead drives callgrind itself, one process per side
for all points, with instrumentation off until torch is imported (workers/callgrind.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fastformer_bench.gate.sides import InstructionError, copy_worker, side_env

_TOTAL = re.compile(r"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


def valgrind_missing() -> str | None:
    """Why instruction counts cannot be collected here, or None."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install valgrind)"
    return None


def _count(path: Path) -> int:
    found = _TOTAL.search(path.read_text(errors="replace"))
    if not found:
        raise InstructionError(f"no instruction total in {path}")
    return int(found.group(1))


def start(tree: Path, problems: list[dict], workdir: Path, calls: int = 50, repeats: int = 3) -> subprocess.Popen:
    """Start one side's valgrind process (sides run in parallel: counts do not depend on contention)."""
    script = copy_worker("callgrind.py", workdir)
    job = workdir / "job.json"
    job.write_text(json.dumps({"problems": problems, "calls": calls, "repeats": repeats}))
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
               f"--callgrind-out-file={workdir / 'callgrind.out'}", sys.executable, str(script), str(job)]
    return subprocess.Popen(command, cwd=workdir, env=side_env(tree), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, workdir: Path, calls: int, timeout: float = 900) -> list[dict]:
    """Wait for a side and return one record per point: status, instructions per call, the repeats' spread."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise InstructionError(f"callgrind run in {workdir} exceeded {timeout:g} s") from None
    if proc.returncode != 0:
        tail = [line for line in err.splitlines() if not line.startswith("==")][-1:] or ["no output"]
        raise InstructionError(f"callgrind run failed (exit {proc.returncode}): {tail[0][:300]}")
    records = []
    for line in filter(lambda s: s.startswith("{"), out.splitlines()):
        result = json.loads(line)
        record = {**result.pop("params"), **result}
        if record["status"] == "ok":
            per_call = [_count(workdir / f"callgrind.out.{n}") / calls for n in record.pop("dumps")]
            record["instructions"] = sorted(per_call)[len(per_call) // 2]
            record["instruction_repeats"] = per_call
        records.append(record)
    return records


def count_instructions(trees: dict[str, Path], problems: dict[str, list[dict]], calls: int = 50, repeats: int = 3,
                       timeout: float = 900) -> dict[str, list[dict]]:
    """Instruction counts of each side's problems, the sides' valgrind processes running side by side."""
    with tempfile.TemporaryDirectory(prefix="ffb-callgrind-") as tmp:
        procs = {name: start(tree, problems[name], Path(tmp) / name, calls, repeats) for name, tree in trees.items()}
        return {name: finish(proc, Path(tmp) / name, calls, timeout) for name, proc in procs.items()}
