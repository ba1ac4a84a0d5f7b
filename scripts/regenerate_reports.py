"""Rewrites every committed report (reports/<name>) from its committed results (results/<name>), then the README's
"Results at a glance" block from them. From the repository root, with fastformer_bench installed:

    python scripts/regenerate_reports.py            # all of reports/
    python scripts/regenerate_reports.py cpu probe  # some of them
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from fastformer_bench.report import committed, glance

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="reports to rewrite (default: every one under reports/)")
    args = parser.parse_args(argv)
    for name in args.names or committed.names(ROOT):
        # built aside first: a failure leaves the committed report as it was
        with tempfile.TemporaryDirectory() as scratch:
            committed.regenerate(ROOT, name, scratch)
            target = ROOT / "reports" / name
            shutil.rmtree(target, ignore_errors=True)
            for made in sorted(Path(scratch).rglob("*")):
                if made.is_file():
                    (target / made.relative_to(scratch)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(made, target / made.relative_to(scratch))
        print(f"reports/{name}")
    glance.write_readme(ROOT)
    print("README.md (results at a glance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
