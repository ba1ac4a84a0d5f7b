"""Rewrites README.md's "Results at a glance" block (between <!-- glance:start --> and <!-- glance:end -->) from the
committed reports' summary.json. From the repository root, with fastformer_bench installed:

    python scripts/readme_glance.py          # rewrite the block
    python scripts/readme_glance.py --check  # exit 1 if the block is not what the reports say
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastformer_bench.report import glance

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the block is up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = glance.current(ROOT) != glance.block(ROOT)
        print("README.md's glance block is " + ("stale: run python scripts/readme_glance.py" if stale else
                                                 "up to date"))
        return 1 if stale else 0
    print("README.md rewritten" if glance.write_readme(ROOT) else "README.md already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
