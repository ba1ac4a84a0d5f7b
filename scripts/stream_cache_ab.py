"""The stream kernels' buffer cache, on and off, in plain processes (issue 32; docs/measuring.md §6).

Each round starts two fresh Python processes per mode (fwd, fwd_bwd) with no allocator setting in their
environment, one with the cache and one with FASTFORMER_BENCH_STREAM_CACHE_MIB=0, pinned to one CPU, one
thread: inputs from torch.randn, ``fastformer_bench.additive_attention(x, w, None, impl="stream")`` (and
backward for fwd_bwd, gradients reset each call as the harness does) twice untimed, then ``--calls`` timed with
time.perf_counter; prints the median, the fastest call and the minor page faults per call.

    python scripts/stream_cache_ab.py --rounds 3 --seq-len 65536 --width 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from plain_check import plain_environment  # noqa: E402 (scripts/ is not a package)

_CHILD = """
import json, os, resource, statistics, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
import torch
import fastformer_bench as fb
torch.set_num_threads(1)
mode, C, B, N, D, H, calls = sys.argv[2], *map(int, sys.argv[3:9])
grad = mode == "fwd_bwd"
x = torch.randn(C, B, N, D, requires_grad=grad)
w = torch.randn(C - 1, H, D // H, requires_grad=grad)
grad_out = torch.randn(B, N, D)

def step():
    if not grad:
        with torch.no_grad():
            return fb.additive_attention(x, w, None, impl="stream")
    x.grad = w.grad = None
    out = fb.additive_attention(x, w, None, impl="stream")
    out.backward(grad_out)
    return out

for _ in range(2):
    step()
times, faults = [], []
for _ in range(calls):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
                  "faults": statistics.median(faults)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--cpu", type=int, default=1, help="the CPU to pin to (default 1)")
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=65536)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args()
    sizes = [args.columns, args.batch, args.seq_len, args.width, args.heads, args.calls]
    for round_ in range(1, args.rounds + 1):
        for mode in ("fwd", "fwd_bwd"):
            for cache, extra in (("on", {}), ("off", {"FASTFORMER_BENCH_STREAM_CACHE_MIB": "0"})):
                proc = subprocess.run([sys.executable, "-c", _CHILD, str(args.cpu), mode, *map(str, sizes)],
                                      env={**plain_environment(), **extra}, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "the child failed",
                          file=sys.stderr)
                    return 1
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"round {round_} {mode:7} cache {cache:3}: median {got['median_ms']:7.1f} ms, "
                      f"fastest {got['min_ms']:7.1f} ms, {got['faults']:g} faults per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
