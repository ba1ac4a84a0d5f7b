"""``run``: a preset's points into a results directory, the one entry point of a run from the shell (the ``run``
command parses its options and calls it) and from Python.

It loads the preset, applies the axis overrides, builds and checks the settings (presets.settings_for), then
measures in this process (the process set up here, then runner.run_sweep), on cluster jobs
(cluster.submit.run_sharded) or, for a probe preset, trains (probe.runner.run_probe).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from fastformer_bench import axes, presets
from fastformer_bench.results import PROBE, RUN_FILE, read_run, read_store, write_json_atomic, writer_lock

if TYPE_CHECKING:  # pragma: no cover
    from fastformer_bench.cluster.submit import ExecutorOptions
    from fastformer_bench.point import Settings

SPEED = "speed"


@dataclass(frozen=True)
class Outcome:
    """What a run left: ``records``, the stored records of the request's points (a resumed speed run's earlier
    ones too; a probe run's of this session), the combinations the preset skipped, and the cluster jobs that
    stopped before measuring all their points (``killed``: job, reason, unmeasured point ids)."""

    kind: str
    records: list[dict]
    skipped: list = field(default_factory=list)
    killed: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether a check failed (the CLI's exit 1): an incorrect point or a job stopped early; a probe point
        that raised."""
        if self.kind == PROBE:
            return any(r["status"] == "error" for r in self.records)
        return bool(self.killed) or any(r["status"] == "incorrect" for r in self.records)


def run(preset: str | presets.Preset, out: str | os.PathLike, *,
        overrides: Mapping[str, Sequence | str] | None = None, settings: Mapping[str, object] | None = None,
        resume: bool = False, isolate: bool = False, executor: ExecutorOptions | None = None,
        progress: bool = True) -> Outcome:
    """Run ``preset`` (a name, a TOML path or a loaded Preset) into ``out``; ValueError (one sentence) for a
    request that cannot mean anything, before anything is measured or written.

    ``overrides``: axis -> values replacing that axis in every grid (a list, or the command line's
    comma-separated text); ``settings``: setting -> value in place of the preset's (None: the preset's);
    ``resume`` continues ``out`` under the same settings; ``isolate`` measures each point in its own process;
    ``executor`` submits the points as cluster jobs instead of measuring here. Measuring here sets the calling
    process up as the command line's does (thread count, a claimed CPU where the preset pins, a memory cap).
    """
    preset = preset if isinstance(preset, presets.Preset) else presets.load(preset)
    changes = {key: value for key, value in (settings or {}).items() if value is not None}
    overrides = dict(overrides or {})
    _refuse_other_kind(preset, overrides, changes, isolate, executor)
    parsed = _parsed(preset, overrides)
    chosen = presets.settings_for(preset, **changes)
    problems, skipped = presets.expand(preset, parsed)
    if preset.kind == PROBE:
        from fastformer_bench.measure.env import collect_env
        from fastformer_bench.probe.runner import run_probe

        env = collect_env(threads=chosen.threads, argv=sys.argv)
        return Outcome(PROBE, run_probe(problems, chosen, str(out), preset=preset.name, resume=resume, env=env,
                                        progress=progress))
    killed = []
    if executor is not None:
        from fastformer_bench.cluster.submit import preflight, run_sharded

        preflight(executor)  # before the directory is touched or anything is submitted
        killed = run_sharded(problems, chosen, out, preset=preset.name, options=executor, resume=resume,
                             isolate=isolate, progress=progress)["killed"]
    else:
        _measure_here(problems, chosen, out, preset=preset.name, resume=resume, isolate=isolate, progress=progress)
    # The whole directory, not this session's share: a resumed run still reports (and fails on) earlier points.
    wanted = {p.point_id for p in problems}
    return Outcome(SPEED, [r for r in read_store(out) if r["point_id"] in wanted], skipped, killed)


def _refuse_other_kind(preset: presets.Preset, overrides: Mapping, changes: Mapping, isolate: bool,
                       executor: ExecutorOptions | None) -> None:
    """ValueError naming (by their command-line flags) the options that apply to the other kind of preset."""
    from fastformer_bench.probe import point as probe

    if preset.kind == PROBE:
        wrong = [axes.get(name).flag for name in axes.NAMES if name in overrides and name not in probe.NAMES]
        wrong += [flag for flag, given in (("--min-time", "min_time_s" in changes), ("--isolate", isolate),
                                           ("--no-flops", "count_flops" in changes),
                                           ("--executor", executor is not None)) if given]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} apply to speed presets, not to the probe preset {preset.name!r}.")
    else:
        wrong = [probe.BY_NAME[name].flag for name in probe.OWN if name in overrides]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} apply to probe presets only (probe-quick, probe).")


def _parsed(preset: presets.Preset, overrides: Mapping[str, Sequence | str]) -> dict[str, list]:
    """The overrides as lists of values, text parsed by the preset's axis of that name (ValueError if malformed)."""
    from fastformer_bench.probe import point as probe

    table = probe.BY_NAME if preset.kind == PROBE else axes.BY_NAME
    unknown = [name for name in overrides if name not in table]
    if unknown:
        raise ValueError(f"unknown axis {unknown[0]!r}; known: {', '.join(table)}.")
    return {name: table[name].parse(value) if isinstance(value, str) else list(value)
            for name, value in overrides.items()}


def _measure_here(problems: list, settings: Settings, out: str | os.PathLike, *, preset: str, resume: bool,
                  isolate: bool, progress: bool) -> None:
    """Set this process up (threads, CPU claim, memory cap) and measure ``problems`` into ``out`` here, with the
    machine's state at the start and the end of the session in run.json."""
    from fastformer_bench.measure.contention import cpu_mhz
    from fastformer_bench.measure.env import collect_env, machine_roofs
    from fastformer_bench.measure.process import prepare_process
    from fastformer_bench.measure.threads import check_thread_counts, say_threads
    from fastformer_bench.runner import check_target, run_sweep

    check_thread_counts([settings.threads, *(p.threads for p in problems)])
    # The directory first: a run refused there must not claim a CPU or measure anything.
    with writer_lock(out):
        check_target(out, resume)
        _refuse_while_jobs_run(out)
        # An oversized CPU allocation must fail as out-of-memory in the process that makes it; isolated points
        # are capped in their own worker.
        cap = not isolate and all(p.device == "cpu" for p in problems)
        applied = prepare_process(settings.threads, pin_cpus=settings.pin_cpus, cap_memory=cap,
                                  cpus=max((p.threads or 1 for p in problems), default=1))
        threads = applied["threads"]
        say_threads(problems, threads, applied["cpu_affinity"])
        settings = replace(settings, threads=threads)
        started = time.time()
        env = collect_env(threads=threads, argv=sys.argv)
        env["started_at"] = _utc(started)
        env.update({k: applied[k] for k in ("threads", "allocator", "cpu_affinity")})
        env.update(machine_roofs(problems, threads))
        env["cpu_mhz"] = cpu_mhz()
        run_sweep(problems, settings, out, preset=preset, resume=resume, isolate=isolate, env=env,
                  progress=progress)
        # The machine's state at the end too: a run whose bandwidth moved while it measured is visible as such.
        end = machine_roofs(problems, threads)
        # and how long this session took, roofs included (a study's cost, for whoever runs it next)
        ended = time.time()
        _record_end_state(out, {"copy_bytes_per_s_end": end["copy_bytes_per_s"], "roofs_end": end["roofs"],
                                "cpu_mhz_end": cpu_mhz(), "ended_at": _utc(ended),
                                "wall_s": round(ended - started, 1)})


def _refuse_while_jobs_run(out: str | os.PathLike) -> None:
    """A run in this process must not measure points that cluster jobs are measuring into the same directory."""
    from fastformer_bench.cluster.state import STATE_FILE, running_submission

    if (Path(out) / STATE_FILE).exists():
        entry = running_submission(out)
        if entry is not None:
            raise ValueError(f"{out} has {entry['executor']} jobs still running ({', '.join(entry['jobs'])}); "
                             f"wait for them with --resume --executor {entry['executor']}, or scancel them first.")


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_end_state(out: str | os.PathLike, state: dict) -> None:
    run = read_run(out)
    if run.get("resumed_sessions"):
        run["resumed_sessions"][-1].update(state)  # this session's end, beside its own start
    else:
        run.update(state)
    write_json_atomic(Path(out) / RUN_FILE, run)
