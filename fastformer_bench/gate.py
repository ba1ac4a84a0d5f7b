"""`fastformer-bench gate`: compare a candidate with a baseline; exit 1 on a regression or an incorrect point.

Modes: A/B (``--baseline-rev``: both measured now, interleaved; gate_ab), stored (``--baseline-results``:
refused unless the fingerprints match; gate_stored), instruction counts (``--instructions``: callgrind, A/B;
gate_instructions). Statistics in gate_stats, pairing and verdicts in gate_compare, output in gate_table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from fastformer_bench import gate_ab, gate_compare, gate_instructions, gate_stats, gate_stored, gate_table

RUN_AXES = ("seq_len", "width", "heads", "batch", "columns", "dtype", "device", "mode", "scope", "masked")
WALL_PRESET, INSTRUCTION_PRESET = "gate", "gate-instructions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The gate's options, on the subparser cli.build_parser gives it."""
    base = parser.add_argument_group("baseline (one of)")
    base.add_argument("--baseline-rev", metavar="REV", help="A/B: measure this git revision now, in a worktree")
    base.add_argument("--baseline-results", metavar="DIR", help="a stored results directory (same fingerprint)")
    parser.add_argument("--candidate-results", metavar="DIR",
                        help="with --baseline-results: stored candidate results (default: measure this tree now)")
    parser.add_argument("--instructions", action="store_true",
                        help="compare callgrind instruction counts (CPU, deterministic) instead of wall time")
    parser.add_argument("--preset", help=f"points to measure (default: {WALL_PRESET}; {INSTRUCTION_PRESET} with "
                                         "--instructions; a stored baseline's own preset)")
    parser.add_argument("--impl", metavar="I[,I...]", help="implementations to measure (the baseline side)")
    parser.add_argument("--candidate-impl", metavar="I[,I...]",
                        help="the candidate measures these instead, paired by position with --impl")
    for axis in RUN_AXES:
        parser.add_argument(f"--{axis.replace('_', '-')}", dest=f"axis_{axis}", metavar="V[,V...]",
                            help=f"override the preset's {axis} axis")
    parser.add_argument("--rounds", type=int, default=4, help="A/B rounds, each a fresh pair of processes (default 4)")
    parser.add_argument("--min-time", type=float, help="seconds of samples per point, side and round (default: "
                                                        "the preset's min_time_s, in its min_samples samples)")
    parser.add_argument("--threshold", type=float, default=gate_stats.DEFAULT_THRESHOLD,
                        help="slowdown ratio that, when significant, is a regression (default 1.10)")
    parser.add_argument("--alpha", type=float, default=gate_stats.DEFAULT_ALPHA,
                        help="significance level of the one-sided Mann-Whitney U test (default 0.05)")
    parser.add_argument("--instr-threshold", type=float, default=gate_stats.DEFAULT_INSTRUCTION_PERCENT,
                        metavar="PERCENT", help="instruction-count increase that is a regression (default 1)")
    parser.add_argument("--calls", type=int, default=50, help="calls per counted region (--instructions)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    parser.add_argument("--json", metavar="FILE", help="also write every compared point as JSON")
    parser.add_argument("--repo", metavar="DIR", help="the candidate tree and git repository (default: this one)")


def _impls(args) -> tuple[list[str] | None, list[str] | None, list[tuple[str, str]] | None]:
    base = [s.strip() for s in args.impl.split(",")] if args.impl else None
    cand = [s.strip() for s in args.candidate_impl.split(",")] if args.candidate_impl else None
    if cand is None:
        return base, base, None
    if base is None or len(base) != len(cand):
        raise ValueError("--candidate-impl needs --impl with as many implementations (paired by position).")
    return sorted(set(base), key=base.index), sorted(set(cand), key=cand.index), list(zip(base, cand))


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
    for axis in RUN_AXES:
        value = getattr(args, f"axis_{axis}")
        if value is not None:
            out += [f"--{axis.replace('_', '-')}", value]
    if impls:
        out += ["--impl", ",".join(impls)]
    if args.min_time is not None:
        out += ["--min-time", str(args.min_time)]
    return out


def _problems(args, preset_name: str, impls: list[str] | None) -> tuple[list, dict]:
    """The preset's Problems with the command line's axis overrides, and its [settings]."""
    from fastformer_bench import presets
    from fastformer_bench.cli import _parse_axis

    overrides = {axis: _parse_axis(axis, getattr(args, f"axis_{axis}")) for axis in RUN_AXES
                 if getattr(args, f"axis_{axis}") is not None}
    if impls:
        overrides["impl"] = impls
    preset = presets.load(preset_name)
    problems, _ = presets.expand(preset, overrides)
    settings = dict(preset.settings)
    if args.min_time is not None:
        settings["min_time_s"] = args.min_time
    return problems, settings


def _points(problems: list, pairs: list[tuple[str, str]] | None) -> list[dict[str, dict]]:
    if pairs is None:
        return [{"baseline": p.params(), "candidate": p.params()} for p in problems]
    return [{"baseline": p.params(), "candidate": p.with_(impl=cand).params()}
            for p in problems for base, cand in pairs if p.impl == base]


def _wall_ab(args, repo: Path, base_impls, cand_impls, pairs) -> tuple[dict, dict, str]:
    preset = args.preset or WALL_PRESET
    problems, settings = _problems(args, preset, base_impls)
    with gate_ab.worktree(repo, args.baseline_rev) as base_tree, tempfile.TemporaryDirectory() as tmp:
        found = gate_ab.interleaved({"baseline": base_tree, "candidate": repo}, _points(problems, pairs), settings,
                                    args.rounds, Path(tmp))
    title = f"A/B wall time: {args.baseline_rev} vs {repo} ({args.rounds} rounds, preset {preset})"
    return gate_compare.pool(found["baseline"]), gate_compare.pool(found["candidate"]), title


def _stored(args, repo: Path, base_impls, cand_impls, pairs) -> tuple[dict, dict, str]:
    base_run, base_records = gate_stored.load(args.baseline_results)
    if args.candidate_results:
        cand_run, cand_records = gate_stored.load(args.candidate_results)
        where = args.candidate_results
    else:
        preset = args.preset or base_run.get("preset") or WALL_PRESET
        with tempfile.TemporaryDirectory() as tmp:
            cand_records = gate_ab.run_side(repo, Path(tmp) / "candidate", _run_args(args, preset, cand_impls))
            cand_run = gate_stored.load(Path(tmp) / "candidate")[0]
        where = f"{repo} (measured now)"
    gate_stored.check_comparable(args.baseline_results, base_run, base_records, cand_run, cand_records)
    if base_impls:
        base_records = [r for r in base_records if r["impl"] in base_impls]
    title = f"stored baseline {args.baseline_results} vs {where}"
    return gate_compare.pool([base_records]), gate_compare.pool([cand_records]), title


def _instruction_problems(args, impls: list[str] | None) -> list[dict]:
    import torch

    from fastformer_bench import impls as registry

    kept = []
    for p in _problems(args, args.preset or INSTRUCTION_PRESET, impls)[0]:
        impl = registry.get(p.impl)
        if p.device != "cpu" or impl.compiles or impl.unsupported_reason("cpu", torch.float32) is not None:
            print(f"gate: {p.impl} {p.device} skipped: instruction counts are for CPU implementations that do not "
                  "compile", file=sys.stderr)
            continue
        kept.append(p.params())
    return kept


def _instructions(args, repo: Path, base_impls, cand_impls, pairs) -> tuple[dict, dict, str]:
    missing = gate_instructions.valgrind_missing()
    if missing:
        raise ValueError(f"--instructions needs valgrind: {missing}.")
    if not args.baseline_rev:
        raise ValueError("--instructions compares two revisions measured now: give --baseline-rev.")
    problems = {"baseline": _instruction_problems(args, base_impls),
                "candidate": _instruction_problems(args, cand_impls)}
    with gate_ab.worktree(repo, args.baseline_rev) as base_tree:
        found = gate_instructions.count_instructions({"baseline": base_tree, "candidate": repo}, problems,
                                                     calls=args.calls)
    title = f"instructions per call (callgrind): {args.baseline_rev} vs {repo}"
    return gate_compare.pool([found["baseline"]]), gate_compare.pool([found["candidate"]]), title


def main(args: argparse.Namespace) -> int:
    """Run the gate the parsed ``args`` describe; 0 pass, 1 regression or incorrect point (2 via ValueError)."""
    started = time.monotonic()
    if bool(args.baseline_rev) == bool(args.baseline_results):
        raise ValueError("gate needs exactly one baseline: --baseline-rev REV or --baseline-results DIR.")
    if args.candidate_results and not args.baseline_results:
        raise ValueError("--candidate-results goes with --baseline-results.")
    if not args.threshold > 1:
        raise ValueError(f"--threshold is a slowdown ratio and must be > 1, got {args.threshold:g}.")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha is a significance level and must lie in (0, 1), got {args.alpha:g}.")
    if not args.instr_threshold > 0:
        raise ValueError(f"--instr-threshold must be a positive percentage, got {args.instr_threshold:g}.")
    repo = Path(args.repo).resolve() if args.repo else gate_ab.package_tree()
    base_impls, cand_impls, pairs = _impls(args)
    if args.baseline_rev:
        gate_ab.resolve_rev(repo, args.baseline_rev)  # a mistyped revision fails before anything is imported
    mode = _instructions if args.instructions else _wall_ab if args.baseline_rev else _stored
    try:
        baseline, candidate, title = mode(args, repo, base_impls, cand_impls, pairs)
    except (gate_ab.GateError, gate_instructions.InstructionError) as exc:
        print(f"fastformer-bench gate: {exc}", file=sys.stderr)
        return 1  # a side that cannot be measured at all fails the check; it is not a wrong request
    rows = gate_compare.compare(baseline, candidate, pairs=pairs, instructions=args.instructions,
                                threshold=args.threshold, alpha=args.alpha, percent=args.instr_threshold)
    failed = [r for r in rows if r.fails]
    compared = [r for r in rows if r.ratio is not None]
    rule = (f"regression: more than {args.instr_threshold:g} % more instructions" if args.instructions else
            f"regression: ratio > {args.threshold:g} and one-sided Mann-Whitney p < {args.alpha:g}; "
            "CI: percentile bootstrap of the ratio of medians")
    verdict = "FAIL" if failed or not compared else "PASS"
    summary = (f"{verdict}: {len(failed)} of {len(rows)} points fail, {len(compared)} compared ({rule}); "
               f"{time.monotonic() - started:.0f} s")
    instructions = bool(args.instructions)
    gate_table.print_table(rows, title, instructions)
    print(summary)
    for path in filter(None, (args.markdown, args.json)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if args.markdown:
        Path(args.markdown).write_text(gate_table.markdown(rows, title, instructions, summary))
    if args.json:
        gate_table.write_json(args.json, rows, {"title": title, "passed": verdict == "PASS", "mode": mode.__name__[1:],
                                                "wall_s": time.monotonic() - started, "summary": summary})
    return 1 if failed or not compared else 0
