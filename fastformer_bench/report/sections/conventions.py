"""REPORT.md's last section: the units and conventions every number above follows, and the caveats of this run."""

from __future__ import annotations

from fastformer_bench.report.sections import noise, points, streaming


def _unreadable_lines(s: dict) -> list[str]:
    lines = s.get("unreadable") or []
    if not lines:
        return []
    return [f"- **{len(lines)} line{'s' if len(lines) > 1 else ''} of the results could not be read and "
            f"{'are' if len(lines) > 1 else 'is'} left out of everything above:**",
            *[f"  - {line}" for line in lines]]


def section(s: dict, runs: list[dict]) -> list[str]:
    threads = sorted({str(r["env"].get("threads")) for r in runs if r["env"].get("threads") is not None})
    return ["## Conventions and caveats", "",
            "- Units: times are seconds per call (median of the samples; bands p20-p80), memory and traffic bytes, "
            "bandwidth bytes/s, work FLOP and FLOP/s; N is tokens per sequence, D the width, H the heads, C the "
            "column count, B the batch.",
            *noise.caveats(s), *streaming.caveats(s),
            f"- Threads: {', '.join(threads) or 'not recorded'} (CPU timings depend on the thread count and on "
            "other load on the machine).",
            "- FLOP convention: the analytic count is 2 per multiply-add. fvcore counts 1 per multiply-add, so the "
            "report compares 2 x fvcore with it; FlopCounterMode counts 2 per multiply-add. Ops a counter skips "
            "or misses are listed in the tables.",
            "- peak memory is what the call needed beyond its inputs; bytes_min is the minimal traffic (every "
            "input read once, every output written once), so bytes_min / time is a lower bound on the bandwidth "
            "achieved. The copy bandwidth is `dst.copy_(src)` of float32 tensors far past the caches, read + write "
            "bytes counted, measured in the same run; the GEMM roof is a square `torch.mm` in float32, and on a "
            "GPU also in each bf16/fp16 dtype the run used: a point is set against the GEMM of its own dtype "
            "(none where that was not measured).",
            f"- Scaling fits: {s['fit_rule']}. A fit over a short or small-N range can miss the asymptotic exponent; "
            "the report states such misses instead of changing the range.",
            "- Only status = ok points are timed, plotted or fitted; incorrect points are reported above and "
            "excluded everywhere else.",
            *points.caveats(s), *_unreadable_lines(s), ""]
