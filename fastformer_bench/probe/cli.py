"""`fastformer-bench run --preset probe-quick|probe`: the probe's side of the run command."""

from __future__ import annotations

import argparse
import sys

from fastformer_bench import axes
from fastformer_bench.probe.point import BY_NAME, NAMES, OWN, ProbeSettings, expand, overrides


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """``--task``, ``--mixer`` ... for the axes only probe points have (the shared ones exist already)."""
    for name in OWN:
        axis = BY_NAME[name]
        parser.add_argument(axis.flag, dest=f"axis_{name}", metavar="V[,V...]",
                            help=f"probe presets: override the {name} axis: {axis.help} (comma-separated)")


def run(args: argparse.Namespace, preset) -> int:
    """Train the preset's points into ``args.out``; exit 1 if a point raised (a broken probe), else 0."""
    from fastformer_bench.measure.env import collect_env
    from fastformer_bench.probe.runner import run_probe

    speed_only = [axes.get(name).flag for name in axes.NAMES
                  if name not in NAMES and getattr(args, f"axis_{name}", None) is not None]
    speed_only += [flag for flag, given in (("--min-time", args.min_time_s), ("--isolate", args.isolate),
                                            ("--no-flops", args.no_flops),
                                            ("--executor", getattr(args, "executor", None))) if given]
    if speed_only:
        raise ValueError(f"{', '.join(speed_only)} apply to speed presets, not to the probe preset {preset.name!r}.")
    changes = {k: v for k, v in (("threads", args.threads), ("time_limit_s", args.time_limit_s)) if v is not None}
    settings = ProbeSettings(**{**preset.settings, **changes})
    points = expand(preset.grids, overrides(args))
    env = collect_env(threads=settings.threads, argv=sys.argv)
    records = run_probe(points, settings, args.out, preset=preset.name, resume=args.resume, env=env,
                        progress=not args.no_progress)
    failed = [r for r in records if r["status"] != "ok"]
    print(f"{len(records)} probe points trained into {args.out}, {len(failed)} not ok")
    return 1 if any(r["status"] == "error" for r in records) else 0
