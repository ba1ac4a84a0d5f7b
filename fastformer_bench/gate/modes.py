"""The gate's three modes, each from the parsed command line to both sides' pooled points and a table title.

A/B wall time (``--baseline-rev``: ab), stored baseline (``--baseline-results``: stored), instruction counts
(``--instructions``: instructions). What they share is how the request becomes points: the preset with the
command line's axis overrides (axes.overrides) and the implementations, paired by position.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fastformer_bench import axes
from fastformer_bench.gate import ab, compare, instructions, stored
from fastformer_bench.gate.sides import worktree

#: the axes a gate overrides; not the implementation, which --impl/--candidate-impl choose per side
RUN_AXES = axes.names(axes.SLICE, axes.METHOD, axes.SHAPE, axes.LENGTH, axes.SEED)
WALL_PRESET, INSTRUCTION_PRESET = "gate", "gate-instructions"
Names = list[str] | None  # implementations (None: the preset's)
Pairs = list[tuple[str, str]] | None  # (baseline, candidate) implementations compared with each other
Sides = tuple[dict, dict, str]  # baseline and candidate points (compare.pool), the table's title


def impls(args: argparse.Namespace) -> tuple[Names, Names, Pairs]:
    """The baseline's and the candidate's implementations, and their (baseline, candidate) pairs if they differ."""
    base = [s.strip() for s in args.impl.split(",")] if args.impl else None
    cand = [s.strip() for s in args.candidate_impl.split(",")] if args.candidate_impl else None
    if cand is None:
        return base, base, None
    if base is None or len(base) != len(cand):
        raise ValueError("--candidate-impl needs --impl with as many implementations (paired by position).")
    # a pair named twice is one comparison: measured twice, it would be two sessions' samples under one key
    return sorted(set(base), key=base.index), sorted(set(cand), key=cand.index), list(dict.fromkeys(zip(base, cand)))


def _preset_path(name: str) -> str:
    from fastformer_bench import presets

    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return str(path.resolve())
    presets.load(name)  # ValueError (exit 2) for an unknown name
    # A path, so a baseline revision older than the preset still measures the same points.
    return str(presets.HERE / f"{name}.toml")


def _run_args(args, preset: str, impls: list[str] | None) -> list[str]:
    out = ["--preset", _preset_path(preset)]
    for name in RUN_AXES:
        value = getattr(args, f"axis_{name}")
        if value is not None:
            out += [axes.get(name).flag, value]
    if impls:
        out += ["--impl", ",".join(impls)]
    if args.min_time is not None:
        out += ["--min-time", str(args.min_time)]
    return out


def _problems(args, preset_name: str, impls: list[str] | None) -> tuple[list, dict]:
    """The preset's Problems with the command line's axis overrides, and its [settings]. An implementation the
    preset names is measured at its own points (the gate preset times the linear ones at a larger N than the
    quadratic ones); one it does not name (a plugin), at every point of the preset."""
    from fastformer_bench import presets

    overrides = axes.overrides(args)
    preset = presets.load(preset_name)
    problems, _ = presets.expand(preset, overrides)
    if impls:
        named = {p.impl for p in problems}
        problems = [p for p in problems if p.impl in impls]
        others = [name for name in impls if name not in named]
        if others:
            problems += presets.expand(preset, {**overrides, "impl": others})[0]
        problems.sort(key=lambda p: impls.index(p.impl))
    settings = dict(preset.settings)
    if args.min_time is not None:
        settings["min_time_s"] = args.min_time
    from fastformer_bench.measure.threads import check_thread_counts

    check_thread_counts([settings.get("threads"), *(p.threads for p in problems)])  # as `run` refuses them
    return problems, settings


def _points(problems: list, pairs: list[tuple[str, str]] | None) -> list[dict[str, dict]]:
    if pairs is None:
        return [{"baseline": p.params(), "candidate": p.params()} for p in problems]
    return [{"baseline": p.params(), "candidate": p.with_(impl=cand).params(), "pair": compare.pair_key(base, cand)}
            for p in problems for base, cand in pairs if p.impl == base]


#: follow-up rounds run in steps of this many, each step deciding again which points stay open
FOLLOW_UP_STEP = 4


def wall_ab(args: argparse.Namespace, repo: Path, base_impls: Names, cand_impls: Names,
            pairs: Pairs) -> Sides:
    """Both revisions measured now, sample by sample in turn (ab.interleaved), in --rounds pairs of processes,
    then follow-up rounds (up to --max-rounds) for the points left undecided (_follow_up)."""
    preset = args.preset or WALL_PRESET
    problems, settings = _problems(args, preset, base_impls)
    points = _points(problems, pairs)
    with worktree(repo, args.baseline_rev) as base_tree, tempfile.TemporaryDirectory() as tmp:
        trees = {"baseline": base_tree, "candidate": repo}
        cpus = ab.claim_for(trees, points, settings)
        found = ab.interleaved(trees, points, settings, args.rounds, Path(tmp) / "rounds", cpus=cpus,
                               warmup=args.warmup_rounds)
        followed = _follow_up(args, trees, points, pairs, settings, found, Path(tmp), cpus)
    clocks = sorted({r["clock"] for side in found.values() for rnd in side for r in rnd if r.get("samples")})
    title = (f"A/B time ({', '.join(clocks) or 'wall'} clock): {args.baseline_rev} vs {repo} ({args.rounds} rounds, "
             f"preset {preset})")
    if args.warmup_rounds:
        title += f"; {args.warmup_rounds} warm-up rounds before them, not counted"
    if followed:
        title += (f"; undecided after them, so measured in {max(followed.values())} more rounds (up to "
                  f"--max-rounds {args.max_rounds}): {', '.join(followed)}")
    return compare.pool(found["baseline"]), compare.pool(found["candidate"]), title


def _follow_up(args: argparse.Namespace, trees: dict[str, Path], points: list[dict[str, dict]], pairs: Pairs,
               settings: dict, found: dict[str, list[list[dict]]], workdir: Path,
               cpus: set[int] | None) -> dict[str, int]:
    """More rounds, only for the points the rounds so far left undecided (compare.undecided: measured slower than
    the margin, not flagged), FOLLOW_UP_STEP at a time and re-decided after each step, until none is open or the
    point has --max-rounds; ``found`` grows by those rounds. Returns {row label: follow-up rounds}.

    Why: a round's ratio carries its processes' layout luck (SD 2.6-3.6 % for eager at N = 4096 on the 2-core
    VM), so at 12 rounds a true 5 % slowdown measured 1.036-1.041 with an interval reaching 1.010-1.016 in 3 of 20
    self-test gates, and passed. Measuring every point 24 times would double every gate; only an open point costs
    more rounds. An unchanged point opens with a probability of about 1 % (its ratio must come out above 1 +
    margin) and is flagged only if its interval then lies above the margin too, with twice the rounds."""
    followed: dict[str, int] = {}
    # each point's row label, from its records of the first round (the rows compare() gives carry no index)
    labels = [compare.row_label(base, cand) for base, cand in zip(found["baseline"][0], found["candidate"][0])]
    done = args.rounds
    while done < args.max_rounds:
        rows = compare.compare(compare.pool(found["baseline"]), compare.pool(found["candidate"]), pairs=pairs,
                               margin=args.margin, alpha=args.alpha)
        still = {r.label for r in rows if compare.undecided(r, args.margin)}
        open_points = [i for i, label in enumerate(labels) if label in still]
        if not open_points:
            break
        step = min(FOLLOW_UP_STEP, args.max_rounds - done)
        more = ab.interleaved(trees, [points[i] for i in open_points], settings, step,
                              workdir / f"follow-up{done}", cpus=cpus, check=False, label="follow-up round")
        for name in trees:
            found[name].extend(more[name])
        for i in open_points:
            followed[labels[i]] = followed.get(labels[i], 0) + step
        done += step
    return followed


def stored_baseline(args: argparse.Namespace, repo: Path, base_impls: Names, cand_impls: Names,
                    pairs: Pairs) -> Sides:
    """Stored results vs stored or now-measured ones; refused (ValueError) unless their fingerprints match."""
    base_run, base_records = stored.load(args.baseline_results)
    if args.candidate_results:
        cand_run, cand_records = stored.load(args.candidate_results)
        where = args.candidate_results
    else:
        preset = args.preset or base_run.get("preset") or WALL_PRESET
        with tempfile.TemporaryDirectory() as tmp:
            cand_records = stored.run_side(repo, Path(tmp) / "candidate", _run_args(args, preset, cand_impls))
            cand_run = stored.load(Path(tmp) / "candidate")[0]
        where = f"{repo} (measured now)"
    stored.check_comparable(args.baseline_results, base_run, base_records, cand_run, cand_records)
    ratios = stored.bandwidth_ratios(args.baseline_results, base_run, cand_run,
                                     {r["device"] for r in base_records + cand_records}, args.normalize)
    base_records, cand_records = stored.without_contended(base_records), stored.without_contended(cand_records)
    if base_impls:
        base_records = [r for r in base_records if r["impl"] in base_impls]
    title = f"stored baseline {args.baseline_results} vs {where}"
    if args.normalize:
        cand_records, scaled = stored.normalized(cand_records, ratios)
        if scaled:
            title += (f"; memory-bound candidate points scaled by the copy-bandwidth ratio "
                      f"({', '.join(f'{d} {r:.3g}' for d, r in sorted(ratios.items()))}): {', '.join(scaled)}")
    return compare.pool([base_records]), compare.pool([cand_records]), title


def _countable(args, impls: list[str] | None) -> list[dict]:
    """The points callgrind can count: CPU implementations that do not compile (the others are named and left)."""
    import torch

    from fastformer_bench import impls as registry

    kept = []
    for p in _problems(args, args.preset or INSTRUCTION_PRESET, impls)[0]:
        impl = registry.get(p.impl)
        if p.device != "cpu" or impl.compiles or impl.unsupported_reason("cpu", torch.float32) is not None:
            print(f"gate: {p.impl} {p.device} skipped: instruction counts are for CPU implementations that do not "
                  "compile", file=sys.stderr)
            continue
        if (p.threads or 1) != 1:
            print(f"gate: {p.impl} at {p.threads} threads skipped: instruction counts run one thread",
                  file=sys.stderr)
            continue
        # without the axis: the worker runs one thread anyway, and a baseline older than the axis reads these
        kept.append({k: v for k, v in p.params().items() if k != "threads"})
    return kept


def instruction_counts(args: argparse.Namespace, repo: Path, base_impls: Names, cand_impls: Names,
                       pairs: Pairs) -> Sides:
    """Instructions per call of both revisions under callgrind, the two valgrind runs side by side."""
    missing = instructions.valgrind_missing()
    if missing:
        raise ValueError(f"--instructions needs valgrind: {missing}.")
    if not args.baseline_rev:
        raise ValueError("--instructions compares two revisions measured now: give --baseline-rev.")
    problems = {"baseline": _countable(args, base_impls), "candidate": _countable(args, cand_impls)}
    with worktree(repo, args.baseline_rev) as base_tree:
        found = instructions.count_instructions({"baseline": base_tree, "candidate": repo}, problems,
                                                calls=args.calls, layouts=args.layouts)
    title = f"instructions per call (callgrind): {args.baseline_rev} vs {repo}"
    return compare.pool([found["baseline"]]), compare.pool([found["candidate"]]), title


#: by the name the gate's JSON report gives its mode
MODES = {"wall_ab": wall_ab, "stored": stored_baseline, "instructions": instruction_counts}
