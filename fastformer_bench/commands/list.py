"""`fastformer-bench list [--preset P] [--json]`: the implementations and presets, or one preset's points."""

from __future__ import annotations

import argparse
import dataclasses
import json

NAME = "list"
HELP = "list implementations and presets (or a preset's points)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="list this preset's points instead")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def main(args: argparse.Namespace) -> int:
    from fastformer_bench import presets

    listing = _points(presets.load(args.preset)) if args.preset else _catalogue()
    if args.json:
        print(json.dumps(listing, indent=2))
    elif args.preset:
        _print_points(listing)
    else:
        _print_catalogue(listing)
    return 0


def _catalogue() -> dict:
    import torch

    from fastformer_bench import impls, presets

    implementations = []
    for name in impls.names():
        impl = impls.get(name)
        implementations.append({
            "name": name, "family": impl.family, "description": impl.description,
            "complexity": "quadratic" if impl.quadratic else "linear", "compiles": impl.compiles,
            "baseline_rank": impl.baseline_rank,
            # None where it runs on that device, else the sentence saying why not
            "unsupported_reason": {device: impl.unsupported_reason(device, torch.float32)
                                   for device in ("cpu", "cuda")},
        })
    listed = [presets.load(name) for name in presets.names()]
    return {"implementations": implementations,
            "presets": [{"name": p.name, "kind": p.kind, "description": p.description} for p in listed]}


def _print_catalogue(listing: dict) -> None:
    print("implementations:")
    for impl in listing["implementations"]:
        reason = impl["unsupported_reason"]["cpu"]
        where = "cpu: yes" if reason is None else f"cpu: no ({reason})"
        print(f"  {impl['name']:14s} {impl['family']:8s} {impl['description']}  [{where}]")
    print("presets:")
    for preset in listing["presets"]:
        print(f"  {preset['name']:12s} {preset['description']}")


def _points(preset) -> dict:
    from fastformer_bench import presets

    problems, skipped = presets.expand(preset)
    return {"preset": preset.name, "kind": preset.kind,
            "points": [{"point_id": p.point_id, **_label(p), **dataclasses.asdict(p)} for p in problems],
            "skipped": [{**dataclasses.asdict(p), "reason": reason} for p, reason in skipped]}


def _label(problem) -> dict:
    return {"label": problem.label} if hasattr(problem, "label") else {}  # a probe point names itself


def _print_points(listing: dict) -> None:
    for p in listing["points"]:
        if listing["kind"] == "probe":
            print(f"{p['point_id']}  {p['label']}")
            continue
        threads = "" if p["threads"] is None else f" threads={p['threads']}"  # None: the run's setting
        print(f"{p['point_id']}  {p['impl']:14s} {p['device']} {p['dtype']:8s} {p['mode']:7s} {p['scope']:5s} "
              f"B={p['batch']} N={p['seq_len']} D={p['width']} H={p['heads']} C={p['columns']} "
              f"masked={p['masked']}{threads}")
    for p in listing["skipped"]:
        print(f"skipped {p['impl']} C={p['columns']}: {p['reason']}")
