"""README.md's "Results at a glance", written from the committed reports' summary.json (never by hand): per setting
of each speed report its decision row, and the probe's answer.

The block lies between ``<!-- glance:start -->`` and ``<!-- glance:end -->``; ``write_readme`` rewrites it and
``block`` says what it should hold, so a test can hold README.md to the reports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastformer_bench.report import asymptotics
from fastformer_bench.report.decision import device_word, ran_alone, setting
from fastformer_bench.report.fmt import count, si, times
from fastformer_bench.report.markdown import VERSION_KEYS
from fastformer_bench.report.output import table
from fastformer_bench.report.probe_decision import answer as probe_answer
from fastformer_bench.report.sections.decision import plain_cell, roof_cell, roof_note, versus_cells

START, END = "<!-- glance:start -->", "<!-- glance:end -->"
README = "README.md"


def summaries(root: Path) -> list[tuple[str, dict]]:
    """(name, summary) of every committed report with a summary.json, by name."""
    found = sorted((root / "reports").glob("*/summary.json"))
    return [(path.parent.name, json.loads(path.read_text())) for path in found]


def run_date(env: dict) -> str | None:
    """The day the run started (run.json's started_at, else the date in a run id such as probe-20261203T133215Z)."""
    if env.get("started_at"):
        return str(env["started_at"])[:10]
    found = re.search(r"(\d{4})(\d{2})(\d{2})T\d{6}Z", str(env.get("run_id") or env.get("label") or ""))
    return "-".join(found.groups()) if found else None


def _machine(env: dict) -> str:
    if env.get("gpu_name") and env.get("cuda_available") is not False:
        return str(env["gpu_name"])
    cache = env.get("last_level_cache_bytes")
    cores = f", {env['logical_cores']} cores" if env.get("logical_cores") else ""
    llc = f", {cache / 2**20:g} MiB LLC" if cache else ""
    return f"{env.get('cpu_model', 'an unrecorded CPU')}{cores}{llc}"


def _versions(env: dict) -> str:
    parts = [f"{key} {env[key]}" if env.get(key) else None for key in VERSION_KEYS]
    parts.append(f"code {str(env['git_commit'])[:7]}" if env.get("git_commit") else None)
    return ", ".join(p for p in parts if p)


def _run(name: str, summary: dict) -> str:
    """'[cpu](reports/cpu/REPORT.md): AMD EPYC, 2 cores, 32 MiB LLC; 2026-12-05, torch 2.13.0+cpu, code 546ab60'."""
    env = (summary.get("environment") or [{}])[0]
    facts = ", ".join(p for p in (run_date(env), _versions(env)) if p)
    return f"[{name}](reports/{name}/REPORT.md): {_machine(env)}" + (f"; {facts}" if facts else "")


def _shape(row: dict) -> str:
    return f"{row['batch']}, {row['width']}, {row['heads']}, {row['columns'] or '-'}"


def _rows(summary: dict, base: str, name: str) -> list[dict]:
    out = []
    for row in summary.get("decision") or []:
        at_n, largest, _tail = versus_cells(row, base, mark="³")
        out.append({"report": name, "device": device_word(row["device"]),
                    "dtype, mode, threads": setting(row, device=False),
                    "B, D, H, C": _shape(row),
                    "fastest": f"`{row['fastest']['impl']}`" + (" (the only one run)" if ran_alone(row) else ""),
                    "time ¹": f"{si(row['fastest']['time'], 's')} at N = {count(row['n'])}",
                    "in a plain process ¹": plain_cell(row) if row["device"].partition("@")[0] == "cpu" else "–",
                    "share of the memory roof ²": roof_cell(row),
                    f"× `{base}` at N = {count(asymptotics.SPEEDUP_N)}": at_n,
                    f"× `{base}` at the largest N both ran": largest})
    return out


def _footnotes(speed: list[tuple[str, dict]], base: str) -> list[str]:
    rows = [r for _, s in speed for r in s.get("decision") or []]
    out = ["¹ CPU times are of the harness's kept heap (allocator condition `warm`: glibc told to keep freed memory, "
           "so a call does not page-fault fresh memory); “in a plain process” is the same implementation in a "
           "process with the C library's defaults, what a user's `python` gets (each report's What your process "
           "gets section has the remedies). GPU times: each report says how they were timed."]
    if any(r["roof"] for r in rows):
        report = {id(r): name for name, s in speed for r in s.get("decision") or []}
        out.append("²" + roof_note(rows, name=lambda r: f"{setting(r)} ({report[id(r)]})").removeprefix("¹"))
    failed = sorted({(r["device"], v["status_at_n"]) for r in rows for v in r["versus"]
                     if v["baseline"] == base and v.get("status_at_n") not in (None, "not measured")})
    if failed:
        out.append(f"³ `{base}` has no time at N = {count(asymptotics.SPEEDUP_N)} in that run: "
                   + "; ".join(f"its {device_word(d)} point there ended {status}" for d, status in failed) + ".")
    return out


def _exponents(speed: list[tuple[str, dict]]) -> str | None:
    """The range of time exponents past the last-level cache of the linear implementations, per report."""
    parts = []
    for name, s in speed:
        fits = [f["slope"] for f in s.get("time_fits") or []
                if f.get("complexity") == "linear" and f.get("fit_range") == "past LLC"]
        if fits:
            parts.append(f"N^{min(fits):.2f} to N^{max(fits):.2f} in {name} ({len(fits)} fits)")
    return ("Past the last-level cache the time of every linear implementation grows as " + "; ".join(parts)
            + ".") if parts else None


def _others(speed: list[tuple[str, dict]], base: str) -> str | None:
    """The fastest against the other baselines, where it was measured at N = 8192."""
    parts = []
    for _name, s in speed:
        for row in s.get("decision") or []:
            for v in row["versus"]:
                if v["baseline"] != base and v.get("speedup") is not None:
                    parts.append(f"`{row['fastest']['impl']}` is {times(v['speedup'])} as fast as `{v['baseline']}` "
                                 f"at N = {count(v['at_n'])} ({setting(row)}, D = {row['width']})")
    return ("Against the other baselines: " + "; ".join(parts) + ".") if parts else None


def _probe(name: str, summary: dict) -> str:
    env = (summary.get("environment") or [{}])[0]
    settings = env.get("settings") or {}
    rows = summary.get("decision") or []
    seeds = sorted({r["seeds"] for r in rows})
    return (f"**The capability cost** ({_run(name, summary)}; {'/'.join(map(str, seeds))} seeds, C = 3): "
            + " ".join(probe_answer(rows, settings.get("steps"), settings)))


def block(root: str | Path) -> str:
    """What README.md's glance block holds, between its markers (exclusive), from the committed reports."""
    root = Path(root)
    found = summaries(root)
    speed = [(n, s) for n, s in found if "baselines" in s and s.get("decision")]
    probes = [(n, s) for n, s in found if "task_kinds" in s and s.get("decision")]
    bases = [s["baselines"][0] for _, s in speed if s["baselines"]]
    base = bases[0] if bases else "softmax baseline"
    lines = [f"The fastest additive implementation per setting against the primary softmax baseline (`{base}`), "
             "from the committed reports (written by `python scripts/readme_glance.py` from their summary.json; "
             "do not edit by hand):", "", *[f"- {_run(n, s)}." for n, s in speed], "",
             table([r for n, s in speed for r in _rows(s, base, n)]), ""]
    lines += [line for note in _footnotes(speed, base) for line in (note, "")] if speed else []
    prose = [p for p in (_others(speed, base), _exponents(speed)) if p]
    lines += [" ".join(prose), ""] if prose else []
    lines += [line for n, s in probes for line in (_probe(n, s), "")]
    return "\n".join(lines).strip("\n") + "\n"


def _split(text: str) -> tuple[str, str, str]:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{README} needs one {START} ... {END} block.")
    head, rest = text.split(START)
    middle, tail = rest.split(END)
    return head, middle, tail


def current(root: str | Path) -> str:
    """The block README.md holds now, between its markers (exclusive, less the line break after the start)."""
    return _split((Path(root) / README).read_text(encoding="utf-8"))[1].removeprefix("\n")


def write_readme(root: str | Path) -> bool:
    """Rewrite README.md's glance block from the committed reports; whether it changed."""
    path = Path(root) / README
    head, middle, tail = _split(path.read_text(encoding="utf-8"))
    new = block(root)
    if middle.removeprefix("\n") == new:
        return False
    path.write_text(f"{head}{START}\n{new}{END}{tail}", encoding="utf-8")
    return True
