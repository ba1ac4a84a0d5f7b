"""The command modules (fastformer_bench/commands/): one interface, every one registered, and the `run` command a
thin shell over the Python `sweep.run`, so both make the same records and refuse the same requests."""

from __future__ import annotations

import argparse
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest

from fastformer_bench import cli, commands, sweep
from fastformer_bench.results import read_run, read_store


def test_every_command_module_has_the_one_interface_and_is_registered():
    found = {module.name for module in pkgutil.iter_modules(commands.__path__)}
    registered = [command.__name__.rsplit(".", 1)[-1] for command in cli.COMMANDS]
    # a module left out of cli.COMMANDS is a subcommand nobody can call
    assert sorted(registered) == sorted(found) and len(set(registered)) == len(registered)
    for command in cli.COMMANDS:
        assert command.NAME == command.__name__.rsplit(".", 1)[-1]
        assert isinstance(command.HELP, str) and command.HELP
        assert list(inspect.signature(command.add_arguments).parameters) == ["parser"]
        assert list(inspect.signature(command.main).parameters) == ["args"]
    subparsers = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == [command.NAME for command in cli.COMMANDS]
    helps = {action.dest: action.help for action in subparsers._choices_actions}
    assert helps == {command.NAME: command.HELP for command in cli.COMMANDS}


REQUEST = {"overrides": {"impl": "eager", "seq_len": [16, 32], "width": "8", "heads": [2]},
           "settings": {"min_time_s": 0.02, "count_flops": False}}
FLAGS = ["--impl", "eager", "--seq-len", "16,32", "--width", "8", "--heads", "2", "--min-time", "0.02", "--no-flops"]


def _identity(out) -> tuple[list, dict]:
    """What two runs of one request share: each record but its measurements, and run.json's settings."""
    kept = ("point_id", "impl", "seq_len", "width", "heads", "batch", "threads", "preset", "settings_hash")
    records = sorted(({k: r[k] for k in kept} | {"timed": r["status"] in ("ok", "contended")}
                      for r in read_store(out)), key=lambda r: r["point_id"])
    run = read_run(out)
    return records, {k: run[k] for k in ("preset", "settings", "settings_hash")}


def test_the_python_run_and_the_cli_make_the_same_records(tmp_path):
    # Each in a process of its own: a run sets its process up (threads, a claimed CPU, a memory cap).
    python = tmp_path / "python"
    code = (f"from fastformer_bench import sweep\no = sweep.run('quick', {str(python)!r}, progress=False, "
            f"**{REQUEST!r})\nprint(o.kind, len(o.records), len(o.skipped), o.failed)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["speed", "2", "0", "False"]
    shell = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "fastformer_bench", "run", "--preset", "quick", "--out", str(shell),
                           *FLAGS, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _identity(python) == _identity(shell)
    assert all(record["timed"] for record in _identity(shell)[0])
    assert json.loads((shell / "run.json").read_text())["settings"]["min_time_s"] == 0.02


@pytest.mark.parametrize("request_, words", [
    ({"overrides": {"task": ["topic"]}}, "--task apply to probe presets only"),
    ({"overrides": {"seq_len": "16,abc"}}, "--seq-len expects integers, got 'abc'"),
    ({"overrides": {"sequence": [16]}}, "unknown axis 'sequence'"),
    ({"settings": {"warp_speed": 9}}, "unknown settings ['warp_speed']"),
    ({"settings": {"min_time_s": -1}}, "setting min_time_s must be > 0, got -1."),
    ({"settings": {"threads": 10**6}}, "exceed this machine's"),
])
def test_a_wrong_python_request_is_the_clis_one_sentence_before_anything_is_written(tmp_path, request_, words):
    with pytest.raises(ValueError) as refused:
        sweep.run("quick", tmp_path / "out", progress=False, **request_)
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_a_probe_request_with_speed_options_is_refused_naming_their_flags(tmp_path):
    with pytest.raises(ValueError, match="--dtype, --min-time, --isolate apply to speed presets"):
        sweep.run("probe-quick", tmp_path / "out", overrides={"dtype": ["float16"]}, settings={"min_time_s": 1.0},
                  isolate=True)
