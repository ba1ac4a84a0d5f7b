"""A/B: the baseline revision in a temporary git worktree, measured in the same job as the candidate.

Each side runs workers/wall.py against its own tree, both alive at once but only one measuring at a time: the
gate asks them for samples in turn (B C C B B C ...), so a neighbour's load on a shared runner, which comes and
goes over seconds, lands on both sides alike instead of on whichever side ran in that window. Both are pinned to
the same CPUs and run with the same fixed malloc thresholds (sides.MALLOC_ENV), which removed most of the
per-process bias measured on a shared 2-core runner. Rounds restart both processes, with one random memory layout
shared by both sides of a round (random_layout): the layout's luck cancels within a round and is sampled over
rounds.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from fastformer_bench.gate.sides import GateError, check_imports_from, copy_worker, side_env_wall

#: "heap bytes,mapped pages,filler": where a worker's heap, its libraries and its stack start (workers/wall.py)
LAYOUT_ENV = "FASTFORMER_BENCH_GATE_LAYOUT"
_ADDR_NO_RANDOMIZE = 0x0040000  # personality(2): this process's exec keeps the same addresses every time


def random_layout(rng: random.Random) -> str:
    """One round's memory layout, given to both sides: up to 4 MiB of heap in 64-byte steps, 16 MiB of mapped
    address space in pages, 4 KiB of stack in bytes.

    Where a process's code and data land moves a dispatch-heavy point's time: measured on the 2-core VM, eager
    (1.4 ms a call) in two processes of the same tree, one started per side, differed by up to 10 % for the
    processes' whole life, and by 0.1-0.9 % with the kernel's address randomization off. So both sides run with it
    off and with the same layout, drawn anew each round: the layout's effect cancels within a round instead of
    being a second noise, and is sampled over rounds instead of being one fixed layout's luck."""
    return f"{64 * rng.randrange(1 << 16)},{rng.randrange(1 << 12)}," + "x" * rng.randrange(4096)


def _start_child(cpus: set[int] | None) -> None:
    # Between fork and exec. A kernel that refuses the personality (some container profiles) leaves the
    # addresses randomized: independent layouts per side, more noise, no bias; the worker says which it got.
    if cpus:
        os.sched_setaffinity(0, cpus)
    ctypes.CDLL(None).personality(_ADDR_NO_RANDOMIZE)


class Worker:
    """One side's running workers/wall.py (its stderr goes to a file, so a full pipe never blocks it)."""

    def __init__(self, name: str, tree: Path, workdir: Path, cpus: set[int] | None = None,
                 layout: str | None = None) -> None:
        script = copy_worker("wall.py", workdir)
        self.name, self.log = name, workdir / "stderr.txt"
        env = side_env_wall(tree)
        if layout:
            env[LAYOUT_ENV] = layout
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(script)], cwd=workdir, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         preexec_fn=lambda: _start_child(cpus))

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
        self.proc.stdout.close()


#: rounds a gate measures first and does not count: a gate's first rounds read low even on identical code, which
#: biased a slowdown's ratio down and widened its interval (measured: docs/gate.md §2)
WARMUP_ROUNDS = 2

#: the length of one sample (back-to-back calls of one side): short, so that a burst of a neighbour's load spoils
#: few samples of the median (measured: docs/gate.md §2)
SAMPLE_S = 0.005


def sampling(per_call_s: float, settings: dict) -> tuple[int, int]:
    """(calls per sample, samples) of one point in one round: samples of about SAMPLE_S (at least one call), as
    many as fill the preset's min_time_s, at least its min_samples and at most its max_samples."""
    calls = max(1, round(SAMPLE_S / max(per_call_s, 1e-9)))
    wanted = round(float(settings.get("min_time_s", 0.3)) / (calls * max(per_call_s, 1e-9)))
    low = int(settings.get("min_samples", 10))
    return calls, max(low, min(int(settings.get("max_samples", low)), wanted))


def _measure_point(workers: dict[str, Worker], params: dict[str, dict], settings: dict,
                   check: bool = True) -> dict[str, dict]:
    setup = {name: workers[name].ask({"op": "setup", **_side_threads(params[name], settings), "check": check,
                                      "warmup_s": settings.get("warmup_s", 0.1)}) for name in workers}
    # "pair" keeps the samples of one pairing together: a baseline point measured beside two candidates is two
    # comparisons, each against the samples taken interleaved with it, never pooled across time windows.
    # "started_first": the side whose process the round started first (the order alternates by round; the
    # statistics take it as a term of their own, stats.measure_rounds)
    first_started = next(iter(workers))
    records = {name: {**params[name], **setup[name], "samples": [], "pair": params.get("pair"),
                      "started_first": name == first_started} for name in workers}
    if any(reply["status"] != "ok" for reply in setup.values()):
        return records
    first = next(iter(workers))
    # The same calls and samples on both sides (the first side's estimate): equal windows of time.
    calls, samples = sampling(setup[first]["per_call_s"], settings)
    names = list(workers)
    for number in range(samples):
        for name in names if number % 2 == 0 else names[::-1]:
            reply = workers[name].ask({"op": "sample", "calls": calls})
            if "error" in reply:
                records[name].update(status="error", reason=reply["error"])
                return records
            records[name]["samples"].append(reply["s"])
            records[name]["clock"] = reply.get("clock", "wall")  # an older worker script times wall only
    return records


def _side_threads(params: dict, settings: dict) -> dict:
    """The setup's point and thread count: a point of the threads axis sets its worker's count through the
    setup (as the preset's setting does), and its parameters go without the axis, so a baseline revision older
    than the axis builds the same Problem. Its records keep the axis (a pairing key)."""
    return {"params": {k: v for k, v in params.items() if k != "threads"},
            "threads": params.get("threads") or settings.get("threads")}


def shared_cpus(threads: int | None) -> set[int] | None:
    """The CPUs both sides are pinned to: the same ones, so a busy neighbour on one core slows both sides alike
    (left to the scheduler, each side tends to stay on its own core, and the neighbour biases one side only).
    They are claimed for the gate's lifetime (claim_cpus), so no other fastformer-bench process times there."""
    from fastformer_bench.measure.cpu_claims import claim_cpus

    if not threads:
        return None
    found = claim_cpus(int(threads), pin=False, say=lambda line: print(line, file=sys.stderr, flush=True))
    return set(found) if found else None


def claim_for(trees: dict[str, Path], points: list[dict[str, dict]], settings: dict) -> set[int] | None:
    """The CPUs the gate's sides share (shared_cpus), as many as the most threaded point uses (the threads axis),
    so it is not timed on fewer; claimed once per gate, so follow-up rounds time on the same CPUs."""
    threads = settings.get("threads")
    if threads:
        threads = max([threads, *(point[name].get("threads") or 0 for point in points for name in trees)])
    return shared_cpus(threads)


def interleaved(trees: dict[str, Path], points: list[dict[str, dict]], settings: dict, rounds: int,
                workdir: Path, *, cpus: set[int] | None = None, check: bool = True, label: str = "round",
                warmup: int = 0) -> dict[str, list[list[dict]]]:
    """Every point measured by both sides sample by sample (B C C B ...), in ``rounds`` fresh pairs of processes.

    ``points`` holds, per point, each side's Problem parameters; ``settings`` is the preset's [settings]
    (threads, warmup_s, and min_time_s, min_samples, max_samples: the samples per point and round, see sampling).
    ``cpus``: the CPUs both sides are pinned to (default: claimed here, claim_for); ``check=False`` for points
    already checked against the reference in this gate (follow-up rounds); ``label`` names the rounds in the
    progress lines. ``warmup`` more rounds run first, measured like the others (the first one checks), and are
    not returned: see WARMUP_ROUNDS.
    """
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}.")
    if warmup < 0:
        raise ValueError(f"--warmup-rounds must be at least 0, got {warmup}.")
    for tree in trees.values():
        check_imports_from(tree)
    if cpus is None:
        cpus = claim_for(trees, points, settings)
    workdir.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[list[dict]]] = {name: [] for name in trees}
    rng = random.Random()
    # Correctness before speed, once: each point is checked against the reference in the first round (the same
    # code on the same seeded inputs gives the same answer in every round; at the gate preset's N = 4096 the
    # float64 quadratic reference took seconds per side and point, most of a round).
    refused: dict[int, dict[str, dict]] = {}
    # The sides start from paths of the same length (a link per tree, a folder per side and round), so their
    # environments and module search paths are the same size byte for byte: under the same layout, what Python and
    # torch lay out before the side's own code is imported lands at the same addresses on both sides.
    links, folders = {}, {}
    for index, name in enumerate(trees):
        links[name] = workdir / f"tree{index}"
        links[name].symlink_to(Path(trees[name]).resolve(), target_is_directory=True)
        folders[name] = f"side{index}-round"
    for number in range(warmup + rounds):
        names = list(trees) if number % 2 == 0 else list(trees)[::-1]
        layout = random_layout(rng)
        workers = {name: Worker(name, links[name], workdir / f"{folders[name]}{number:04d}", cpus, layout)
                   for name in names}
        try:
            measured = []
            for index, point in enumerate(points):
                if index in refused:  # not ok on a side in round 1: reported as it was, never timed
                    measured.append(refused[index])
                    continue
                records = _measure_point(workers, point, settings, check=check and number == 0)
                if number == 0 and any(r["status"] != "ok" for r in records.values()):
                    refused[index] = records
                measured.append(records)
        finally:
            for worker in workers.values():
                worker.close()
        if number >= warmup:
            for name in trees:
                found[name].append([m[name] for m in measured])
        if number == 0 and any(m[name].get("layout") == "random" for m in measured for name in trees):
            print("gate: the kernel kept address randomization on (personality refused): each side's memory "
                  "layout is its own luck, so rounds vary more and a small slowdown needs more of them",
                  file=sys.stderr, flush=True)
        done = (f"warm-up round {number + 1}/{warmup}" if number < warmup else
                f"{label} {number - warmup + 1}/{rounds}")
        print(f"gate: {done} done", file=sys.stderr, flush=True)
    return found
