"""`fastformer-bench run | list | env | report | gate | export` (DESIGN §5).

Exit codes: 0 done; 1 a check failed (an incorrect point, a regression); 2 the request itself is wrong
(one line on stderr, never a traceback); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): finished and held
points are saved either way.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from fastformer_bench import axes
from fastformer_bench.results import RUN_FILE, read_store, write_json_atomic


class UsageError(Exception):
    """The request is wrong: printed as one line, exit 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a batch system's time limit) stops a command the way Ctrl-C does."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def _sigterm_stops_like_ctrl_c():
    """SIGTERM raises Terminated for the command's duration. Python's default is to die at once, without the
    clean-up a Ctrl-C gets (the points held for a revisit stored with their best measurement, the writer lock
    released); and a sweep started in the background by a shell ignores Ctrl-C, so SIGTERM is how it is stopped."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we promise one line
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastformer-bench", description="Benchmark Fastformer-style additive attention.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a sweep preset into a results directory")
    run.add_argument("--preset", default="quick", help="preset name (see `list`) or path to a TOML file")
    run.add_argument("--out", required=True, help="results directory (points.jsonl + run.json)")
    run.add_argument("--resume", action="store_true", help="skip points already recorded in --out")
    run.add_argument("--isolate", action="store_true", help="measure each point in its own process")
    run.add_argument("--threads", type=_thread_setting,
                     help="the run's CPU threads (one integer; default: the preset's): the process's thread count, "
                          "and the points' where the grid does not name the threads axis (their point ids do not "
                          "change); to sweep thread counts give --threads-axis 1,2 or threads = [1, 2] in a grid")
    run.add_argument("--min-time", type=float, dest="min_time_s", help="minimum measured seconds per point")
    run.add_argument("--time-limit", type=float, dest="time_limit_s", help="seconds allowed per point")
    run.add_argument("--no-flops", action="store_true", help="skip the fvcore/FlopCounterMode cross-checks")
    run.add_argument("--no-progress", action="store_true", help="no progress output")
    cluster = run.add_argument_group("cluster", "spread the points over jobs through submitit (README: Running on a "
                                                "Slurm cluster)")
    cluster.add_argument("--executor", choices=("local", "slurm"),
                         help="submit the points as a job array: slurm, or local (submitit's, on this machine)")
    cluster.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    cluster.add_argument("--jobs", type=int, help="number of jobs (shards) to split the points into (default 1)")
    cluster.add_argument("--gpus-per-job", type=int, help="GPUs per job (default 0)")
    cluster.add_argument("--time-min", type=int, help="time limit per job in minutes (default 60)")
    cluster.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                         help="any other sbatch option, without its dashes (repeatable), e.g. account=proj")
    axes.add_overrides(run, axes.NAMES)
    from fastformer_bench.probe import cli as probe_cli

    probe_cli.add_overrides(run)

    lst = sub.add_parser("list", help="list implementations and presets (or a preset's points)")
    lst.add_argument("--preset", help="list this preset's points instead")

    sub.add_parser("env", help="print the environment record (run.json's contents) as JSON")

    rep = sub.add_parser("report", help="build figures and REPORT.md from stored results")
    rep.add_argument("results", nargs="+", help="result directories (or points.jsonl files)")
    rep.add_argument("--out", required=True, help="report directory")
    rep.add_argument("--include-contended", action="store_true",
                     help="treat points timed under CPU contention (status contended) as ok")

    hist = sub.add_parser("history", help="file runs per commit and show each point's trend with its steps")
    hist_sub = hist.add_subparsers(dest="history_command", required=True, parser_class=_Parser)
    hist_add = hist_sub.add_parser("add", help="file a run under HISTORY/<machine>/ (time or instruction counts)")
    hist_add.add_argument("results", help="a results directory (run.json + points), or the --json report of an "
                                          "instruction gate (then give --commit)")
    hist_add.add_argument("--history", default="results/history", help="history folder (default results/history)")
    hist_add.add_argument("--commit", help="the commit the results measured (default: run.json's git_commit)")
    hist_show = hist_sub.add_parser("show", help="trend figures, steps and HISTORY.md from the filed runs")
    hist_show.add_argument("--history", default="results/history", help="history folder (default results/history)")
    hist_show.add_argument("--out", required=True, help="output folder (HISTORY.md, history.json, figures/)")
    hist_show.add_argument("--normalize", action="store_true",
                           help="scale memory-bound points by the runs' copy bandwidth (else differing runs exit 2)")
    hist_show.add_argument("--margin", type=float, default=0.02,
                           help="smallest step reported, as a fraction (default 0.02)")

    from fastformer_bench import export, gate

    gate.add_arguments(sub.add_parser("gate", help="compare a candidate with a baseline; exit 1 on regression"))
    export.add_arguments(sub.add_parser("export", help="write stored results for other tools (pytest-benchmark, "
                                                        "github-action-benchmark, csv)"))
    return parser


def _thread_setting(text: str) -> int:
    """``run --threads``: the run's one thread count; a list is the threads axis, which has its own option."""
    if "," in text:
        raise argparse.ArgumentTypeError(f"is the run's one thread count, got {text!r}; to measure each point at "
                                         "several thread counts give --threads-axis with that list")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None


def _cmd_run(args) -> int:
    from fastformer_bench import presets
    from fastformer_bench.measure.contention import cpu_mhz
    from fastformer_bench.measure.env import collect_env, machine_roofs
    from fastformer_bench.measure.process import prepare_process
    from fastformer_bench.measure.threads import check_thread_counts, say_threads
    from fastformer_bench.point import Settings
    from fastformer_bench.results import writer_lock
    from fastformer_bench.runner import check_target, run_sweep

    preset = presets.load(args.preset)
    if preset.kind == "probe":
        from fastformer_bench.probe import cli as probe_cli

        return probe_cli.run(args, preset)
    from fastformer_bench.probe.point import OWN

    probe_only = [f"--{name}" for name in OWN
                  if getattr(args, f"axis_{name}", None) is not None]
    if probe_only:
        raise ValueError(f"{', '.join(probe_only)} apply to probe presets only (probe-quick, probe).")
    overrides = axes.overrides(args)
    settings = Settings(**preset.settings)
    changes = {k: getattr(args, k) for k in ("threads", "min_time_s", "time_limit_s") if getattr(args, k) is not None}
    if args.no_flops:
        changes["count_flops"] = False
    if changes:
        settings = Settings(**{**settings.__dict__, **changes})
    problems, skipped = presets.expand(preset, overrides)
    options = _executor_options(args)
    if options is not None:
        # the jobs' nodes may have more cores than this one: a point with too many threads is refused there
        return _cmd_run_sharded(args, options, preset, settings, problems, skipped)
    check_thread_counts([settings.threads, *(p.threads for p in problems)])
    # The directory first: a run refused there must not claim a CPU or measure anything.
    with writer_lock(args.out):
        check_target(args.out, args.resume)
        _refuse_while_jobs_run(args.out)
        # An oversized CPU allocation must fail as out-of-memory in the process that makes it; isolated points
        # are capped in their own worker.
        cap = not args.isolate and all(p.device == "cpu" for p in problems)
        applied = prepare_process(settings.threads, pin_cpus=settings.pin_cpus, cap_memory=cap,
                                  cpus=max((p.threads or 1 for p in problems), default=1))
        threads = applied["threads"]
        say_threads(problems, threads, applied["cpu_affinity"])
        settings = Settings(**{**settings.__dict__, "threads": threads})
        started = time.time()
        env = collect_env(threads=threads, argv=sys.argv)
        env["started_at"] = _utc(started)
        env.update({k: applied[k] for k in ("threads", "allocator", "cpu_affinity")})
        env.update(machine_roofs(problems, threads))
        env["cpu_mhz"] = cpu_mhz()
        run_sweep(problems, settings, args.out, preset=preset.name, resume=args.resume, isolate=args.isolate,
                  env=env, progress=not args.no_progress)
        # The machine's state at the end too: a run whose bandwidth moved while it measured is visible as such.
        end = machine_roofs(problems, threads)
        # and how long this session took, roofs included (a study's cost, for whoever runs it next)
        ended = time.time()
        _record_end_state(args.out, {"copy_bytes_per_s_end": end["copy_bytes_per_s"], "roofs_end": end["roofs"],
                                     "cpu_mhz_end": cpu_mhz(), "ended_at": _utc(ended),
                                     "wall_s": round(ended - started, 1)})
    # The whole directory, not this session's share: a resumed run still reports (and fails on) earlier points.
    wanted = {p.point_id for p in problems}
    records = [r for r in read_store(args.out) if r["point_id"] in wanted]
    _print_table(records, skipped)
    return 1 if any(r["status"] == "incorrect" for r in records) else 0


def _refuse_while_jobs_run(out: str) -> None:
    """A run in this process must not measure points that cluster jobs are measuring into the same directory."""
    from fastformer_bench.cluster.state import STATE_FILE, running_submission

    if (Path(out) / STATE_FILE).exists():
        entry = running_submission(out)
        if entry is not None:
            raise ValueError(f"{out} has {entry['executor']} jobs still running ({', '.join(entry['jobs'])}); "
                             f"wait for them with --resume --executor {entry['executor']}, or scancel them first.")


def _executor_options(args):
    """The cluster options of ``run`` (None for a run in this process); ValueError for a wrong combination."""
    from fastformer_bench.cluster.submit import ExecutorOptions, parse_slurm_options, preflight

    given = [name for name in ("partition", "jobs", "gpus_per_job", "time_min") if getattr(args, name) is not None]
    if args.executor is None:
        if given or args.slurm_option:
            first = (given or ["slurm_option"])[0].replace("_", "-")
            raise ValueError(f"--{first} applies to a cluster run: add --executor slurm (or local).")
        return None
    chosen = {name: getattr(args, name) for name in given}
    options = ExecutorOptions(executor=args.executor, slurm_options=parse_slurm_options(args.slurm_option), **chosen)
    preflight(options)  # before the directory is touched or anything is submitted
    return options


def _cmd_run_sharded(args, options, preset, settings, problems, skipped) -> int:
    from fastformer_bench.cluster.submit import run_sharded
    from fastformer_bench.measure.env import collect_env
    from fastformer_bench.results import read_run, writer_lock
    from fastformer_bench.runner import check_resumable, check_target, new_run_id

    if settings.threads is None:
        raise ValueError("a cluster run needs a thread count per job: set threads in the preset or pass --threads.")
    with writer_lock(args.out):
        check_target(args.out, args.resume)
        previous = read_run(args.out) if args.resume else {}
        if args.resume:
            check_resumable(args.out, previous, preset.name, settings)
        run_id = previous.get("run_id") or new_run_id(preset.name)
        if not previous.get("settings"):
            # Written before anything is submitted: a resume must be able to prove it measures the same way.
            # The measuring machines' environments are added per host as their jobs start (cluster.submit).
            write_json_atomic(Path(args.out) / RUN_FILE, {
                "run_id": run_id, "preset": preset.name, "settings": asdict(settings),
                "settings_hash": settings.digest, "executor": options.executor,
                "submitter": collect_env(threads=settings.threads, argv=sys.argv)})
        summary = run_sharded(problems, settings, args.out, preset=preset.name, run_id=run_id, options=options,
                              isolate=args.isolate, argv=sys.argv, progress=not args.no_progress)
    wanted = {p.point_id for p in problems}
    records = [r for r in read_store(args.out) if r["point_id"] in wanted]
    _print_table(records, skipped)
    for killed in summary["killed"]:
        print(f"fastformer-bench: job {killed['job']} stopped ({killed['reason']}) with {len(killed['unmeasured'])} "
              f"point(s) unmeasured: {', '.join(killed['unmeasured'])}; run again with --resume to measure them.",
              file=sys.stderr)
    failed = summary["killed"] or any(r["status"] == "incorrect" for r in records)
    return 1 if failed else 0


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_end_state(out: str, state: dict) -> None:
    from fastformer_bench.results import read_run

    run = read_run(out)
    if run.get("resumed_sessions"):
        run["resumed_sessions"][-1].update(state)  # this session's end, beside its own start
    else:
        run.update(state)
    write_json_atomic(Path(out) / RUN_FILE, run)


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


def _cmd_list(args) -> int:
    from fastformer_bench import impls, presets

    if args.preset:
        preset = presets.load(args.preset)
        problems, skipped = presets.expand(preset)
        if preset.kind == "probe":
            for p in problems:
                print(f"{p.point_id}  {p.label}")
            return 0
        for p in problems:
            threads = "" if p.threads is None else f" threads={p.threads}"  # None: the run's setting
            print(f"{p.point_id}  {p.impl:14s} {p.device} {p.dtype:8s} {p.mode:7s} {p.scope:5s} B={p.batch} "
                  f"N={p.seq_len} D={p.width} H={p.heads} C={p.columns} masked={p.masked}{threads}")
        for p, reason in skipped:
            print(f"skipped {p.impl} C={p.columns}: {reason}")
        return 0
    import torch

    print("implementations:")
    for name in impls.names():
        impl = impls.get(name)
        reason = impl.unsupported_reason("cpu", torch.float32)
        where = "cpu: yes" if reason is None else f"cpu: no ({reason})"
        print(f"  {name:14s} {impl.family:8s} {impl.description}  [{where}]")
    print("presets:")
    for name in presets.names():
        print(f"  {name:12s} {presets.load(name).description}")
    return 0


def _cmd_history(args) -> int:
    if args.history_command == "add":
        from fastformer_bench import history

        print(f"filed {history.add(args.results, args.history, commit=args.commit)}")
        return 0
    if not 0 <= args.margin < 1:
        raise ValueError(f"--margin is a fraction in [0, 1), got {args.margin:g}.")
    from fastformer_bench import history as history_report

    summary = history_report.show(args.history, args.out, normalize=args.normalize, margin=args.margin)
    for machine in summary["machines"]:
        print(f"{machine['machine']}: {machine['runs']} runs, {len(machine['steps'])} step(s)")
        for step in machine["steps"]:
            print(f"  {step['point']}: {step['ratio']:.3f}x [{step['ci_low']:.3f}-{step['ci_high']:.3f}] "
                  f"from {step['commit'][:12]}")
    return 0


def _cmd_env(args) -> int:
    from fastformer_bench.measure.env import collect_env

    print(json.dumps(collect_env(argv=sys.argv), indent=2, sort_keys=True, default=str))
    return 0


def _cmd_report(args) -> int:
    from fastformer_bench.report import build_report

    build_report(args.results, args.out, include_contended=args.include_contended)
    print(f"report written to {args.out}/REPORT.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from fastformer_bench import export, gate

        handler = {"run": _cmd_run, "list": _cmd_list, "env": _cmd_env, "report": _cmd_report, "gate": gate.main,
                   "history": _cmd_history,
                   "export": export.main}[args.command]
        with _sigterm_stops_like_ctrl_c():
            return handler(args)
    except UsageError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2
    except ValueError as exc:  # bad preset, axis value, results file: the request is wrong
        print(f"fastformer-bench: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable --out, a file where a directory should be
        print(f"fastformer-bench: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how, code = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"fastformer-bench: {how}; finished points are saved (use --resume to continue).", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
