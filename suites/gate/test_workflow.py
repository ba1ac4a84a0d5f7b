"""The performance workflow (.github/workflows/perf.yml): valid for GitHub, and its jobs run as written.

Checked statically: the file passes GitHub's schema, gates pull requests with the history the gate needs and
records pushes to main, and each `fastformer-bench` line is a request this CLI accepts.

The pull-request job run for real, twice (an unchanged pull request, and one that computes eager attention twice):
every `run:` step after Install, its script exactly as written, in a pull-request checkout built the way
actions/checkout builds one for the pull request's head (a clone with fetch-depth 0 whose `origin/main` is the base
branch, which has moved on by one commit since the pull request branched, the pull request's commit on top). As on
GitHub: the job's and the steps' `env` with the `${{ }}` expressions filled in, `$GITHUB_ENV` carried to later
steps, `bash -e` for each script, one $GITHUB_STEP_SUMMARY file per step, `continue-on-error` (a failed step's
outcome is failure, its conclusion success), and each step's `if:` (without a status function, GitHub requires
success() as well). So both gate commands run their exact argv against the real merge base, and the Comment and
Verdict steps run on what they wrote: the markdown and JSON files, the step summaries, the `::error` annotations
on stdout and the exit codes. `gh` is a fake that keeps the pull request's comments (`gh api` list, create, edit)
and records every call.

The push job run for real, twice (two pushes to main): the history filed on a gh-pages branch that the first
push creates and the second extends, its pages written, github-action-benchmark's three files exported; the
action itself is not run (a `uses:` step).

Not GitHub's, to stay within CI's time (the workflow sets none of it; checked below):
- the `uses:` steps and Install: the checkout is built here; Python, torch and valgrind are this environment's;
  `fastformer-bench` is `python -m fastformer_bench` importing from the checkout (PYTHONPATH, as `pip install -e`);
- the checkout's gate and history presets are the repository's cut to eager forward (the other implementations
  and the backward would only add points, and `compiled` and `stream` compile for minutes); shapes and settings
  are the real ones;
- FASTFORMER_BENCH_GATE_ROUNDS=4: four A/B rounds instead of twelve (the slowed pull request is 2x, and the
  unchanged one is held to "no regression" only);
- FASTFORMER_BENCH_GATE_LAYOUTS=1: one valgrind process per side instead of three (each pays ~50 s of CPU
  importing torch). One layout reads unchanged code up to 0.7 % apart (fastformer_bench/gate/instructions.py),
  inside the 1 % threshold; test_gate.py checks the default three layouts against that bound.
The unchanged pull request must pass the A/B wall-time gate: the same trust test_gate.py puts in its unchanged
eager/eager row (no regression verdict); the slowed one is 2x, which no load hides from the interleaved A/B.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fastformer_bench import gate, presets
from fastformer_bench.cli import build_parser
from fastformer_bench.commands import gate as gate_command
from fastformer_bench.gate import instructions as gate_instructions
from fastformer_bench.tools.gate_selftest import snapshot

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "perf.yml"
#: steps this test stands in for: the checkout is built here, and the packages are this environment's
PROVIDED = {"Install"}
#: the shrinking knobs set for the job here (see the module docstring); the workflow must set none of them
SHRINK_ENV = {gate_command.LAYOUTS_ENV: "1", gate_command.ROUNDS_ENV: "4", gate_command.WARMUP_ROUNDS_ENV: "0"}
PR_NUMBER = "42"
REPOSITORY = "example/fastformer-bench"
#: what the comment step marks its comment with, to find it again on the next push
MARKER = "<!-- fastformer-bench-gate -->"
GIT = ["git", "-c", "user.name=workflow-test", "-c", "user.email=workflow@test", "-c", "commit.gpgsign=false"]
#: the presets the checkouts cut to eager forward
CUT_PRESETS = (gate.modes.WALL_PRESET, gate.modes.INSTRUCTION_PRESET, "history")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict, job: str = "gate") -> list[dict]:
    return workflow["jobs"][job]["steps"]


def _triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # PyYAML reads the key `on` as True (YAML 1.1)


@pytest.mark.skipif(shutil.which("check-jsonschema") is None, reason="check-jsonschema is not installed")
def test_the_workflow_passes_githubs_schema():
    done = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_gates_the_head_of_a_pull_request_with_the_history_it_needs(workflow):
    assert "pull_request" in _triggers(workflow)
    job = workflow["jobs"]["gate"]
    assert "pull_request" in job["if"]
    checkout = next(s for s in _steps(workflow) if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the merge base must be there to check it out
    # the head as pushed: the default for a pull request is its merge into the base branch's tip
    assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha }}"
    assert job["permissions"]["pull-requests"] == "write" and workflow["permissions"] == {"contents": "read"}


def test_the_workflow_records_pushes_to_main_and_may_write_only_there(workflow):
    assert _triggers(workflow)["push"]["branches"] == ["main"]
    job = workflow["jobs"]["history"]
    assert "push" in job["if"] and job["permissions"] == {"contents": "write"}
    checkout = next(s for s in _steps(workflow, "history") if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    actions = [s["with"] for s in _steps(workflow, "history")
               if str(s.get("uses", "")).startswith("benchmark-action/github-action-benchmark")]
    assert [(a["tool"], a["output-file-path"]) for a in actions] == [
        ("customSmallerIsBetter", ".benchmarks/time.json"), ("customSmallerIsBetter", ".benchmarks/memory.json"),
        ("customBiggerIsBetter", ".benchmarks/gflops.json")]
    # pushes queue instead of cancelling each other: a cancelled push would be a commit missing from the history
    assert "pull_request" in workflow["concurrency"]["cancel-in-progress"]


def test_the_workflow_sets_none_of_the_knobs_this_test_shrinks_the_gates_with():
    # What the end-to-end tests below shrink must not shrink the gate in real use.
    text = WORKFLOW.read_text()
    assert not [name for name in SHRINK_ENV if name in text]


def _commands(workflow: dict, job: str) -> list[list[str]]:
    found = []
    for step in _steps(workflow, job):
        for line in str(step.get("run", "")).splitlines():
            if line.strip().startswith("fastformer-bench "):
                words = shlex.split(line.replace('"$BASE"', "origin/main"))
                found.append(words[1:])
    return found


def test_every_gate_command_of_the_workflow_is_a_valid_request(workflow):
    commands = _commands(workflow, "gate")
    assert len(commands) == 2 and any("--instructions" in c for c in commands)
    for words in commands:
        args = build_parser().parse_args(words)  # UsageError for an option this CLI does not have
        assert args.command == "gate" and args.github and args.markdown and args.json
        gate_command._check(args)  # ValueError for a request the gate would refuse


def test_every_command_of_the_history_job_is_a_valid_request(workflow):
    commands = _commands(workflow, "history")
    assert [c[:2] for c in commands] == [["history", "backfill"], ["history", "show"], ["run", "--preset"],
                                         ["export", ".benchmarks/main"], ["export", ".benchmarks/main"],
                                         ["export", ".benchmarks/main"]]
    for words in commands:
        build_parser().parse_args(words)


def test_the_verdicts_are_uploaded_whatever_the_gates_said(workflow):
    upload = next(s for s in _steps(workflow) if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].split()
    for words in _commands(workflow, "gate"):
        written = words[words.index("--json") + 1]
        assert any(fnmatch(written, pattern) for pattern in paths), (written, paths)


#: `gh` as the comment step calls it, against a pull request's comments kept in $GH_STATE (a JSON list); every call
#: is appended to $GH_LOG; with $GH_READ_ONLY set, writes fail as a fork's token does
_FAKE_GH = r"""
import json, os, re, sys
args = sys.argv[1:]
with open(os.environ["GH_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
state = os.environ["GH_STATE"]
comments = json.load(open(state)) if os.path.exists(state) else []
assert args[0] == "api", args
method = args[args.index("--method") + 1] if "--method" in args else "GET"
path = next(a for a in args[1:] if a.startswith("repos/"))
if method == "GET":
    marker = re.search(r'startswith\("(.*?)"\)', args[args.index("--jq") + 1]).group(1)
    print("\n".join(str(c["id"]) for c in comments if c["body"].startswith(marker)))
    sys.exit(0)
if os.environ.get("GH_READ_ONLY"):
    print("gh: Resource not accessible by integration (HTTP 403)", file=sys.stderr)
    sys.exit(1)
body = open(args[args.index("-F") + 1].removeprefix("body=@")).read()
if method == "PATCH":
    number = int(path.rsplit("/", 1)[1])
    next(c for c in comments if c["id"] == number)["body"] = body
else:
    assert path == f"repos/{os.environ['REPO']}/issues/{os.environ['PR']}/comments", path
    comments.append({"id": 1000 + len(comments), "body": body})
json.dump(comments, open(state, "w"))
"""


def _fake_bin(where: Path) -> Path:
    """A folder for the front of PATH: the fake `gh` (_FAKE_GH), and `fastformer-bench` as this interpreter's
    `python -m fastformer_bench` (the same CLI)."""
    where.mkdir()
    (where / "gh").write_text(f"#!{sys.executable}\n{_FAKE_GH}")
    (where / "fastformer-bench").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m fastformer_bench "$@"\n')
    for tool in where.iterdir():
        tool.chmod(0o755)
    return where


def _comments(state: Path) -> list[dict]:
    return json.loads(state.read_text()) if state.exists() else []


def _run_comment_step(step: dict, where: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PR": PR_NUMBER,
            "REPO": REPOSITORY, "GH_LOG": str(where / "gh.log"), "GH_STATE": str(where / "comments.json"), **env}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=where, env=full, capture_output=True, text=True,
                          timeout=60)


def test_one_comment_per_pull_request_edited_on_every_push(workflow, tmp_path):
    # Without a gate (and without valgrind): the end-to-end tests below post the gates' real tables.
    step = next(s for s in _steps(workflow) if s.get("name") == "Comment on the pull request")
    bin_dir, state = _fake_bin(tmp_path / "bin"), tmp_path / "comments.json"
    state.write_text(json.dumps([{"id": 7, "body": "a reviewer's comment"}]))
    (tmp_path / ".benchmarks").mkdir()
    for instructions, wall in [("**PASS**: instructions\n", "**FAIL**: wall\n"),
                               ("**PASS**: instructions again\n", "**PASS**: wall now\n")]:
        (tmp_path / ".benchmarks" / "instructions.md").write_text(instructions)
        (tmp_path / ".benchmarks" / "wall.md").write_text(wall)
        done = _run_comment_step(step, tmp_path, bin_dir)
        assert done.returncode == 0 and "::warning" not in done.stdout, done.stdout + done.stderr
        ours = [c for c in _comments(state) if c["body"].startswith(MARKER)]
        assert len(ours) == 1 and ours[0]["body"] == f"{MARKER}\n{instructions}{wall}", ours
    assert _comments(state)[0] == {"id": 7, "body": "a reviewer's comment"}  # nobody else's comment is touched
    calls = (tmp_path / "gh.log").read_text().splitlines()
    assert [c.split()[:3] for c in calls if "--method" in c] == [["api", "--method", "POST"],
                                                                 ["api", "--method", "PATCH"]]
    assert f"repos/{REPOSITORY}/issues/comments/1001" in calls[-1]


def test_a_forks_read_only_token_leaves_a_warning_not_a_failure(workflow, tmp_path):
    step = next(s for s in _steps(workflow) if s.get("name") == "Comment on the pull request")
    (tmp_path / ".benchmarks").mkdir()
    (tmp_path / ".benchmarks" / "wall.md").write_text("**PASS**: wall\n")
    done = _run_comment_step(step, tmp_path, _fake_bin(tmp_path / "bin"), GH_READ_ONLY="1")
    assert done.returncode == 0 and "::warning title=fastformer-bench::could not write" in done.stdout, done.stderr
    assert _comments(tmp_path / "comments.json") == []
    (tmp_path / "empty").mkdir()  # no gate wrote a table (nor the folder): nothing to post, no call
    nothing = _run_comment_step(step, tmp_path / "empty", tmp_path / "bin")
    assert nothing.returncode == 0 and "no gate table" in nothing.stdout, nothing.stderr
    assert not (tmp_path / "empty" / "gh.log").exists()


# -- the jobs, run for real ------------------------------------------------------------------------------------
_EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")
_OUTCOME = re.compile(r"steps\.([\w-]+)\.outcome == '(success|failure|cancelled|skipped)'")


def _pr_context(workflow: dict, checkout: Path) -> dict[str, str]:
    """The `${{ }}` values of a pull request against the first branch the workflow triggers on."""
    return {"github.base_ref": _triggers(workflow)["pull_request"]["branches"][0], "github.token": "test-token",
            "github.event.pull_request.number": PR_NUMBER, "github.repository": REPOSITORY,
            "github.event.pull_request.head.sha": _rev(checkout, "HEAD")}


def _rev(repo: Path, rev: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def _expand(value, context: dict[str, str]) -> str:
    return _EXPRESSION.sub(lambda m: context[m.group(1)], str(value))  # KeyError: an expression this test lacks


def _should_run(condition, outcomes: dict[str, str], job_ok: bool) -> bool:
    """A step's `if:`, in the forms this workflow uses: none, always(), or `steps.<id>.outcome == '...'` terms
    joined by ||, to which GitHub adds `success() &&` (no status function given)."""
    if condition is None:
        return job_ok
    text = str(condition).strip()
    if text == "always()":
        return True
    terms = [_OUTCOME.fullmatch(term.strip()) for term in text.split("||")]
    assert all(terms), f"this test cannot evaluate the condition {text!r}: teach _should_run its form"
    return job_ok and any(outcomes[m.group(1)] == m.group(2) for m in terms)


@dataclass
class Step:
    name: str
    ran: bool
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    summary: str = ""  # what the step wrote to its $GITHUB_STEP_SUMMARY
    continue_on_error: bool = False

    @property
    def outcome(self) -> str:
        return "skipped" if not self.ran else "success" if self.returncode == 0 else "failure"

    @property
    def annotations(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("::error ")]


@dataclass
class Job:
    checkout: Path
    steps: dict[str, Step]  # by id, else name
    passed: bool
    gh_log: str
    comments: list[dict]  # the pull request's comments as the fake `gh` left them

    def read(self, name: str) -> str:
        return (self.checkout / name).read_text()


def _pull_request(upstream: Path, dest: Path, change) -> Path:
    """What actions/checkout leaves for a pull request's head on ``upstream``'s main: a full clone, its HEAD the
    pull request's commit (``change`` applied to the tree) on main as it was, and origin/main one commit further
    (the base branch moved on after the pull request branched: a docs change)."""
    subprocess.run([*GIT, "clone", "--quiet", "--shared", str(upstream), str(dest)], check=True)
    subprocess.run([*GIT, "-C", str(dest), "checkout", "--quiet", "-b", "pull-request"], check=True)
    change(dest)
    subprocess.run([*GIT, "-C", str(dest), "commit", "--quiet", "-a", "-m", "the pull request"], check=True)
    tree = subprocess.run([*GIT, "-C", str(dest), "commit-tree", "origin/main^{tree}", "-p", "origin/main", "-m",
                           "main moved on"], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "-C", str(dest), "update-ref", "refs/remotes/origin/main", tree], check=True)
    return dest


def _run_job(workflow: dict, checkout: Path, tmp: Path, context: dict[str, str], job_name: str = "gate") -> Job:
    """The job's `run:` steps in order, in ``checkout``, the way the runner runs them (module docstring)."""
    job = workflow["jobs"][job_name]
    bin_dir, gh_log, state = _fake_bin(tmp / "bin"), tmp / "gh.log", tmp / "comments.json"
    host = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "FASTFORMER_BENCH_"))}
    base_env = {**host, **SHRINK_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(checkout), "GH_LOG": str(gh_log), "GH_STATE": str(state), "CI": "true",
                "GITHUB_ACTIONS": "true",
                **{k: _expand(v, context) for k, v in {**workflow.get("env", {}), **job.get("env", {})}.items()}}
    steps: dict[str, Step] = {}
    for number, spec in enumerate(job["steps"]):
        if "run" not in spec or spec.get("name") in PROVIDED:
            continue
        name = spec.get("id") or spec["name"]
        job_ok = not any(s.outcome == "failure" and not s.continue_on_error for s in steps.values())
        if not _should_run(spec.get("if"), {k: s.outcome for k, s in steps.items()}, job_ok):
            steps[name] = Step(name, ran=False)
            continue
        summary, exported = tmp / f"step-summary-{number}.md", tmp / f"step-env-{number}"
        summary.touch()
        exported.touch()
        env = {**base_env, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ENV": str(exported),
               **{k: _expand(v, context) for k, v in spec.get("env", {}).items()}}
        done = subprocess.run(["bash", "-e", "-c", spec["run"]], cwd=checkout, env=env, capture_output=True,
                              text=True, timeout=900)
        steps[name] = Step(name, True, done.returncode, done.stdout, done.stderr, summary.read_text(),
                           bool(spec.get("continue-on-error", False)))
        # NAME=value lines in $GITHUB_ENV are the environment of every later step
        base_env.update(line.split("=", 1) for line in exported.read_text().splitlines() if "=" in line)
    passed = not any(s.outcome == "failure" and not s.continue_on_error for s in steps.values())
    return Job(checkout, steps, passed, gh_log.read_text() if gh_log.exists() else "", _comments(state))


def _times_eager(block: str, path: Path) -> bool:
    """Whether a preset's [[grid]] block measures eager, by name or through a selector (presets.select_impls)."""
    grid = tomllib.loads(block)
    return "eager" in presets.select_impls(grid, path).get("impl", ())


def _cut_presets_to_eager_forward(tree: Path) -> None:
    # The [[grid]] block that times eager, cut to eager forward; the other blocks go.
    for name in CUT_PRESETS:
        path = tree / "fastformer_bench" / "presets" / f"{name}.toml"
        head, *blocks = path.read_text().split("\n[[grid]]\n")
        kept = [b for b in blocks if _times_eager(b, path)]
        assert len(kept) == 1, f"{path}: expected one [[grid]] block with eager to cut"
        text, impls = re.subn(r"^impl = \[[^\]\n]*\]$", 'impl = ["eager"]', kept[0], flags=re.MULTILINE)
        text, modes = re.subn(r"^mode = \[[^\]\n]*\]$", 'mode = ["fwd"]', text, flags=re.MULTILINE)
        assert impls == 1 and modes <= 1, f"{path}: expected one `impl = [...]` line (and one `mode` at most) to cut"
        path.write_text(head + "\n[[grid]]\n" + text)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """The repository the pull requests are made on: this working tree with its gate and history presets cut to
    eager forward, as the branch `main`."""
    repo = snapshot(ROOT, tmp_path_factory.mktemp("workflow") / "upstream")
    _cut_presets_to_eager_forward(repo)
    subprocess.run([*GIT, "-C", str(repo), "commit", "--quiet", "-a", "-m", "gate presets cut"], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", "-B", "main"], check=True)
    return repo


needs_valgrind = pytest.mark.skipif(gate_instructions.valgrind_missing() is not None,
                                    reason=f"the instruction gate needs valgrind: "
                                           f"{gate_instructions.valgrind_missing()}")


def _touch_docs(tree: Path) -> None:
    with open(tree / "README.md", "a") as fh:
        fh.write("\nA pull request that changes no code.\n")


def _compute_twice(tree: Path) -> None:
    path = tree / "fastformer_bench" / "impls" / "additive_eager.py"
    call = "    return additive_attention_core(x, w, mask)\n"
    assert path.read_text().count(call) == 1, f"{path}: the eager call to double is not there"
    path.write_text(path.read_text().replace(call, call.replace("return ", "") + call))


def _pr_job(workflow: dict, upstream: Path, tmp: Path, change) -> Job:
    checkout = _pull_request(upstream, tmp / "checkout", change)
    return _run_job(workflow, checkout, tmp, _pr_context(workflow, checkout))


@pytest.fixture(scope="module")
def unchanged(workflow, upstream, tmp_path_factory) -> Job:
    return _pr_job(workflow, upstream, tmp_path_factory.mktemp("unchanged"), _touch_docs)


@pytest.fixture(scope="module")
def slowed(workflow, upstream, tmp_path_factory) -> Job:
    return _pr_job(workflow, upstream, tmp_path_factory.mktemp("slowed"), _compute_twice)


def _verdicts(markdown: str) -> dict[str, str]:
    """point -> verdict, from the folded table of every point."""
    every = markdown.split("<details>")[1]
    rows = [line.split(" | ") for line in every.splitlines() if line.startswith("| eager ")]
    return {cells[0].removeprefix("| "): cells[6] for cells in rows}


def _check_gate_step(job: Job, step_id: str, name: str, title: str) -> Step:
    """What every gate step leaves, pass or fail: its table in the markdown file and, verdict first, in its step
    summary, and every compared point in its JSON report; its title naming the merge base (not the base branch's
    tip) and the checkout; an exit code that agrees with the verdict."""
    step = job.steps[step_id]
    assert step.ran and step.returncode in (0, 1), step.stderr[-3000:]
    text = job.read(f".benchmarks/{name}.md")
    assert step.summary == text + "\n"
    assert text.startswith("**PASS**: " if step.returncode == 0 else "**FAIL**: ")
    merge_base = _rev(job.checkout, "HEAD^")
    assert merge_base != _rev(job.checkout, "origin/main")
    title_line = text.splitlines()[2]
    assert title_line.startswith(f"_{title}") and f": {merge_base} vs {job.checkout.resolve()}" in title_line, text
    report = json.loads(job.read(f".benchmarks/{name}.json"))
    assert report["passed"] is (step.returncode == 0) and report["rows"]
    return step


def _the_comment(job: Job) -> str:
    (comment,) = job.comments
    return comment["body"]


@needs_valgrind
def test_an_unchanged_pull_request_passes_both_gates_and_the_job(unchanged):
    instructions = _check_gate_step(unchanged, "instructions", "instructions", "instructions per call (callgrind)")
    assert instructions.returncode == 0 and not instructions.annotations, instructions.stdout
    verdicts = _verdicts(unchanged.read(".benchmarks/instructions.md"))
    assert list(verdicts.values()) == ["same"], verdicts  # within 1 %: deterministic for a given build
    wall = _check_gate_step(unchanged, "wall", "wall", "A/B time")
    assert f"({SHRINK_ENV[gate_command.ROUNDS_ENV]} rounds, preset gate)" in unchanged.read(".benchmarks/wall.md")
    assert wall.returncode == 0 and not wall.annotations, unchanged.read(".benchmarks/wall.md")
    assert list(_verdicts(unchanged.read(".benchmarks/wall.md")).values()) in (["same"], ["faster"])

    comment = unchanged.steps["Comment on the pull request"]
    assert comment.outcome == "success", comment.stderr
    assert _the_comment(unchanged) == (f"{MARKER}\n" + unchanged.read(".benchmarks/instructions.md")
                                       + unchanged.read(".benchmarks/wall.md"))
    assert unchanged.steps["Verdict"].outcome == "skipped" and unchanged.passed


@needs_valgrind
def test_a_pull_request_that_doubles_the_work_fails_both_gates_and_the_job(slowed):
    instructions = _check_gate_step(slowed, "instructions", "instructions", "instructions per call (callgrind)")
    assert instructions.returncode == 1 and instructions.outcome == "failure"
    assert slowed.read(".benchmarks/instructions.md").startswith("**FAIL**: 1 of 1 points fail")
    (line,) = instructions.annotations
    found = re.fullmatch(r"::error title=fastformer-bench gate%3A regression::eager cpu float32 fwd "
                         r".*: regression: instruction count ratio (\d+\.\d+)", line)
    assert found and float(found.group(1)) > 1.5, line  # twice the work, less the step's fixed cost
    wall = _check_gate_step(slowed, "wall", "wall", "A/B time")
    assert wall.returncode == 1 and slowed.read(".benchmarks/wall.md").startswith("**FAIL**: 1 of 1 points fail")
    assert len(wall.annotations) == 1 and wall.annotations[0].startswith(
        "::error title=fastformer-bench gate%3A regression::eager cpu float32 fwd "), wall.stdout

    # Both gate steps failed and continued (the Verdict step ran, so the job still stood at success()); the
    # comment still goes out, with both failing tables, and the Verdict step turns the outcomes into the job's
    # failure.
    assert _the_comment(slowed) == (f"{MARKER}\n" + slowed.read(".benchmarks/instructions.md")
                                    + slowed.read(".benchmarks/wall.md"))
    verdict = slowed.steps["Verdict"]
    assert verdict.ran and verdict.returncode == 1 and not slowed.passed


# -- pushes to main ----------------------------------------------------------------------------------------------
def _push(repo: Path, tmp: Path, workflow: dict) -> Job:
    """What actions/checkout leaves for a push to ``repo``'s main (a full clone at main), and the history job run
    in it."""
    checkout = tmp / "checkout"
    subprocess.run([*GIT, "clone", "--quiet", "--shared", str(repo), str(checkout)], check=True)
    return _run_job(workflow, checkout, tmp, {"github.sha": _rev(checkout, "HEAD")}, "history")


def _ls(repo: Path, branch: str) -> list[str]:
    return subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", branch], check=True,
                          capture_output=True, text=True).stdout.split()


def test_two_pushes_to_main_file_the_history_on_gh_pages_and_publish_its_pages(workflow, upstream, tmp_path):
    repo = tmp_path / "origin"
    subprocess.run([*GIT, "clone", "--quiet", "--shared", str(upstream), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", "-B", "main"], check=True)
    first = _push(repo, tmp_path / "push1", workflow)
    assert first.passed, {n: s.stderr[-2000:] for n, s in first.steps.items() if s.outcome == "failure"}
    for name, unit in (("time", "ms"), ("memory", "MB"), ("gflops", "GFLOP/s")):
        entries = json.loads(first.read(f".benchmarks/{name}.json"))
        assert entries and {e["unit"] for e in entries} == {unit} and all(e["value"] > 0 for e in entries), name
    _touch_docs(repo)
    subprocess.run([*GIT, "-C", str(repo), "commit", "--quiet", "-a", "-m", "a second push"], check=True)
    second = _push(repo, tmp_path / "push2", workflow)
    assert second.passed, {n: s.stderr[-2000:] for n, s in second.steps.items() if s.outcome == "failure"}

    files = _ls(repo, "gh-pages")
    entries = [f for f in files if f.startswith("history/") and f.endswith(".json")]
    machines = {Path(f).parent.name for f in entries}
    assert len(entries) == 2 and len(machines) == 1, files
    filed = [json.loads(subprocess.run(["git", "-C", str(repo), "show", f"gh-pages:{f}"], check=True,
                                       capture_output=True, text=True).stdout) for f in entries]
    assert sorted(e["commit"] for e in filed) == sorted([_rev(repo, "main^"), _rev(repo, "main")])
    assert all(e["preset"] == "history" and e["points"] for e in filed)
    (machine,) = machines
    assert {"index.html", f"{machine}.html", "report/HISTORY.md", "report/history.json", ".nojekyll"} <= set(files)
    page = subprocess.run(["git", "-C", str(repo), "show", f"gh-pages:{machine}.html"], check=True,
                          capture_output=True, text=True).stdout
    assert "2 filed runs" in page and "<script src=" not in page
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s", "gh-pages"], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert log == [f"history: {_rev(repo, 'main')[:12]}", f"history: {_rev(repo, 'main^')[:12]}"]
