"""The pull-request workflow (.github/workflows/perf.yml): valid for GitHub, and its commands valid for this CLI.

The gate commands themselves run end to end in test_gate.py (A/B wall time and instruction counts against a
clone); here each command line of the workflow is parsed and checked by the real CLI, and the shell steps that
need no gate run for real (with a recording `gh`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fastformer_bench import gate
from fastformer_bench.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "perf.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict) -> list[dict]:
    return workflow["jobs"]["gate"]["steps"]


@pytest.mark.skipif(shutil.which("check-jsonschema") is None, reason="check-jsonschema is not installed")
def test_the_workflow_passes_githubs_schema():
    done = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_runs_on_pull_requests_with_the_history_it_needs(workflow):
    # PyYAML reads the key `on` as True (YAML 1.1)
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers
    checkout = next(s for s in _steps(workflow) if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base revision must be there to check it out
    assert workflow["permissions"]["pull-requests"] == "write"


def _gate_commands(workflow: dict) -> list[list[str]]:
    found = []
    for step in _steps(workflow):
        for line in str(step.get("run", "")).splitlines():
            if line.strip().startswith("fastformer-bench "):
                words = shlex.split(line.replace('"$BASE"', "origin/main"))
                found.append(words[1:])
    return found


def test_every_gate_command_of_the_workflow_is_a_valid_request(workflow):
    commands = _gate_commands(workflow)
    assert len(commands) == 2 and any("--instructions" in c for c in commands)
    for words in commands:
        args = build_parser().parse_args(words)  # UsageError for an option this CLI does not have
        assert args.command == "gate" and args.github and args.markdown
        gate._check(args)  # ValueError for a request the gate would refuse


def test_the_comment_step_posts_both_tables_in_one_comment(workflow, tmp_path):
    step = next(s for s in _steps(workflow) if s.get("name") == "Comment on the pull request")
    (tmp_path / ".benchmarks").mkdir()
    (tmp_path / ".benchmarks" / "instructions.md").write_text("**PASS**: instructions\n")
    (tmp_path / ".benchmarks" / "wall.md").write_text("**FAIL**: wall\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text('#!/bin/sh\necho "$@" > "$GH_LOG"\ncat "$5" >> "$GH_LOG"\n')
    (bin_dir / "gh").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PR": "42",
           "GH_LOG": str(tmp_path / "gh.log")}
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, check=True, timeout=60)
    log = (tmp_path / "gh.log").read_text()
    assert log.startswith("pr comment 42 --body-file .benchmarks/comment.md")
    assert "**PASS**: instructions\n**FAIL**: wall" in log
