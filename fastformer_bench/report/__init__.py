"""The report: figures, REPORT.md and summary.json regenerated from stored results (docs/design.md §3.4).

Never imports torch: it reads only points.jsonl/run.json through ``fastformer_bench.results``. Output is a pure
function of the results (no timestamps, no absolute paths, sorted keys, fixed number formats), so regenerating
gives byte-identical REPORT.md and summary.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastformer_bench import results
from fastformer_bench.report.output import clean, without_paths, write

__all__ = ["build_report", "load"]


def _positive(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _copy_bandwidth(env: dict, device: str) -> float | None:
    value = env.get("copy_bytes_per_s")
    if isinstance(value, dict):  # the CLI records one bandwidth per device the run used
        value = value.get(device)
    return _positive(value)


def _gemm_roof(roof: dict, dtype: str | None) -> float | None:
    """The GEMM FLOP/s a roof entry measured in ``dtype``: a GPU's bf16/fp16 products run on tensor cores at
    many times its float32 rate, so a point is only ever set against a GEMM of its own compute dtype. Entries
    without ``gemm_dtype`` come from runs that measured float32 alone."""
    by_dtype = roof.get("gemm_flops_per_s_by_dtype")
    if isinstance(by_dtype, dict) and dtype in by_dtype:
        return _positive(by_dtype[dtype])
    if dtype == roof.get("gemm_dtype", "float32"):
        return _positive(roof.get("gemm_flops_per_s"))
    return None


def _roof(env: dict, device: str, threads, dtype: str | None, key: str = "roofs") -> tuple[float | None, float | None]:
    """(copy bytes/s, GEMM FLOP/s in ``dtype``) the run measured on ``device`` at ``threads``: its ``roofs`` entry
    for that pair (``roofs_end``: the same measured after the sweep); the device's one copy bandwidth (and no GEMM
    roof) for runs that measured no roofs."""
    for roof in env.get(key) or []:
        if isinstance(roof, dict) and roof.get("device") == device and roof.get("threads") == threads:
            return _positive(roof.get("copy_bytes_per_s")), _gemm_roof(roof, dtype)
    return (_copy_bandwidth(env, device), None) if key == "roofs" else (None, None)


def _read_write_roof(env: dict, device: str, threads, key: str = "roofs") -> tuple:
    """(read bytes/s, write bytes/s, write_method) the run measured on ``device`` at ``threads`` (None for runs
    before these roofs)."""
    for roof in env.get(key) or []:
        if isinstance(roof, dict) and roof.get("device") == device and roof.get("threads") == threads:
            return (_positive(roof.get("read_bytes_per_s")), _positive(roof.get("write_bytes_per_s")),
                    roof.get("write_method"))
    return None, None, None


def _cache_bytes(env: dict, device: str) -> float | None:
    """The last-level cache between the device and its memory: the CPU's LLC, or a GPU's L2."""
    return _positive(env.get("last_level_cache_bytes" if device == "cpu" else "gpu_l2_bytes"))


def _machine_columns(frame, envs: list[dict]) -> None:
    """Each point's roofs and last-level cache, from the environment (one per row) it was measured in."""
    threads = frame["threads"] if "threads" in frame.columns else [None] * len(frame)
    # the dtype the arithmetic ran in (a layer may compute in another than its inputs'), else the input dtype
    computed = frame["compute_dtype"] if "compute_dtype" in frame.columns else [None] * len(frame)
    dtypes = [c if isinstance(c, str) else d for c, d in zip(computed, frame["dtype"])]
    roofs, ends, caches, read_write, read_write_end = [], [], [], [], []
    for env, device, count, dtype in zip(envs, frame["device"], threads, dtypes):
        count = int(count) if isinstance(count, int | float) and count == count else None
        dtype = dtype if isinstance(dtype, str) else None
        roofs.append(_roof(env, str(device), count, dtype))
        ends.append(_roof(env, str(device), count, dtype, key="roofs_end")[0])
        read_write.append(_read_write_roof(env, str(device), count))
        read_write_end.append(_read_write_roof(env, str(device), count, key="roofs_end"))
        caches.append(_cache_bytes(env, str(device)))
    frame["copy_bw"] = [r[0] for r in roofs]
    frame["copy_bw_end"] = ends
    frame["read_bw"], frame["write_bw"] = [r[0] for r in read_write], [r[1] for r in read_write]
    frame["write_method"] = [r[2] for r in read_write]
    frame["read_bw_end"], frame["write_bw_end"] = [r[0] for r in read_write_end], [r[1] for r in read_write_end]
    frame["gemm_flops"] = [r[1] for r in roofs]
    frame["llc_bytes"] = caches


#: run.json keys that tell machines apart: hosts that agree on all of them are one machine in the report
MACHINE_KEYS = ("cpu_model", "cpu_signature", "cpu_caches_bytes", "logical_cores", "last_level_cache_bytes",
                "gpu_name", "gpu_memory_bytes")


def _machines(env: dict) -> dict[str, dict]:
    """host -> its environment, for a cluster run (run.json ``hosts``) whose hosts are not all one machine; {}
    when there is one host or all are the same hardware (their points are then read as one machine's)."""
    hosts = env.get("hosts")
    if not isinstance(hosts, dict) or len(hosts) < 2:
        return {}
    kinds = {json.dumps([h.get(k) for k in MACHINE_KEYS], default=str) for h in hosts.values() if isinstance(h, dict)}
    return {str(name): h for name, h in sorted(hosts.items()) if isinstance(h, dict)} if len(kinds) > 1 else {}


def load(inputs: list[str], unreadable: list[str] | None = None, include_contended: bool = False,
         include_noisy: bool = False):
    """(prepared DataFrame, runs) for the given result directories or points.jsonl files.

    Lines that cannot be read are described in ``unreadable`` (when given) instead of failing the load. One input
    must hold points of one set of settings (its records' settings_hash). ``include_contended`` treats points
    timed under contention as ok (they are kept out of every fit, figure and crossover otherwise).
    """
    import pandas as pd

    from fastformer_bench.report import analysis

    if not inputs:
        raise results.ResultsError("no results directories were given.")
    frames, runs = [], []
    for entry in inputs:
        frame = results.load_frame([entry], unreadable)
        hashes = sorted({str(h) for h in frame["settings_hash"].dropna().unique()})
        if len(hashes) > 1:
            raise results.ResultsError(f"{entry} mixes points measured under {len(hashes)} different settings "
                                       f"({', '.join(hashes)}); report each set of settings from its own directory.")
        if include_contended:
            frame["status"] = frame["status"].replace("contended", "ok")
        if include_noisy:  # CUDA points whose spread stayed above max_spread, likewise kept out unless asked for
            frame["status"] = frame["status"].replace("noisy", "ok")
        path = Path(entry)
        env = results.read_run(path if path.is_dir() else path.parent)
        ids = sorted({str(r) for r in frame["run_id"].dropna().unique() if str(r)})
        label = ", ".join(ids) if ids else path.name
        if label in {r["label"] for r in runs}:  # two inputs from one run id still need two columns
            label = f"{label} (input {len(runs) + 1})"
        machines = _machines(env)
        if machines and "host" in frame.columns:
            # A cluster run measured on different machines: each machine its own environment column, and its
            # points their own series (the device label names the host), never one fit across two machines.
            for host, host_env in machines.items():
                runs.append({"label": f"{label} @ {host}", "env": without_paths(clean(host_env))})
            _machine_columns(frame, [machines.get(h, env) for h in frame["host"]])
            frame["device"] = [f"{d}@{h}" if h in machines else d for h, d in zip(frame["host"], frame["device"])]
        else:
            runs.append({"label": label, "env": without_paths(clean(env))})
            _machine_columns(frame, [env] * len(frame))
        frames.append(frame)
    return analysis.prepare(pd.concat(frames, ignore_index=True)), runs


def _run_of(entry: str) -> dict:
    path = Path(entry)
    return results.read_run(path if path.is_dir() else path.parent)


def _probe_frame(inputs: list[str], unreadable: list[str]):
    """(the probe records as a DataFrame, the speed inputs beside them) when an input is a probe run; None when
    none is. Speed inputs beside one probe run are its optional speed results (the capability beside speed)."""
    import pandas as pd

    probes = [entry for entry in inputs if _run_of(entry).get("kind") == results.PROBE]
    if not probes:
        return None
    if len(probes) > 1:
        raise results.ResultsError("a probe report is built from one probe results directory.")
    records = results.load_records(probes, unreadable)
    if not records:
        raise results.ResultsError(f"{probes[0]} holds no probe records.")
    return pd.DataFrame.from_records(records), [entry for entry in inputs if entry not in probes]


def build_report(inputs: list[str], out: str, include_contended: bool = False, include_noisy: bool = False) -> dict:
    """Write out/REPORT.md, out/summary.json and out/figures/*.png from the results; return the summary.

    Raises results.ResultsError (a ValueError) with one sentence for missing, bad or foreign results. A line of
    the results that cannot be read is named on stderr and in the report's caveats, never dropped silently.
    """
    from fastformer_bench.report import markdown, sections, spec

    unreadable: list[str] = []
    probe_input = _probe_frame(inputs, unreadable)
    if probe_input is not None:
        from fastformer_bench.report import probe

        probe_frame, speed = probe_input
        speed_records = results.load_records(speed, unreadable) if speed else []
        for line in unreadable:
            print(f"fastformer-bench report: {line}", file=sys.stderr)
        runs = [{"label": ", ".join(sorted({str(r) for r in probe_frame["run_id"].dropna().unique()})) or "probe",
                 "env": without_paths(clean(_run_of(next(e for e in inputs if e not in speed))))}]
        return probe.build(probe_frame, runs, Path(out), unreadable, speed_records)
    frame, runs = load(inputs, unreadable, include_contended, include_noisy)
    for line in unreadable:
        print(f"fastformer-bench report: {line}", file=sys.stderr)
    out_dir = Path(out)
    summary = sections.summarize(frame)
    summary["figures"] = spec.render_all(frame, out_dir / "figures", unreadable=len(unreadable))
    if unreadable:
        summary["unreadable"] = unreadable
    if include_contended:
        summary["contended_included"] = True
    if include_noisy:
        summary["noisy_included"] = True
    summary["inputs"] = [r["label"] for r in runs]
    summary["environment"] = [{"label": r["label"], **r["env"]} for r in runs]
    summary = clean(summary)
    write(out_dir, markdown.render(summary, runs), summary)
    return summary
