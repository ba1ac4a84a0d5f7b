"""One-shot check of the fused Triton kernel on an NVIDIA GPU: correctness suite, then a bandwidth sweep.

    python -m fastformer_bench.gpu_check [--quick] [--out FILE.json] [--skip-tests]

(a) runs ``pytest suites/correctness -q`` in a subprocess with TRITON_INTERPRET unset, so the tests run the
compiled kernels on the GPU; (b) times ``triton``, ``compiled`` and ``eager`` for bf16/fp16/fp32, C = 3,
B·N·D from 2^22 to 2^27 (D = 1024 = 16 heads × 64, B = 8), forward and forward+backward, and prints achieved
bandwidth next to a device-to-device copy measured in the same run.

Minimal bytes (e = bytes per element, T = B·N·D):
    fwd      (C + 1)·T·e      reads the C columns, writes the output
    fwd_bwd  (3C + 2)·T·e     the forward, then backward reads grad_out (T) and x again (C·T), writes dx (C·T)
The copy moves C·T elements: its bandwidth counts the read and the write, 2·C·T·e bytes. Times are medians of
``triton.testing.do_bench`` (CUDA events, L2 flushed before each call).

Exit codes: 0 all good, 1 the tests failed or a triton point errored, 2 no CUDA device (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from fastformer_bench import impls
from fastformer_bench.sweep import TOLERANCE

COLUMNS = 3
WIDTH, HEADS, BATCH = 1024, 16, 8
IMPLS = ("triton", "compiled", "eager")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def bytes_min(mode: str, columns: int, elems: int, elem_size: int) -> int:
    units = columns + 1 if mode == "fwd" else 3 * columns + 2
    return units * elems * elem_size


def run_tests(repo: Path) -> dict:
    suite = repo / "suites" / "correctness"
    if not suite.is_dir():
        return {"rc": None, "summary": f"skipped: {suite} not found (run from a source checkout)"}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider"], cwd=repo,
                          env=env, capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {"rc": proc.returncode, "summary": lines[-1] if lines else "", "tail": lines[-40:]}


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _bench(fn, grad_to_none=None) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median"))


def _time_call(fn, mode: str, x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor) -> float:
    if mode == "fwd":
        def call():
            with torch.no_grad():
                return fn(x, w)
        grads = None
    else:
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()

        def call():
            fn(xg, wg).backward(grad_out)
        grads = [xg, wg]
    call()  # compile / JIT outside the timing
    if x.is_cuda:
        torch.cuda.synchronize()
    return _bench(call, grad_to_none=grads)


def _outputs(fn, mode: str, x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor) -> list[torch.Tensor]:
    if mode == "fwd":
        with torch.no_grad():
            return [fn(x, w)]
    xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
    out = fn(xg, wg)
    out.backward(grad_out)
    return [out.detach(), xg.grad, wg.grad]


def relative_error(fn, mode: str, x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor) -> float:
    """Largest |got - want| / max |want| over the output (and gradients) against eager in float64."""
    got = _outputs(fn, mode, x, w, grad_out)
    want = _outputs(impls.get("eager").fn, mode, x.double(), w.double(), grad_out.double())
    worst = 0.0
    for g, r in zip(got, want):
        worst = max(worst, ((g.double() - r).abs().max() / r.abs().max().clamp_min(1e-30)).item())
    del got, want
    return worst


def sweep(exponents: list[int], dtypes: list[str], device: str = "cuda") -> list[dict]:
    points = []
    for dname in dtypes:
        dtype = DTYPES[dname]
        for k in exponents:
            elems = 1 << k
            seq_len = elems // (BATCH * WIDTH)
            x = torch.randn(COLUMNS, BATCH, seq_len, WIDTH, device=device, dtype=dtype)
            w = torch.randn(COLUMNS - 1, HEADS, WIDTH // HEADS, device=device, dtype=dtype)
            grad_out = torch.randn(BATCH, seq_len, WIDTH, device=device, dtype=dtype)
            src = torch.empty_like(x).copy_(x)
            dst = torch.empty_like(x)
            copy_ms = _bench(lambda dst=dst, src=src: dst.copy_(src))
            copy_gbs = 2 * src.numel() * src.element_size() / copy_ms / 1e6
            del src, dst
            base = {"dtype": dname, "elems": elems, "batch": BATCH, "seq_len": seq_len, "width": WIDTH,
                    "heads": HEADS, "columns": COLUMNS, "copy_ms": copy_ms, "copy_gbs": copy_gbs}
            print(f"{dname} B·N·D=2^{k} (N={seq_len}): copy {copy_gbs:7.1f} GB/s", flush=True)
            for mode in ("fwd", "fwd_bwd"):
                nbytes = bytes_min(mode, COLUMNS, elems, x.element_size())
                row_ms = {}
                for name in IMPLS:
                    point = dict(base, impl=name, mode=mode, bytes_min=nbytes)
                    try:
                        # Correctness before speed: output and gradients against eager in float64 first.
                        err = relative_error(impls.get(name).fn, mode, x, w, grad_out)
                        point["max_rel_err"] = err
                        if not err <= TOLERANCE[DTYPE_NAMES[dname]]:
                            point.update(status="incorrect", reason=f"max relative error {err:.3g} against eager "
                                                                    f"float64 > {TOLERANCE[DTYPE_NAMES[dname]]:g}")
                            points.append(point)
                            continue
                        ms = _time_call(impls.get(name).fn, mode, x, w, grad_out)
                        gbs = nbytes / ms / 1e6
                        row_ms[name] = ms
                        point.update(status="ok", time_ms=ms, gbs=gbs, pct_of_copy=100 * gbs / copy_gbs)
                    except Exception as exc:  # OOM at the largest size, a compile failure: record, go on
                        first_line = (str(exc).splitlines() or [""])[0]
                        point.update(status="error", reason=f"{type(exc).__name__}: {first_line}")
                        _empty_cache()
                    points.append(point)
                for point in points[-len(IMPLS):]:
                    if point["status"] == "ok" and "compiled" in row_ms:
                        point["speedup_vs_compiled"] = row_ms["compiled"] / point["time_ms"]
                    print(_row(point), flush=True)
            del x, w, grad_out
            _empty_cache()
    return points


def _row(p: dict) -> str:
    head = f"  {p['mode']:7s} {p['impl']:8s}"
    if p["status"] != "ok":
        return f"{head} {p['status']}: {p['reason']}"
    speedup = f"{p['speedup_vs_compiled']:5.2f}x vs compiled" if "speedup_vs_compiled" in p else ""
    return f"{head} {p['time_ms']:8.3f} ms {p['gbs']:7.1f} GB/s {p['pct_of_copy']:5.1f}% of copy  {speedup}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastformer_bench.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 2^22, 2^24, 2^26 only (default 2^22 .. 2^27)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest suites/correctness first")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32", help="comma-separated subset of bf16,fp16,fp32")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available; this check needs an NVIDIA GPU.", file=sys.stderr)
        return 2
    dtypes = [d for d in args.dtypes.split(",") if d]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        print(f"gpu_check: unknown dtype(s) {', '.join(unknown)}; choose from {', '.join(DTYPES)}.", file=sys.stderr)
        return 2
    reason = impls.get("triton").unsupported_reason("cuda", torch.float16)
    if reason is not None:
        print(f"gpu_check: the triton implementation cannot run here: {reason}", file=sys.stderr)
        return 2

    import triton

    repo = Path(__file__).resolve().parents[1]
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                    "bytes_formula": {"fwd": "(C+1)*B*N*D*elem", "fwd_bwd": "(3C+2)*B*N*D*elem",
                                      "copy": "2*C*B*N*D*elem (read + write)"}}
    ok = True
    if not args.skip_tests:
        print("running pytest suites/correctness on the GPU ...", flush=True)
        report["tests"] = run_tests(repo)
        print(f"tests: {report['tests']['summary']}", flush=True)
        if report["tests"]["rc"] not in (0, None):
            ok = False
            print("\n".join(report["tests"].get("tail", [])), flush=True)

    exponents = [22, 24, 26] if args.quick else list(range(22, 28))
    report["points"] = sweep(exponents, dtypes)
    ok = ok and all(p["status"] == "ok" for p in report["points"] if p["impl"] == "triton")
    ok = ok and not any(p["status"] == "incorrect" for p in report["points"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
