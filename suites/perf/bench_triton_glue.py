"""The Triton launcher's own host work per call, with every kernel launch stubbed out (runs on a CPU).

    python suites/perf/bench_triton_glue.py                      # this tree's launcher
    python suites/perf/bench_triton_glue.py --baseline fb34cc1   # and a commit's, in alternating rounds

A small problem on the GPU takes as long as the host needs to issue it, so this measures what the launcher does
around its C (forward) or C + 1 (backward) launches: input checks, the plan, allocations, argument lists, the
autograd wrapper. The kernels module's JIT functions are replaced by stubs that launch nothing. On CPU tensors
the launcher would take its interpreter path, so ``--direct`` (default on) makes it take its CUDA path: the
direct launch of cached compiled kernels (here a stub compiled kernel), and no check of a mask's rows; the
CUDA stream lookup and device check are the only CUDA work left out. ``--baseline REV`` loads
additive_triton.py from a git revision as a second module over the same stubs.

The ``floor`` row is an autograd.Function that only allocates the outputs: what torch's autograd and
allocator cost any launcher here. Modes: ``fwd`` (no autograd graph, as the harness's forward points),
``fwd_grad`` (x and w require grad) and ``bwd`` (torch.autograd.grad of a forward's output, timed alone).
Prints microseconds per call, the median of the rounds and their spread (min..max). A benchmark, not a test:
pytest does not collect it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels module is imported: no GPU needed

import torch  # noqa: E402

from fastformer_bench.impls import additive_triton, additive_triton_kernels  # noqa: E402
from fastformer_bench.measure.process import prepare_process  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = "fastformer_bench/impls/additive_triton.py"


class _StubCompiled:
    """Stands in for a CompiledKernel: its launcher does nothing."""

    function = packed_metadata = None

    @staticmethod
    def run(*args) -> None:
        return None


class _StubKernel:
    """Stands in for a JIT function: ``kernel[grid](*args)`` launches nothing and returns a stub compiled kernel."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: _StubCompiled


def stub_kernels() -> None:
    for name in dir(additive_triton_kernels):
        if name.endswith("_kernel"):
            setattr(additive_triton_kernels, name, _StubKernel())


class _Floor(torch.autograd.Function):
    """What any autograd-wrapped kernel call costs here: allocate the outputs, nothing else."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.columns, ctx.w_shape = x.shape[0], w.shape
        return x.new_empty(x.shape[1:])

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        return dout.new_empty((ctx.columns, *dout.shape)), dout.new_empty(ctx.w_shape)


def floor(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return _Floor.apply(x, w)
    return x.new_empty(x.shape[1:])


def load_baseline(rev: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{LAUNCHER}"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    spec = importlib.util.spec_from_loader(f"additive_triton_at_{rev}", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{rev}:{LAUNCHER}", "exec"), module.__dict__)
    return module


def make_step(fn, mode: str, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, grad_out: torch.Tensor):
    """A function of a call count that makes that many calls and returns the seconds the timed part took."""
    xg, wg = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)

    def fwd(calls: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(calls):
                fn(x, w, mask)
        return time.perf_counter() - start

    def fwd_grad(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn(xg, wg, mask)
        return time.perf_counter() - start

    def bwd(calls: int) -> float:
        spent = 0.0
        for _ in range(calls):
            out = fn(xg, wg, mask)
            start = time.perf_counter()
            torch.autograd.grad(out, (xg, wg), grad_out)
            spent += time.perf_counter() - start
        return spent

    return {"fwd": fwd, "fwd_grad": fwd_grad, "bwd": bwd}[mode]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=None, help="also time additive_triton.py as of this git revision")
    p.add_argument("--columns", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--masked", action="store_true", help="pass a mask (its row check runs on CPU masks only)")
    p.add_argument("--no-direct", dest="direct", action="store_false",
                   help="leave the launcher on its interpreter path (no direct launches)")
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="leave out the floor: an autograd.Function that only allocates its outputs")
    p.add_argument("--modes", default="fwd,fwd_grad,bwd")
    p.add_argument("--calls", type=int, default=2000, help="calls per round")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)

    prepare_process(1)  # one thread, and freed heap memory kept in the process: no mmap per output
    stub_kernels()
    if args.direct:
        additive_triton._direct_ok = lambda plan: True
        additive_triton._current_stream = lambda index: 0
    launchers = {"this tree": additive_triton.triton_additive_attention}
    if args.direct:  # as on CUDA, where a mask's rows are not checked (that would wait for the device)
        launchers["this tree"] = functools.partial(additive_triton.triton_additive_attention, check_mask_rows=False)
    if args.floor:
        launchers["floor"] = floor
    if args.baseline:
        baseline = load_baseline(args.baseline).triton_additive_attention
        if args.direct:  # the same CUDA treatment of a mask (every revision with a direct path takes the argument)
            baseline = functools.partial(baseline, check_mask_rows=False)
        launchers = {args.baseline: baseline, **launchers}

    C, B, N, D, H = args.columns, args.batch, args.seq_len, args.width, args.heads
    dtype = getattr(torch, args.dtype)
    x = torch.randn(C, B, N, D).to(dtype)
    w = torch.randn(C - 1, H, D // H).to(dtype)
    mask = torch.ones(B, N, dtype=torch.bool) if args.masked else None
    grad_out = torch.randn(B, N, D).to(dtype)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    steps = {(name, mode): make_step(fn, mode, x, w, mask, grad_out) for name, fn in launchers.items()
             for mode in modes}
    for step in steps.values():
        step(max(1, args.calls // 10))  # plans, workspaces and cached launches exist from here on

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):  # alternate launchers and modes, so drift of a busy machine hits all alike
        for key, step in steps.items():
            samples[key].append(step(args.calls) / args.calls * 1e6)

    print(f"torch {torch.__version__}, C={C} B={B} N={N} D={D} H={H} {args.dtype}"
          f"{' masked' if args.masked else ''}, {'direct' if args.direct else 'interpreter'} launch path, "
          f"{args.rounds} rounds x {args.calls} calls, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'launcher':<12} {'mode':<9} {'us/call':>8}  spread")
    for (name, mode), runs in samples.items():
        print(f"{name:<12} {mode:<9} {statistics.median(runs):8.1f}  {min(runs):.1f}..{max(runs):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
