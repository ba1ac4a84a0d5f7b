"""Synthetic results with known answers, for the report tests (and for a sample report by hand).

Times follow exact power laws times a small deterministic wobble, so the fitted exponents and crossovers are
known analytically: eager = 1e-6·N·(D/64) s, softmax_sdpa = 1e-8·N²·(D/64) s (crossover at N = 100),
softmax_naive = 2e-8·N²·(D/64) s (crossover with eager at N = 50), reference = 3e-8·N²·(D/64) s (never faster).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fastformer_bench.results import new_record

SEQ_LENS = [16, 32, 64, 128, 256, 512, 1024, 2048]
WIDTHS = [64, 256]
BATCH = 2
COPY_BW = 1e10
EAGER_COEF, SDPA_COEF, NAIVE_COEF, REFERENCE_COEF = 1e-6, 1e-8, 2e-8, 3e-8
CROSS_SDPA, CROSS_NAIVE = EAGER_COEF / SDPA_COEF, EAGER_COEF / NAIVE_COEF
WILD_N = 4096

FAMILY = {"reference": "additive", "eager": "additive", "compiled": "additive", "triton": "additive",
          "softmax_naive": "softmax", "softmax_sdpa": "softmax"}
#: the facts a schema-2 record carries about its implementation (the report reads these, never the names)
FACTS = {
    "reference": {"complexity": "quadratic", "baseline_rank": None, "expected_exponent": [1.7, None],
                  "display_order": 0},
    "eager": {"complexity": "linear", "baseline_rank": None, "expected_exponent": [0.8, 1.2], "display_order": 1},
    "compiled": {"complexity": "linear", "baseline_rank": None, "expected_exponent": [0.8, 1.2], "display_order": 2},
    "triton": {"complexity": "linear", "baseline_rank": None, "expected_exponent": None, "display_order": 3},
    "softmax_naive": {"complexity": "quadratic", "baseline_rank": 2, "expected_exponent": [1.7, None],
                      "display_order": 4},
    "softmax_sdpa": {"complexity": "quadratic", "baseline_rank": 1, "expected_exponent": None, "display_order": 5},
}
ENERGY = {"label": "energy per call", "unit": "J", "per_token": True}
#: synthetic energy: this many joules per token and unit of width
ENERGY_PER_TOKEN_WIDTH = 1e-9


def _time(impl: str, n: int, d: int, columns: int = 3) -> float:
    scale = d / 64 * (columns - 1) / 2
    return scale * {"eager": EAGER_COEF * n, "compiled": 5e-7 * n + 2e-4, "reference": REFERENCE_COEF * n * n,
                    "softmax_naive": NAIVE_COEF * n * n, "softmax_sdpa": SDPA_COEF * n * n}.get(impl, 1.0)


def _memory(impl: str, b: int, n: int, d: int, h: int) -> int:
    return {"eager": 16 * b * n * d, "compiled": 12 * b * n * d, "reference": 8 * b * h * n * n + 4 * b * n * d,
            "softmax_naive": 4 * b * h * n * n + 8 * b * n * d, "softmax_sdpa": 8 * b * n * d}.get(impl, 0)


class _Points:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def add(self, impl: str, n: int, d: int, *, mode: str = "fwd", scope: str = "core", batch: int = BATCH,
            columns: int = 3, status: str = "ok", time_s: float | None = None, preset: str = "synthetic") -> None:
        h = d // 32
        # Deterministic ±1% wobble so the fits are not exact (and their CIs not degenerate).
        wobble = 1 + 0.01 * math.sin(len(self.records) * 1.7)
        fwd_bwd = 3.0 if mode == "fwd_bwd" else 1.0
        t = time_s if time_s is not None else _time(impl, n, d, columns) * fwd_bwd * wobble
        if scope == "layer":
            t = 1e-4 + 1e-9 * batch * n * d + (1e-11 * batch * n * n * d if FAMILY[impl] == "softmax" else 0.0)
            t *= wobble
        quadratic = impl in ("reference", "softmax_naive")
        flops = 4.0 * batch * n * d * (columns - 1) + (2.0 * batch * n * n * d if quadratic else 0.0)
        timed = status == "ok" or time_s is not None
        fvcore = 0.4 * flops if mode == "fwd" else None
        record = new_record(
            run_id="synthetic-run", point_id=f"{impl}-{mode}-{scope}-b{batch}-n{n}-d{d}-c{columns}", impl=impl,
            family=FAMILY[impl], **FACTS[impl], device="cpu", device_name="Synthetic CPU", dtype="float32", mode=mode,
            scope=scope, batch=batch, seq_len=n, width=d, heads=h, columns=columns, masked=False, threads=2,
            status=status,
            reason=None if status == "ok" else f"synthetic {status}",
            time_median=t if timed else None, time_p20=0.97 * t if timed else None,
            time_p80=1.04 * t if timed else None, samples=[t] * 3 if timed else None,
            compile_s=1.5 if impl == "compiled" else None,
            peak_bytes=_memory(impl, batch, n, d, h) if status == "ok" else None, memory_method="synthetic",
            flops=flops, flops_fvcore=fvcore, flops_counter=flops * (0.95 if FAMILY[impl] == "softmax" else 1.0),
            flops_notes={"fvcore_skipped": ["aten::softmax"] if mode == "fwd" else ["fvcore counts forward only"],
                         "counter_missing": ["aten::_softmax"] if FAMILY[impl] == "softmax" else []},
            bytes_min=4.0 * 4 * batch * n * d, max_abs_err=1e-7 if status != "incorrect" else 0.5,
            max_rel_err=1e-6 if status != "incorrect" else 0.3, energy_j=None, preset=preset, tolerance=1e-4,
            reference_impl="reference")
        if status == "unsupported":  # never ran: no work counts, no errors
            record.update(flops=None, flops_fvcore=None, flops_counter=None, flops_notes=None, bytes_min=None,
                          max_abs_err=None, max_rel_err=None)
        self.records.append(record)


def synthetic_records() -> list[dict]:
    p = _Points()
    for d in WIDTHS:
        for n in SEQ_LENS:
            for impl in ("reference", "eager", "compiled", "softmax_naive", "softmax_sdpa"):
                oom = (impl == "reference" and n >= 1024) or (impl == "softmax_naive" and n >= 2048)
                p.add(impl, n, d, status="oom" if oom else "ok")
            p.add("triton", n, d, status="unsupported", time_s=None)
    # Backward too, for two implementations at one width: enough for every fwd_bwd figure, cheap to draw.
    for n in SEQ_LENS:
        for impl in ("eager", "softmax_sdpa"):
            p.add(impl, n, 64, mode="fwd_bwd")
    # Correctness before speed: a wrong answer with an absurd time must not bend eager's fit.
    p.add("eager", WILD_N, 64, status="incorrect", time_s=1e3)
    for impl in ("eager", "compiled", "reference"):
        for c in (2, 4, 6):
            p.add(impl, 256, 64, columns=c)
    for n in (128, 256, 512, 1024, 2048, 4096):
        for impl in ("eager", "softmax_sdpa"):
            p.add(impl, n, 64, scope="layer", batch=65536 // n, preset="paper-fig2")
    return p.records


def with_energy(records: list[dict]) -> list[dict]:
    """Copies of ``records`` whose ok points measured energy (per call: ENERGY_PER_TOKEN_WIDTH x B x N x D)."""
    out = []
    for r in records:
        if r["status"] == "ok":
            joules = ENERGY_PER_TOKEN_WIDTH * r["batch"] * r["seq_len"] * r["width"]
            r = {**r, "energy_j": joules, "quantities": {**r["quantities"], "energy_j": dict(ENERGY)}}
        out.append(r)
    return out


def run_env() -> dict:
    return {"python": "3.12.0", "torch": "2.11.0", "triton": None, "cpu_model": "Synthetic CPU", "threads": 2,
            "gpu": None, "git_commit": "0123456789abcdef", "argv": ["fastformer-bench", "run", "--preset", "synthetic"],
            "copy_bytes_per_s": {"cpu": COPY_BW}, "preset": "synthetic"}


def write_results(directory: str | Path, records: list[dict] | None = None, env: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records = synthetic_records() if records is None else records
    with open(directory / "points.jsonl", "w") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    (directory / "run.json").write_text(json.dumps(run_env() if env is None else env, indent=2, sort_keys=True))
    return directory


if __name__ == "__main__":  # python suites/testkit/synthetic_results.py DIR
    import sys

    print(write_results(sys.argv[1]))
