"""`fastformer-bench run | list | env | report | history | gate | compare | export` (docs/design.md §5): the parser
assembled from the command modules (fastformer_bench/commands/, one per subcommand), and the exit codes they share.

Exit codes: 0 done; 1 a check failed (an incorrect point, a regression); 2 the request itself is wrong
(one line on stderr, never a traceback); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): finished and held
points are saved either way.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager

from fastformer_bench import __version__
from fastformer_bench.commands import compare, env, export, gate, history, report, run
from fastformer_bench.commands import list as list_

#: every subcommand, in the order --help lists them: a new one is a module in commands/ and a line here
COMMANDS = (run, list_, env, report, history, gate, compare, export)


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
    parser.add_argument("--version", action="version", version=f"fastformer-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handler = {command.NAME: command.main for command in COMMANDS}[args.command]
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
