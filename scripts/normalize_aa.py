"""A/A check of the gate's ``--normalize`` (issue 32 part 5): the same code timed at two machine states, quiet and
with a memory-bandwidth load on another core, and how far the bandwidth-normalised ratio stays from 1.

Each state: the copy bandwidth (measure/env.py copy_bandwidth, one thread, as run.json's roofs) before and after,
the implementation's median over ``--calls`` calls in between, on the measuring core. The loaded state starts a
child on ``--load-core`` that copies a buffer far past the cache in a loop (the neighbour a shared host has).
The raw ratio is loaded / quiet time; the normalised one is what gate/stored.normalized makes of it (the loaded
samples scaled by its copy bandwidth over the quiet one's). An A/A ratio should be 1: the distance from 1 against
the gate's margin (gate/stats.py DEFAULT_MARGIN) says whether ``--normalize`` holds.

    python scripts/normalize_aa.py --impl stream --seq-len 65536 --rounds 2

Prints one line per state and round, then the summary; takes about 10 s per state and round at the default size.
Measures only: nothing is written.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

#: the load: a child copying this many bytes back and forth, pinned to the other core
LOAD_BYTES = 256 * 2**20
_LOAD = ("import os, sys, torch; os.sched_setaffinity(0, {int(sys.argv[1])}); torch.set_num_threads(1); "
         f"a = torch.ones({LOAD_BYTES // 4}); b = torch.empty_like(a)\n"
         "while True: b.copy_(a); a.copy_(b)")


def _time_state(fn, calls: int) -> tuple[float, float, list[float]]:
    """(copy bandwidth before, after, the call times) at the current machine state."""
    from fastformer_bench.measure.env import copy_bandwidth

    before = copy_bandwidth("cpu", threads=1)
    fn()  # warm-up: page faults and first-call costs are not the state's
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return before, copy_bandwidth("cpu", threads=1), samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", default="stream")
    parser.add_argument("--seq-len", type=int, default=65536)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=2, help="quiet/loaded pairs, alternating")
    parser.add_argument("--core", type=int, default=1, help="the measuring core")
    parser.add_argument("--load-core", type=int, default=0, help="the core the bandwidth load runs on")
    args = parser.parse_args(argv)

    import torch

    import fastformer_bench as fb
    from fastformer_bench.gate.stats import DEFAULT_MARGIN
    from fastformer_bench.gate.stored import normalized
    from fastformer_bench.measure.allocator import configure_allocator

    configure_allocator()  # the harness's own heap (warm), as the gate's sides measure
    os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, args.seq_len, args.width, generator=gen)
    w = torch.randn(2, 8, args.width // 8, generator=gen) / (args.width // 8) ** 0.5
    reason = fb.registry.get(args.impl).unsupported_reason("cpu", torch.float32)
    if reason is not None:
        print(f"{args.impl} cannot run here: {reason}", file=sys.stderr)
        return 2

    def call():
        with torch.no_grad():
            fb.additive_attention(x, w, None, impl=args.impl)

    raw, norm = [], []
    for round_ in range(args.rounds):
        states = {}
        for state in ("quiet", "loaded"):
            load = None
            if state == "loaded":
                load = subprocess.Popen([sys.executable, "-c", _LOAD, str(args.load_core)])
                time.sleep(1.0)  # the load's buffer allocated and streaming
            try:
                bw0, bw1, samples = _time_state(call, args.calls)
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
            states[state] = ((bw0 + bw1) / 2, samples)
            print(f"round {round_ + 1} {state}: copy {bw0 / 1e9:.2f}/{bw1 / 1e9:.2f} GB/s, "
                  f"median {statistics.median(samples) * 1e3:.2f} ms", flush=True)
        (bw_a, a), (bw_b, b) = states["quiet"], states["loaded"]
        record = {"status": "ok", "complexity": "linear", "device": "cpu", "impl": args.impl,
                  "seq_len": args.seq_len, "width": args.width, "samples": b}
        (scaled,), _ = normalized([record], {"cpu": bw_b / bw_a})
        raw.append(statistics.median(b) / statistics.median(a))
        norm.append(statistics.median(scaled["samples"]) / statistics.median(a))
    worst = max(abs(r - 1) for r in norm)
    print(f"{args.impl} N={args.seq_len} D={args.width} fwd fp32 1 thread, {args.rounds} rounds: loaded/quiet "
          f"raw {', '.join(f'{r:.3f}' for r in raw)}; normalised {', '.join(f'{r:.3f}' for r in norm)}; "
          f"worst |normalised - 1| = {worst:.3f} against the gate's margin {DEFAULT_MARGIN:.3f}: "
          f"{'holds' if worst <= DEFAULT_MARGIN else 'does not hold'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
