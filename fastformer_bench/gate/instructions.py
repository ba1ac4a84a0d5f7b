"""Instruction counts per call under valgrind's callgrind: the gate's deterministic mode for shared CPU runners.

torch.utils.benchmark's ``Timer.collect_callgrind`` starts one valgrind process per statement, each paying the
~20-60 s it takes to import torch under valgrind; the gate instead drives callgrind itself, one process per side
and layout for all points, with instrumentation off until torch is imported (workers/callgrind.py).

A count is repeatable for one process image, not for one piece of code: where the stack and the heap start
moves what glibc's malloc searches and which of CPython's address-keyed caches collide. Measured here (eager,
N=64, 50 calls): the same code read 0.2-0.7 % apart across environments of different sizes, more than a 1 %
threshold can ignore. So the sides are given environments of equal size (the strings at the top of the stack),
and each side is counted under several layouts (environments padded by different amounts), its count the mean
over layouts: the layout effect averages out instead of being charged to the candidate, and the per-layout
ratios show how large it was.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fastformer_bench.gate.sides import InstructionError, copy_worker, side_env

_TOTAL = re.compile(r"^(?:totals|summary):\s*(\d+)", re.MULTILINE)
#: the variable whose length sets a process's layout
PAD_VARIABLE = "FASTFORMER_BENCH_LAYOUT_PAD"
#: bytes between layouts: odd, so consecutive layouts start the stack at different 16- and 64-byte offsets; the
#: padding is copied onto the heap too (os.environ), which shifts what is allocated after it
LAYOUT_STEP = 1061
DEFAULT_LAYOUTS = 3


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


def _block_bytes(env: dict[str, str], argv: list[str]) -> int:
    """Bytes the kernel copies to the top of a new process's stack for ``env`` and ``argv``."""
    return sum(len(os.fsencode(f"{k}={v}")) + 1 for k, v in env.items()) + sum(len(os.fsencode(a)) + 1 for a in argv)


def _command(workdir: Path) -> tuple[list[str], list[str]]:
    """valgrind's command line and, within it, the client's argv (what lands on the client's stack)."""
    client = [sys.executable, str(workdir / "callgrind.py"), str(workdir / "job.json")]
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
            f"--callgrind-out-file={workdir / 'callgrind.out'}", *client], client


def _portable_compiler(root: Path) -> str | None:
    """A C++ compiler command that drops -march=native, for the stream kernels built under callgrind.

    valgrind decodes no AVX-512: on a CPU that has it, a -march=native build killed the counted process with
    SIGILL ("vex amd64->IR: unhandled instruction"). Every revision of the stream build takes $CXX and keys its
    cache on the compiler's path, so both sides, whatever their age, build a baseline-ISA library here."""
    from fastformer_bench.impls.additive_stream import compiler

    real = compiler()  # the one the stream build would take
    if real is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    wrapper = root / "cxx-without-march-native"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do shift; [ "$a" = "-march=native" ] || set -- "$@" "$a"; done\n'
                       f'exec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def plan(trees: dict[str, Path], root: Path, layouts: int) -> dict[str, list[tuple[Path, dict[str, str]]]]:
    """Each side's (workdir, environment) per layout: equal-sized environments for a layout, growing by layout.

    Workdir names have one length on every side (the worker's folder is also Python's sys.path[0]).
    """
    if layouts < 1:
        raise ValueError(f"layouts must be at least 1, got {layouts}.")
    planned: dict[str, list[tuple[Path, dict[str, str]]]] = {}
    compiler = _portable_compiler(root)
    for layout in range(layouts):
        sized = {}
        for index, (name, tree) in enumerate(trees.items()):
            workdir = root / f"side{index:02d}-layout{layout:02d}"
            env = {**side_env(tree), PAD_VARIABLE: ""}
            if compiler:
                env["CXX"] = compiler
            sized[name] = (workdir, env, _block_bytes(env, _command(workdir)[1]))
        largest = max(size for _, _, size in sized.values())
        for name, (workdir, env, size) in sized.items():
            env[PAD_VARIABLE] = "x" * (largest - size + layout * LAYOUT_STEP)
            planned.setdefault(name, []).append((workdir, env))
    return planned


#: calls per counted region unless told otherwise (the gate's --calls default)
DEFAULT_CALLS = 50


def start(problems: list[dict], workdir: Path, env: dict[str, str], calls: int = DEFAULT_CALLS,
          repeats: int = 3) -> subprocess.Popen:
    """Start one valgrind process (sides and layouts run in parallel: counts do not depend on contention)."""
    copy_worker("callgrind.py", workdir)
    (workdir / "job.json").write_text(json.dumps({"problems": problems, "calls": calls, "repeats": repeats}))
    return subprocess.Popen(_command(workdir)[0], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, workdir: Path, calls: int, timeout: float = 900) -> list[dict]:
    """Wait for one process and return one record per point: status, instructions per call, the repeats."""
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
            record["instructions"] = statistics.median(per_call)
            record["instruction_repeats"] = per_call
        records.append(record)
    return records


def merge_layouts(layouts: list[list[dict]]) -> list[dict]:
    """One record per point from a side's per-layout records: the mean count, each layout's count kept.

    A point that is not ``ok`` under some layout keeps that layout's record (the failure is the result).
    """
    merged: list[dict] = []
    for records in zip(*layouts, strict=True):
        failed = [r for r in records if r["status"] != "ok"]
        if failed:
            merged.append(failed[0])
            continue
        counts = [r["instructions"] for r in records]
        merged.append({**records[0], "instructions": statistics.fmean(counts), "instruction_layouts": counts,
                       "instruction_repeats": [r["instruction_repeats"] for r in records]})
    return merged


def count_instructions(trees: dict[str, Path], problems: dict[str, list[dict]], calls: int = DEFAULT_CALLS,
                       repeats: int = 3, layouts: int = DEFAULT_LAYOUTS,
                       timeout: float = 900) -> dict[str, list[dict]]:
    """Instruction counts of each side's problems under ``layouts`` layouts, every valgrind process at once."""
    with tempfile.TemporaryDirectory(prefix="ffb-callgrind-") as tmp:
        planned = plan(trees, Path(tmp), layouts)
        procs = {name: [(workdir, start(problems[name], workdir, env, calls, repeats)) for workdir, env in runs]
                 for name, runs in planned.items()}
        return {name: merge_layouts([finish(proc, workdir, calls, timeout) for workdir, proc in runs])
                for name, runs in procs.items()}
