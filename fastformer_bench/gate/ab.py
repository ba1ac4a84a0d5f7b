"""A/B: the baseline revision in a temporary git worktree, measured in the same job as the candidate.

Each side runs workers/wall.py against its own tree, both alive at once but only one measuring at a time: the
gate asks them for samples in turn (B C C B B C ...), so a neighbour's load on a shared runner, which comes and
goes over seconds, lands on both sides alike instead of on whichever side ran in that window. Both are pinned to
the same CPUs and run with the same fixed malloc thresholds (sides.MALLOC_ENV), which removed most of the
per-process bias measured on a shared 2-core runner. Rounds restart both processes, so what remains of
process-level luck (memory layout) is sampled as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastformer_bench.gate.sides import GateError, check_imports_from, copy_worker, side_env_wall


class Worker:
    """One side's running workers/wall.py (its stderr goes to a file, so a full pipe never blocks it)."""

    def __init__(self, name: str, tree: Path, workdir: Path, cpus: set[int] | None = None) -> None:
        script = copy_worker("wall.py", workdir)
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
        self.proc.stdout.close()


def _measure_point(workers: dict[str, Worker], params: dict[str, dict], settings: dict, samples: int,
                   sample_s: float) -> dict[str, dict]:
    setup = {name: workers[name].ask({"op": "setup", **_side_threads(params[name], settings),
                                      "warmup_s": settings.get("warmup_s", 0.1)}) for name in workers}
    # "pair" keeps the samples of one pairing together: a baseline point measured beside two candidates is two
    # comparisons, each against the samples taken interleaved with it, never pooled across time windows.
    records = {name: {**params[name], **setup[name], "samples": [], "pair": params.get("pair")} for name in workers}
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
    They are claimed for the gate's lifetime (host.claim_cpus), so no other fastformer-bench process times there."""
    from fastformer_bench.measure.host import claim_cpus

    if not threads:
        return None
    found = claim_cpus(int(threads), pin=False, say=lambda line: print(line, file=sys.stderr, flush=True))
    return set(found) if found else None


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
    threads = settings.get("threads")
    if threads:  # as many CPUs as the most threaded point uses (the threads axis), so it is not timed on fewer
        threads = max([threads, *(point[name].get("threads") or 0 for point in points for name in trees)])
    cpus = shared_cpus(threads)
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
