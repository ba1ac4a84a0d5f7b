"""REPORT.md from the summary dict: environment, conclusions first, figures, tables, conventions.

Each analysis writes its own sentences and table (``report.sections``); this module puts them in the report's
order. Everything here is a pure function of ``summary`` (no clock, no paths, fixed number formats), so the same
results always give the same bytes.
"""

from __future__ import annotations

from fastformer_bench.report import sections
from fastformer_bench.report.fmt import si
from fastformer_bench.report.output import table
from fastformer_bench.report.sections import conventions, figures

#: run.json keys shown first, in this order (each is an environment fact: "triton" is that package's version)
ENV_KEYS = ["python", "torch", "triton", "cpu_model", "threads", "gpu_name", "git_commit", "preset", "argv",
            "copy_bytes_per_s", "roofs", "roofs_end", "last_level_cache_bytes"]
#: shown only when some run recorded them (older runs did not measure them)
OPTIONAL_ENV_KEYS = {"roofs", "roofs_end", "last_level_cache_bytes"}


def environment(runs: list[dict]) -> list[str]:
    """The Environment section: one column per run, one row per run.json fact."""
    lines = ["## Environment", ""]
    if not any(r["env"] for r in runs):
        return lines + ["_No run.json was found next to the results._", ""]
    rows = []
    extra = sorted({k for r in runs for k, v in r["env"].items() if k not in ENV_KEYS
                    and isinstance(v, str | int | float | bool)})
    for key in ENV_KEYS + extra:
        if key in OPTIONAL_ENV_KEYS and all(r["env"].get(key) is None for r in runs):
            continue
        row = {"": key}
        for r in runs:
            value = r["env"].get(key)
            if key in ("roofs", "roofs_end") and isinstance(value, list):
                value = _roofs_text(value)
            elif key == "copy_bytes_per_s" and isinstance(value, dict):
                value = ", ".join(f"{d}: {si(v, 'B/s')}" for d, v in sorted(value.items()))
            elif key == "copy_bytes_per_s" and isinstance(value, int | float):
                value = si(value, "B/s")
            elif isinstance(value, dict):
                value = "; ".join(f"{k}={v}" for k, v in sorted(value.items()))
            elif isinstance(value, list):
                value = " ".join(str(v) for v in value)
            row[r["label"]] = "-" if value is None else str(value).replace("|", "/")[:120]
        rows.append(row)
    return lines + [table(rows), ""]


def _gemm_text(roof: dict) -> str:
    """'GEMM 90 GFLOP/s', or 'GEMM float32 51 TFLOP/s, bfloat16 790 TFLOP/s' where it was measured per dtype."""
    by_dtype = roof.get("gemm_flops_per_s_by_dtype")
    if isinstance(by_dtype, dict) and by_dtype:
        return "GEMM " + ", ".join(f"{name} {si(rate, 'FLOP/s')}" for name, rate in sorted(by_dtype.items()))
    return f"GEMM {si(roof.get('gemm_flops_per_s'), 'FLOP/s')}"


def _roofs_text(roofs: list) -> str:
    """'cpu x1: copy 40 GB/s, GEMM 90 GFLOP/s; cpu x2: ...' from run.json's roofs list."""
    return "; ".join(f"{r.get('device')} x{r.get('threads')}: copy {si(r.get('copy_bytes_per_s'), 'B/s')}, "
                     f"{_gemm_text(r)}" for r in roofs if isinstance(r, dict))


def largest_sizes(s: dict) -> list[str]:
    """Conclusions at the largest sizes: speedups over softmax, bandwidth against the roofs, the N² term."""
    out = sections.speedups.conclusions(s) + sections.streaming.conclusions(s) + sections.polynomial.conclusions(s)
    return ["", "### At the largest sizes", ""] + out if out else []


#: the conclusions' subsections, in REPORT.md's order: (heading, the analyses that speak under it)
CONCLUSIONS = (
    (None, (sections.points.conclusions, sections.correctness.conclusions, sections.scaling.verdicts)),
    ("Scaling in N", (sections.scaling.conclusions,)),
    ("Crossovers and memory limits", (sections.crossovers.conclusions, sections.memory_limits.conclusions)),
    ("Work, bandwidth, backward pass and columns", (
        sections.flop_counters.conclusions, sections.throughput.conclusions, sections.fwd_bwd.conclusions,
        sections.columns.conclusions, sections.token_budget.conclusions)),
)
#: the tables, in REPORT.md's order
TABLES = (sections.scaling.tables, sections.polynomial.tables, sections.speedups.tables, sections.streaming.tables,
          sections.scaling.target_table, sections.crossovers.tables, sections.memory_limits.tables,
          sections.flop_counters.tables, sections.correctness.tables, sections.throughput.tables,
          sections.fwd_bwd.tables, sections.columns.tables, sections.token_budget.tables, sections.quantities.tables)


def conclusions(s: dict) -> list[str]:
    """The Conclusions section: every analysis's sentences under its subsection."""
    out = ["## Conclusions", ""]
    for heading, parts in CONCLUSIONS:
        out += ["", f"### {heading}", ""] if heading else []
        out += [line for part in parts for line in part(s)]
    return out + largest_sizes(s) + [""]


def tables(s: dict) -> list[str]:
    """The Tables section: every analysis's table."""
    return ["## Tables", ""] + [line for part in TABLES for line in part(s)]


def render(summary: dict, runs: list[dict]) -> str:
    """The whole REPORT.md text."""
    labels = ", ".join(r["label"] for r in runs)
    lines = ["# fastformer-bench report", "", f"Results: {labels}. Regenerate with `fastformer-bench report`; "
             "do not edit by hand.", ""]
    lines += environment(runs) + conclusions(summary) + figures.section(summary["figures"], summary["baselines"])
    lines += tables(summary)
    lines += conventions.section(summary, runs)
    return "\n".join(lines).rstrip("\n") + "\n"
