"""CPU additive attention against the machine's copy bandwidth, in one process (issue 13's targets).

    python suites/perf/bench_cpu_bandwidth.py --threads 1
    python suites/perf/bench_cpu_bandwidth.py --threads 2 --impls stream,eager,compiled

Measures, side by side: the same-process copy bandwidth (``dst.copy_(src)`` of one column, read + write counted,
as fastformer_bench.measure.env.copy_bandwidth does), then for each implementation the forward (no autograd
graph) and forward + backward medians (fastformer_bench.measure.timing.time_step), after checking it against
float64 eager (forward at the full size, gradients of x and w at batch 1 and N / 16). Prints the forward's
minimal traffic (C + 1)·B·N·D·e bytes over its time as GB/s and as a share of the copy bandwidth, and the
fwd_bwd / fwd ratio. Targets (issue 13): forward >= 70 % of copy bandwidth, fwd_bwd <= 3 x fwd.

A benchmark, not a test: pytest does not collect it. The share of time other tasks made this one wait for a CPU
(Linux PSI "some", over the whole run) is printed: above a few per cent the machine was not this script's own.
Exit status 1 when an implementation gives a wrong answer.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

import fastformer_bench as fb
from fastformer_bench.measure import contention
from fastformer_bench.measure.env import copy_bandwidth
from fastformer_bench.measure.process import prepare_process
from fastformer_bench.measure.timing import time_first_call, time_step

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 4e-2, torch.float16: 5e-3, torch.float64: 1e-9}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's own)")
    p.add_argument("--impls", default="stream,eager,compiled", help="comma-separated implementations")
    p.add_argument("--columns", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=16384)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--masked", action="store_true", help="a ragged mask (rows keep N/2..N tokens)")
    p.add_argument("--min-samples", type=int, default=7, help="timed samples per step (medians over them)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of samples per step, at least")
    p.add_argument("--skip-check", action="store_true", help="time without the correctness check first")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.width % args.heads:
        p.error(f"--width {args.width} is not divisible by --heads {args.heads}")
    if args.columns < 2 or min(args.batch, args.seq_len, args.threads or 1, args.min_samples) < 1:
        p.error("--columns must be >= 2 and --batch, --seq-len, --threads, --min-samples >= 1")
    return args


def make_inputs(C: int, B: int, N: int, D: int, H: int, dtype: torch.dtype, masked: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(C, B, N, D, generator=gen, dtype=dtype)
    w = (torch.randn(C - 1, H, D // H, generator=gen) / math.sqrt(D // H)).to(dtype)
    mask = None
    if masked:
        lengths = torch.randint(max(1, N // 2), N + 1, (B,), generator=gen)
        lengths[0] = N
        mask = torch.arange(N)[None, :] < lengths[:, None]
    grad_out = torch.randn(B, N, D, generator=gen, dtype=dtype)
    return x, w, mask, grad_out


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = float(want.abs().max())
    return float((got.double() - want).abs().max()) / (scale if scale > 0 else 1.0)


def check(impl: str, x, w, mask, dtype: torch.dtype) -> float:
    """Max relative error of ``impl`` against float64 eager: forward at the full size, gradients on a slice."""
    with torch.no_grad():
        got = fb.additive_attention(x, w, mask, impl=impl)
        want = fb.additive_attention(x.double(), w.double(), mask, impl="eager")
        err = rel_err(got, want)
        del got, want
    N = x.shape[2]
    n = max(1, N // 16)
    xs, ms = x[:, :1, :n].contiguous(), (mask[:1, :n].clone() if mask is not None else None)
    if ms is not None:
        ms[:, 0] = True
    go = torch.randn(1, n, x.shape[3], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = []
    for name, dt in ((impl, dtype), ("eager", torch.float64)):
        xl = xs.to(dt).requires_grad_(True)
        wl = w.to(dt).requires_grad_(True)
        out = fb.additive_attention(xl, wl, ms, impl=name)
        grads.append(torch.autograd.grad(out, (xl, wl), go.to(dt)))
    return max(err, rel_err(grads[0][0], grads[1][0]), rel_err(grads[0][1], grads[1][1]))


def cpu_wait_total() -> float | None:
    """Cumulative microseconds some task waited for a CPU (PSI), or None without PSI."""
    return contention.psi_cpu_some().get("total")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # As every measuring process of the harness: thread count, and freed heap memory kept in the process (so
    # a call's output is not page-faulted in afresh each time).
    applied = prepare_process(args.threads)
    dtype = getattr(torch, args.dtype)
    C, B, N, D, H = args.columns, args.batch, args.seq_len, args.width, args.heads
    esize = torch.empty((), dtype=dtype).element_size()
    column_bytes = B * N * D * esize
    fwd_bytes = (C + 1) * column_bytes  # read every column once, write the output once
    fwd_bwd_bytes = fwd_bytes + (2 * C + 1) * column_bytes  # + read x and grad_out, write dx
    impls = [name.strip() for name in args.impls.split(",") if name.strip()]
    unknown = [name for name in impls if name not in fb.registry.names()]
    if unknown:
        print(f"unknown implementation(s): {', '.join(unknown)}; known: {', '.join(fb.registry.names())}",
              file=sys.stderr)
        return 2

    started, wait0, delay0 = time.monotonic(), cpu_wait_total(), contention.run_delay_ns()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, C={C} B={B} N={N} D={D} H={H} "
          f"{args.dtype}{' masked' if args.masked else ''}; B*N*D = 2^{math.log2(B * N * D):.2f}; "
          f"allocator {applied['allocator'] or 'default'}")
    print(f"CPU pressure at start: {contention.psi_cpu_some() or 'n/a'}")
    x, w, mask, grad_out = make_inputs(C, B, N, D, H, dtype, args.masked)
    copy_before = copy_bandwidth("cpu", column_bytes)
    print(f"copy bandwidth ({column_bytes / 1e6:.0f} MB, read + write): {copy_before / 1e9:.2f} GB/s")
    print(f"minimal traffic: forward {fwd_bytes / 1e6:.0f} MB, forward + backward {fwd_bwd_bytes / 1e6:.0f} MB")

    rows, failed = [], False
    for name in impls:
        impl = fb.registry.get(name)
        reason = impl.unsupported_reason("cpu", dtype)
        if reason is not None:
            print(f"{name}: unsupported: {reason}")
            rows.append({"impl": name, "status": "unsupported", "reason": reason})
            continue
        row = {"impl": name, "status": "ok"}
        xg = x.detach().clone().requires_grad_(True)
        wg = w.detach().clone().requires_grad_(True)

        def fwd(impl_name=name):
            with torch.no_grad():
                return fb.additive_attention(x, w, mask, impl=impl_name)

        def fwd_bwd(impl_name=name, xg=xg, wg=wg):
            xg.grad = wg.grad = None
            out = fb.additive_attention(xg, wg, mask, impl=impl_name)
            out.backward(grad_out)
            return out

        if impl.compiles:
            row["compile_fwd_s"] = time_first_call(fwd, "cpu")
            row["compile_fwd_bwd_s"] = time_first_call(fwd_bwd, "cpu")
        if not args.skip_check:
            err = check(name, x, w, mask, dtype)
            row["max_rel_err"] = err
            if not err <= TOLERANCE[dtype]:
                print(f"{name}: INCORRECT: max relative error {err:.3g} > {TOLERANCE[dtype]:g}; not timed")
                rows.append({**row, "status": "incorrect"})
                failed = True
                continue
        for mode, step, nbytes in (("fwd", fwd, fwd_bytes), ("fwd_bwd", fwd_bwd, fwd_bwd_bytes)):
            t = time_step(step, "cpu", min_samples=args.min_samples, min_time_s=args.min_time)
            row[f"{mode}_s"], row[f"{mode}_spread"] = t.median, t.spread
            row[f"{mode}_GBps"] = nbytes / t.median / 1e9
            row[f"{mode}_copy_share"] = nbytes / t.median / copy_before
        row["fwd_bwd_over_fwd"] = row["fwd_bwd_s"] / row["fwd_s"]
        rows.append(row)
        del xg, wg

    copy_after = copy_bandwidth("cpu", column_bytes)
    elapsed = time.monotonic() - started
    wait1 = cpu_wait_total()
    waited = (wait1 - wait0) / 1e6 / elapsed if wait0 is not None and wait1 is not None else None
    delay1 = contention.run_delay_ns()
    delayed = (delay1 - delay0) / 1e9 / elapsed if delay0 is not None and delay1 is not None else None

    print()
    print(f"{'impl':<10} {'fwd ms':>9} {'fwd GB/s':>9} {'% copy':>7} {'fwd_bwd ms':>11} {'fb GB/s':>8} "
          f"{'% copy':>7} {'fb/fwd':>7} {'spread':>7} {'err':>9} {'compile s':>10}")
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['impl']:<10} {row['status']}: {row.get('reason', '')}")
            continue
        compile_s = row.get("compile_fwd_s")
        print(f"{row['impl']:<10} {row['fwd_s'] * 1e3:9.1f} {row['fwd_GBps']:9.2f} {row['fwd_copy_share'] * 100:6.0f}%"
              f" {row['fwd_bwd_s'] * 1e3:11.1f} {row['fwd_bwd_GBps']:8.2f} {row['fwd_bwd_copy_share'] * 100:6.0f}%"
              f" {row['fwd_bwd_over_fwd']:7.2f} {max(row['fwd_spread'], row['fwd_bwd_spread']) * 100:6.1f}%"
              f" {row.get('max_rel_err', math.nan):9.2g} {'' if compile_s is None else f'{compile_s:10.1f}'}")
    print(f"\ncopy bandwidth {copy_before / 1e9:.2f} GB/s at start, {copy_after / 1e9:.2f} GB/s at end "
          f"(drift {100 * (copy_after / copy_before - 1):+.0f}%); "
          f"over the run, some task waited for a CPU {'n/a' if waited is None else f'{100 * waited:.0f}%'} of the "
          f"time (PSI), this process's threads {'n/a' if delayed is None else f'{100 * delayed:.0f}%'} (schedstat, "
          f"summed over threads); load average {contention.cpu_contention().get('load_avg_1m')}")
    ok_rows = [r for r in rows if r["status"] == "ok"]
    if ok_rows:
        best = max(ok_rows, key=lambda r: r["fwd_GBps"])
        print(f"best forward: {best['impl']} at {best['fwd_copy_share'] * 100:.0f}% of copy bandwidth "
              f"(target >= 70%), its fwd_bwd / fwd = {best['fwd_bwd_over_fwd']:.2f} (target <= 3)")
    if args.json:
        payload = {"threads": torch.get_num_threads(), "columns": C, "batch": B, "seq_len": N, "width": D,
                   "heads": H, "dtype": args.dtype, "masked": args.masked, "copy_Bps_start": copy_before,
                   "copy_Bps_end": copy_after, "cpu_wait_share": waited, "own_run_delay_share": delayed, "rows": rows,
                   "copy_Bps_median": statistics.median([copy_before, copy_after])}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
