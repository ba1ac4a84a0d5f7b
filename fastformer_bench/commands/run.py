"""`fastformer-bench run --preset P --out DIR [...]`: its options, turned into one call of ``sweep.run``, and the
table (or, for a probe preset, the line) that says what the results directory holds."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING

from fastformer_bench import axes
from fastformer_bench.results import PROBE

if TYPE_CHECKING:  # pragma: no cover
    from fastformer_bench.cluster.submit import ExecutorOptions

NAME = "run"
HELP = "run a sweep preset into a results directory"
#: the cluster options that only mean something with --executor (their argparse dests)
_CLUSTER = ("partition", "jobs", "gpus_per_job", "time_min")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastformer_bench.probe import point as probe

    parser.add_argument("--preset", default="quick", help="preset name (see `list`) or path to a TOML file")
    parser.add_argument("--out", help="results directory (points.jsonl + run.json); required unless --dry-run")
    parser.add_argument("--dry-run", nargs="?", const="h100", choices=("h100", "h200"), metavar="GPU",
                        help="measure nothing: print every point with its predicted time and peak memory on a GPU "
                             "model (h100, the default, or h200) and the totals; exit 1 where a point is predicted "
                             "above the GPU's memory (unless the preset expects it) or past the point time limit")
    parser.add_argument("--resume", action="store_true", help="skip points already recorded in --out")
    parser.add_argument("--isolate", action="store_true", help="measure each point in its own process")
    parser.add_argument("--threads", type=_thread_setting,
                        help="the run's CPU threads (one integer; default: the preset's): the process's thread "
                             "count, and the points' where the grid does not name the threads axis (their point ids "
                             "do not change); to sweep thread counts give --threads-axis 1,2 or threads = [1, 2] in "
                             "a grid")
    parser.add_argument("--min-time", type=float, dest="min_time_s", help="minimum measured seconds per point")
    parser.add_argument("--time-limit", type=float, dest="time_limit_s", help="seconds allowed per point")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore/FlopCounterMode cross-checks")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON document (points per status, failures, where the results are) "
                             "on stdout instead of the table and summary")
    cluster = parser.add_argument_group("cluster", "spread the points over jobs through submitit (README: Running "
                                                   "on a Slurm cluster)")
    cluster.add_argument("--executor", choices=("local", "slurm"),
                         help="submit the points as a job array: slurm, or local (submitit's, on this machine)")
    cluster.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    cluster.add_argument("--jobs", type=int, help="number of jobs (shards) to split the points into (default 1)")
    cluster.add_argument("--gpus-per-job", type=int, help="GPUs per job (default 0)")
    cluster.add_argument("--time-min", type=int, help="time limit per job in minutes (default 60)")
    cluster.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                         help="any other sbatch option, without its dashes (repeatable), e.g. account=proj")
    axes.add_overrides(parser, axes.NAMES)
    for name in probe.OWN:  # the axes only probe points have (the shared ones exist already)
        axis = probe.BY_NAME[name]
        parser.add_argument(axis.flag, dest=f"axis_{name}", metavar="V[,V...]",
                            help=f"probe presets: override the {name} axis: {axis.help} (comma-separated)")


def main(args: argparse.Namespace) -> int:
    from fastformer_bench import sweep
    from fastformer_bench.probe import point as probe

    overrides = {name: getattr(args, f"axis_{name}") for name in (*axes.NAMES, *probe.OWN)
                 if getattr(args, f"axis_{name}", None) is not None}
    settings = {"threads": args.threads, "min_time_s": args.min_time_s, "time_limit_s": args.time_limit_s,
                "count_flops": False if args.no_flops else None}
    if args.dry_run:
        return _dry_run(args, overrides, settings)
    if args.out is None:
        raise ValueError("run: the option --out is required (a results directory), unless --dry-run.")
    outcome = sweep.run(args.preset, args.out, overrides=overrides, settings=settings, resume=args.resume,
                        isolate=args.isolate, executor=_executor_options(args), progress=not args.no_progress)
    summary = _summary(outcome, args.out)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 1 if outcome.failed else 0
    if outcome.kind == PROBE:
        failed = [r for r in outcome.records if r["status"] != "ok"]
        print(f"{len(outcome.records)} probe points trained into {args.out}, {len(failed)} not ok")
    else:
        _print_table(outcome.records, outcome.skipped)
    print(_paragraph(summary))
    for killed in outcome.killed:
        print(f"fastformer-bench: job {killed['job']} stopped ({killed['reason']}) with {len(killed['unmeasured'])} "
              f"point(s) unmeasured: {', '.join(killed['unmeasured'])}; run again with --resume to measure them.",
              file=sys.stderr)
    return 1 if outcome.failed else 0


def _summary(outcome, out: str) -> dict:
    """What the run left, for people (``_paragraph``) and machines (``--json``)."""
    statuses = Counter(record["status"] for record in outcome.records)
    not_ok = [{"point_id": r["point_id"], "impl": r.get("impl") or r.get("mixer"), "status": r["status"],
               "reason": r.get("reason")} for r in outcome.records if r["status"] != "ok"]
    return {"kind": outcome.kind, "results": str(out), "points": len(outcome.records),
            "statuses": dict(sorted(statuses.items())), "failed": outcome.failed, "not_ok": not_ok,
            "skipped": len(outcome.skipped), "jobs_stopped": len(outcome.killed),
            "report_command": f"fastformer-bench report {out} --out <report directory>"}


def _paragraph(summary: dict) -> str:
    """One paragraph: how many points, by status; whether a check failed and which; where to go next."""
    counts = ", ".join(f"{count} {status}" for status, count in summary["statuses"].items()) or "none"
    lines = [f"Done: {summary['points']} points in {summary['results']} ({counts})"
             + (f"; {summary['skipped']} combinations skipped." if summary["skipped"] else ".")]
    if summary["failed"]:
        failures = [p for p in summary["not_ok"] if p["status"] in ("incorrect", "error")][:3]
        named = "; ".join(f"{p['impl']} {p['point_id']}: {p['status']}" for p in failures)
        lines.append("A check failed (exit 1)" + (f": {named}." if named else "."))
    elif summary["not_ok"]:
        lines.append("Points not ok are kept with their reason and left out of every fit and figure.")
    lines.append(f"Report: {summary['report_command']}")
    return " ".join(lines)


def _dry_run(args: argparse.Namespace, overrides: dict, settings: dict) -> int:
    """``run --dry-run``: the plan of the request (fastformer_bench/plan.py), nothing measured or written."""
    from fastformer_bench import plan
    from fastformer_bench.plan_preset import plan_preset

    found = plan_preset(args.preset, args.dry_run, overrides=overrides,
                             settings={k: v for k, v in settings.items() if v is not None})
    print("\n".join(plan.format_plan(found)))
    return 1 if found.over_memory() or found.over_time_limit() else 0


def _thread_setting(text: str) -> int:
    """``run --threads``: the run's one thread count; a list is the threads axis, which has its own option."""
    if "," in text:
        raise argparse.ArgumentTypeError(f"is the run's one thread count, got {text!r}; to measure each point at "
                                         "several thread counts give --threads-axis with that list")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None


def _executor_options(args: argparse.Namespace) -> ExecutorOptions | None:
    """The cluster options of ``run`` (None for a run in this process); ValueError for a wrong combination."""
    from fastformer_bench.cluster.submit import ExecutorOptions, parse_slurm_options

    given = [name for name in _CLUSTER if getattr(args, name) is not None]
    if args.executor is None:
        if given or args.slurm_option:
            first = (given or ["slurm_option"])[0].replace("_", "-")
            raise ValueError(f"--{first} applies to a cluster run: add --executor slurm (or local).")
        return None
    chosen = {name: getattr(args, name) for name in given}
    return ExecutorOptions(executor=args.executor, slurm_options=parse_slurm_options(args.slurm_option), **chosen)


def _print_table(records: list[dict], skipped: list) -> None:
    from rich.console import Console
    from rich.table import Table

    from fastformer_bench.runner import spread_of

    table = Table(title=f"{len(records)} points recorded, {len(skipped)} combinations skipped")
    for column in ("impl", "dtype", "mode", "scope", "B", "N", "D", "C", "T", "status", "median ms", "p20–p80 %",
                   "windows", "peak MiB", "GFLOP/s", "rel err"):
        table.add_column(column, justify="right" if column[0].isupper() or " " in column else "left")
    for r in records:
        ok = r["status"] == "ok"
        spread = spread_of(r)
        gflops = r["flops"] / r["time_median"] / 1e9 if ok and r.get("flops") and r["time_median"] else None
        table.add_row(
            r["impl"], r["dtype"], r["mode"], r["scope"], str(r["batch"]), str(r["seq_len"]), str(r["width"]),
            str(r["columns"]), str(r.get("threads") or ""),
            r["status"] if ok else f"{r['status']}: {(r.get('reason') or '')[:40]}",
            f"{r['time_median'] * 1e3:.3f}" if ok else "",
            f"{spread * 100:.1f}" if spread is not None else "",
            str(r.get("timing_attempts") or "") if ok else "",
            f"{r['peak_bytes'] / 2**20:.1f}" if ok and r.get("peak_bytes") is not None else "",
            f"{gflops:.2f}" if gflops is not None else "",
            f"{r['max_rel_err']:.1e}" if r.get("max_rel_err") is not None else "",
        )
    Console(stderr=False, width=160).print(table)
