"""REPORT.md from the summary dict: the answer and the decision, findings, figures, tables, conventions, and
the environment last.

Each analysis writes its own sentences and table (``report.sections``); this module puts them in the report's
order. Everything here is a pure function of ``summary`` (no clock, no paths, fixed number formats), so the same
results always give the same bytes.
"""

from __future__ import annotations

from fastformer_bench.report import decision, sections
from fastformer_bench.report.fmt import si
from fastformer_bench.report.output import table
from fastformer_bench.report.sections import conventions, figures
from fastformer_bench.report.spec import HEADLINES

#: run.json's versions of the packages a timing depends on ("triton" is that package's version, an environment fact)
VERSION_KEYS = ("torch", "triton")
#: run.json keys shown first, in this order
ENV_KEYS = ["python", *VERSION_KEYS, "cpu_model", "threads", "gpu_name", "git_commit", "preset", "argv",
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


#: the findings' subsections, in REPORT.md's order: (heading, the analyses that speak under it, the one line said
#: when none of them has anything to say; None: the heading is left out then)
FINDINGS = (
    (None, (sections.points.conclusions, sections.correctness.conclusions, sections.scaling.verdicts), None),
    ("Caveats", (sections.scaling.caveats,), None),
    ("Scaling in N", (sections.scaling.conclusions,), None),
    ("Crossovers and memory limits", (sections.crossovers.conclusions, sections.memory_limits.conclusions),
     "No additive implementation was matched with a softmax baseline at two or more N, and none ran out of memory."),
    ("Work, bandwidth, backward pass and columns", (
        sections.flop_counters.conclusions, sections.throughput.conclusions, sections.fwd_bwd.conclusions,
        sections.columns.conclusions, sections.token_budget.conclusions), None),
    ("Launch timing", (sections.launch.conclusions,), None),
)
#: the tables, in REPORT.md's order
TABLES = (sections.scaling.tables, sections.polynomial.tables, sections.speedups.tables, sections.launch.tables,
          sections.streaming.tables,
          sections.scaling.target_table, sections.crossovers.tables, sections.memory_limits.tables,
          sections.flop_counters.tables, sections.correctness.tables, sections.throughput.tables,
          sections.fwd_bwd.tables, sections.columns.tables, sections.token_budget.tables, sections.quantities.tables)


def findings(s: dict) -> list[str]:
    """The Findings section: every analysis's sentences under its subsection; no subsection stands empty."""
    out = ["## Findings", ""]
    for heading, parts, empty in FINDINGS:
        said = [line for part in parts for line in part(s)]
        if not said and empty is None:
            continue
        out += ["", f"### {heading}", ""] if heading else []
        out += said or [empty]
    return out + largest_sizes(s) + [""]


def tables(s: dict) -> list[str]:
    """The Tables section: every analysis's table (none without rows)."""
    found = [line for part in TABLES for line in part(s)]
    return ["## Tables", ""] + found if found else []


#: preset names that already say the device and what the run is ("gpu-check": "GPU check")
DEVICE_NAMES = ("cpu", "gpu")


def machine(runs: list[dict]) -> str:
    """The machines the runs measured, in words: 'AMD EPYC, 2 cores', 'NVIDIA H200'."""
    names = []
    for r in runs:
        env = r["env"]
        name = env.get("gpu_name") if env.get("gpu_name") and env.get("cuda_available") is not False else None
        if not name and env.get("cpu_model"):
            cores = env.get("logical_cores")
            name = f"{env['cpu_model']}, {cores} cores" if cores else str(env["cpu_model"])
        if name and name not in names:
            names.append(name)
    return " and ".join(names) or "an unrecorded machine"


def title(s: dict, runs: list[dict]) -> str:
    """e.g. 'CPU study: additive vs softmax attention on AMD EPYC, 2 cores'."""
    devices = " and ".join(dict.fromkeys(decision.device_word(d).split(" ")[0] for d in s.get("devices") or []))
    presets = sorted({str(r["env"]["preset"]) for r in runs if r["env"].get("preset")})
    words = presets[0].split("-") if len(presets) == 1 else []
    if words and words[0].lower() in DEVICE_NAMES:
        kind = " ".join([words[0].upper(), *words[1:]] + (["study"] if len(words) == 1 else []))
    elif words:
        kind = f"{devices} {presets[0]} run".strip()
    else:
        kind = f"{devices} study".strip()
    return f"{kind[:1].upper()}{kind[1:]}: additive vs softmax attention on {machine(runs)}"


def _provenance(runs: list[dict]) -> str:
    """'cpu-20261205T041149Z (preset cpu, 2026-12-05, code 546ab60)'."""
    parts = []
    for r in runs:
        env = r["env"]
        facts = [f"preset `{env['preset']}`" if env.get("preset") else None,
                 str(env["started_at"])[:10] if env.get("started_at") else None,
                 f"code {str(env['git_commit'])[:7]}" if env.get("git_commit") else None]
        facts = [f for f in facts if f]
        parts.append(f"{r['label']} ({', '.join(facts)})" if facts else r["label"])
    return "; ".join(parts)


def render(summary: dict, runs: list[dict]) -> str:
    """The whole REPORT.md text: the answer and the decision first, the findings, the environment last."""
    headline = [e for e in summary["figures"] if any(spec.owns(e["kind"]) for spec in HEADLINES)]
    lines = [f"# {title(summary, runs)}", "", f"Results: {_provenance(runs)}. Regenerate with "
             "`fastformer-bench report`; do not edit by hand.", "",
             "## Answer", "", " ".join(sections.decision.answer(summary, machine(runs))), ""]
    lines += sections.decision.section(summary, headline) + findings(summary)
    lines += sections.process.section(summary, runs)  # "What your process gets": two allocator conditions or more
    lines += figures.section(summary["figures"], summary["baselines"]) + tables(summary)
    lines += conventions.section(summary, runs) + environment(runs)
    return "\n".join(lines).rstrip("\n") + "\n"
