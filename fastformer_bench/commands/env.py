"""`fastformer-bench env`: print the environment record (run.json's contents) as JSON."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "env"
HELP = "print the environment record (run.json's contents) as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def main(args: argparse.Namespace) -> int:
    from fastformer_bench.measure.env import collect_env

    print(json.dumps(collect_env(argv=sys.argv), indent=2, sort_keys=True, default=str))
    return 0
