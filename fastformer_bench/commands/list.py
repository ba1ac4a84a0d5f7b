"""`fastformer-bench list [--preset P]`: the implementations and presets, or one preset's points."""

from __future__ import annotations

import argparse

NAME = "list"
HELP = "list implementations and presets (or a preset's points)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="list this preset's points instead")


def main(args: argparse.Namespace) -> int:
    from fastformer_bench import presets

    if args.preset:
        _points(presets.load(args.preset))
        return 0
    import torch

    from fastformer_bench import impls

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


def _points(preset) -> None:
    from fastformer_bench import presets

    problems, skipped = presets.expand(preset)
    if preset.kind == "probe":
        for p in problems:
            print(f"{p.point_id}  {p.label}")
        return
    for p in problems:
        threads = "" if p.threads is None else f" threads={p.threads}"  # None: the run's setting
        print(f"{p.point_id}  {p.impl:14s} {p.device} {p.dtype:8s} {p.mode:7s} {p.scope:5s} B={p.batch} "
              f"N={p.seq_len} D={p.width} H={p.heads} C={p.columns} masked={p.masked}{threads}")
    for p, reason in skipped:
        print(f"skipped {p.impl} C={p.columns}: {reason}")
