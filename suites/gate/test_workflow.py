"""The pull-request workflow (.github/workflows/perf.yml): valid for GitHub, and its job run as written.

Checked statically: the file passes GitHub's schema, runs on pull requests with the history the gate needs, and
each `fastformer-bench gate` line is a request this CLI accepts.

Run for real, twice (an unchanged pull request, and one that computes eager attention twice): every `run:` step
of the job after Install, its script exactly as written, in a pull-request checkout built the way actions/checkout
builds one (a clone with fetch-depth 0 whose `origin/main` is the base revision, the pull request's commit on
top). As on GitHub: the job's and the steps' `env` with the `${{ }}` expressions filled in (`BASE: origin/main`),
`bash -e` for each script, one $GITHUB_STEP_SUMMARY file per step, `continue-on-error` (a failed step's outcome
is failure, its conclusion success), and each step's `if:` (without a status function, GitHub requires success()
as well). So both gate commands run their exact argv against a real base revision, and the Comment and Verdict
steps run on what they wrote: the markdown files, the step summaries, the `::error` annotations on stdout and the
exit codes. `gh` is a fake that records its arguments and the comment's body.

Not GitHub's, to stay within CI's time (the workflow sets none of it; checked below):
- the `uses:` steps and Install: the checkout is built here; Python, torch and valgrind are this environment's;
  `fastformer-bench` is `python -m fastformer_bench` importing from the checkout (PYTHONPATH, as `pip install -e`);
- the checkout's gate presets are the repository's cut to eager forward (the other implementations and the
  backward would only add points, and `compiled` and `stream` compile for minutes); shapes and settings are the
  real ones;
- FASTFORMER_BENCH_GATE_ROUNDS=4: four A/B rounds instead of twelve (the slowed pull request is 2x, and the
  unchanged one is held to "no regression" only);
- FASTFORMER_BENCH_GATE_LAYOUTS=1: one valgrind process per side instead of three (each pays ~50 s of CPU
  importing torch). One layout reads unchanged code up to 0.7 % apart (fastformer_bench/gate/instructions.py),
  inside the 1 % threshold; test_gate.py checks the default three layouts against that bound.
The unchanged pull request must pass the A/B wall-time gate: the same trust test_gate.py puts in its unchanged
eager/eager row (no regression verdict); the slowed one is 2x, which no load hides from the interleaved A/B.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
GIT = ["git", "-c", "user.name=workflow-test", "-c", "user.email=workflow@test", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict) -> list[dict]:
    return workflow["jobs"]["gate"]["steps"]


def _triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # PyYAML reads the key `on` as True (YAML 1.1)


@pytest.mark.skipif(shutil.which("check-jsonschema") is None, reason="check-jsonschema is not installed")
def test_the_workflow_passes_githubs_schema():
    done = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_runs_on_pull_requests_with_the_history_it_needs(workflow):
    assert "pull_request" in _triggers(workflow)
    checkout = next(s for s in _steps(workflow) if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base revision must be there to check it out
    assert workflow["permissions"]["pull-requests"] == "write"


def test_the_workflow_sets_none_of_the_knobs_this_test_shrinks_the_gates_with():
    # What the end-to-end tests below shrink must not shrink the gate in real use.
    text = WORKFLOW.read_text()
    assert not [name for name in SHRINK_ENV if name in text]


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
        gate_command._check(args)  # ValueError for a request the gate would refuse


def _fake_bin(where: Path) -> Path:
    """A folder for the front of PATH: a `gh` that records its arguments and the comment's body (argument 5) in
    $GH_LOG, and `fastformer-bench` as this interpreter's `python -m fastformer_bench` (the same CLI)."""
    where.mkdir()
    (where / "gh").write_text('#!/bin/sh\necho "$@" >> "$GH_LOG"\ncat "$5" >> "$GH_LOG"\n')
    (where / "fastformer-bench").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m fastformer_bench "$@"\n')
    for tool in where.iterdir():
        tool.chmod(0o755)
    return where


def test_the_comment_step_posts_both_tables_in_one_comment(workflow, tmp_path):
    # Without a gate (and without valgrind): the end-to-end tests below post the gates' real tables.
    step = next(s for s in _steps(workflow) if s.get("name") == "Comment on the pull request")
    (tmp_path / ".benchmarks").mkdir()
    (tmp_path / ".benchmarks" / "instructions.md").write_text("**PASS**: instructions\n")
    (tmp_path / ".benchmarks" / "wall.md").write_text("**FAIL**: wall\n")
    env = {**os.environ, "PATH": f"{_fake_bin(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}", "PR": PR_NUMBER,
           "GH_LOG": str(tmp_path / "gh.log")}
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, check=True, timeout=60)
    log = (tmp_path / "gh.log").read_text()
    assert log.startswith(f"pr comment {PR_NUMBER} --body-file .benchmarks/comment.md")
    assert "**PASS**: instructions\n**FAIL**: wall" in log


# -- the job, run for real -------------------------------------------------------------------------------------
_EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")
_OUTCOME = re.compile(r"steps\.([\w-]+)\.outcome == '(success|failure|cancelled|skipped)'")


def _context(workflow: dict) -> dict[str, str]:
    """The `${{ }}` values of a pull request against the first branch the workflow triggers on."""
    return {"github.base_ref": _triggers(workflow)["pull_request"]["branches"][0], "github.token": "test-token",
            "github.event.pull_request.number": PR_NUMBER}


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

    def read(self, name: str) -> str:
        return (self.checkout / name).read_text()


def _pull_request(upstream: Path, dest: Path, change) -> Path:
    """What actions/checkout leaves for a pull request on ``upstream``'s main: a full clone (origin/main is the
    base), its HEAD the pull request's commit (``change`` applied to the tree)."""
    subprocess.run([*GIT, "clone", "--quiet", "--shared", str(upstream), str(dest)], check=True)
    subprocess.run([*GIT, "-C", str(dest), "checkout", "--quiet", "-b", "pull-request"], check=True)
    change(dest)
    subprocess.run([*GIT, "-C", str(dest), "commit", "--quiet", "-a", "-m", "the pull request"], check=True)
    return dest


def _run_job(workflow: dict, checkout: Path, tmp: Path) -> Job:
    """The job's `run:` steps in order, in ``checkout``, the way the runner runs them (module docstring)."""
    context, job = _context(workflow), workflow["jobs"]["gate"]
    bin_dir, gh_log = _fake_bin(tmp / "bin"), tmp / "gh.log"
    host = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "FASTFORMER_BENCH_"))}
    base_env = {**host, **SHRINK_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(checkout), "GH_LOG": str(gh_log), "CI": "true", "GITHUB_ACTIONS": "true",
                **{k: _expand(v, context) for k, v in {**workflow.get("env", {}), **job.get("env", {})}.items()}}
    steps: dict[str, Step] = {}
    for number, spec in enumerate(_steps(workflow)):
        if "run" not in spec or spec.get("name") in PROVIDED:
            continue
        name = spec.get("id") or spec["name"]
        job_ok = not any(s.outcome == "failure" and not s.continue_on_error for s in steps.values())
        if not _should_run(spec.get("if"), {k: s.outcome for k, s in steps.items()}, job_ok):
            steps[name] = Step(name, ran=False)
            continue
        summary = tmp / f"step-summary-{number}.md"
        summary.touch()
        env = {**base_env, "GITHUB_STEP_SUMMARY": str(summary),
               **{k: _expand(v, context) for k, v in spec.get("env", {}).items()}}
        done = subprocess.run(["bash", "-e", "-c", spec["run"]], cwd=checkout, env=env, capture_output=True,
                              text=True, timeout=900)
        steps[name] = Step(name, True, done.returncode, done.stdout, done.stderr, summary.read_text(),
                           bool(spec.get("continue-on-error", False)))
    passed = not any(s.outcome == "failure" and not s.continue_on_error for s in steps.values())
    return Job(checkout, steps, passed, gh_log.read_text() if gh_log.exists() else "")


def _times_eager(block: str, path: Path) -> bool:
    """Whether a preset's [[grid]] block measures eager, by name or through a selector (presets.select_impls)."""
    grid = tomllib.loads(block)
    return "eager" in presets.select_impls(grid, path).get("impl", ())


def _cut_presets_to_eager_forward(tree: Path) -> None:
    # The [[grid]] block that times eager, cut to eager forward; the other blocks go.
    for name in (gate.modes.WALL_PRESET, gate.modes.INSTRUCTION_PRESET):
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
    """The repository the pull requests are made on: this working tree with its gate presets cut to eager
    forward, as the branch `main`."""
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


@pytest.fixture(scope="module")
def unchanged(workflow, upstream, tmp_path_factory) -> Job:
    tmp = tmp_path_factory.mktemp("unchanged")
    return _run_job(workflow, _pull_request(upstream, tmp / "checkout", _touch_docs), tmp)


@pytest.fixture(scope="module")
def slowed(workflow, upstream, tmp_path_factory) -> Job:
    tmp = tmp_path_factory.mktemp("slowed")
    return _run_job(workflow, _pull_request(upstream, tmp / "checkout", _compute_twice), tmp)


def _verdicts(markdown: str) -> dict[str, str]:
    """point -> verdict, from the folded table of every point."""
    every = markdown.split("<details>")[1]
    rows = [line.split(" | ") for line in every.splitlines() if line.startswith("| eager ")]
    return {cells[0].removeprefix("| "): cells[6] for cells in rows}


def _check_gate_step(job: Job, step_id: str, markdown: str, title: str) -> Step:
    """What every gate step leaves, pass or fail: its table in the markdown file and, verdict first, in its step
    summary; its title naming the base revision and the checkout; an exit code that agrees with the verdict."""
    step = job.steps[step_id]
    assert step.ran and step.returncode in (0, 1), step.stderr[-3000:]
    text = job.read(markdown)
    assert step.summary == text + "\n"
    assert text.startswith("**PASS**: " if step.returncode == 0 else "**FAIL**: ")
    title_line = text.splitlines()[2]
    assert title_line.startswith(f"_{title}") and f": origin/main vs {job.checkout.resolve()}" in title_line, text
    return step


@needs_valgrind
def test_an_unchanged_pull_request_passes_both_gates_and_the_job(unchanged):
    instructions = _check_gate_step(unchanged, "instructions", ".benchmarks/instructions.md",
                                    "instructions per call (callgrind)")
    assert instructions.returncode == 0 and not instructions.annotations, instructions.stdout
    verdicts = _verdicts(unchanged.read(".benchmarks/instructions.md"))
    assert list(verdicts.values()) == ["same"], verdicts  # within 1 %: deterministic for a given build
    wall = _check_gate_step(unchanged, "wall", ".benchmarks/wall.md", "A/B time")
    assert f"({SHRINK_ENV[gate_command.ROUNDS_ENV]} rounds, preset gate)" in unchanged.read(".benchmarks/wall.md")
    assert wall.returncode == 0 and not wall.annotations, unchanged.read(".benchmarks/wall.md")
    assert list(_verdicts(unchanged.read(".benchmarks/wall.md")).values()) in (["same"], ["faster"])

    comment = unchanged.steps["Comment on the pull request"]
    assert comment.outcome == "success", comment.stderr
    assert unchanged.gh_log == (f"pr comment {PR_NUMBER} --body-file .benchmarks/comment.md\n"
                                + unchanged.read(".benchmarks/instructions.md") + unchanged.read(".benchmarks/wall.md"))
    assert unchanged.steps["Verdict"].outcome == "skipped" and unchanged.passed


@needs_valgrind
def test_a_pull_request_that_doubles_the_work_fails_both_gates_and_the_job(slowed):
    instructions = _check_gate_step(slowed, "instructions", ".benchmarks/instructions.md",
                                    "instructions per call (callgrind)")
    assert instructions.returncode == 1 and instructions.outcome == "failure"
    assert slowed.read(".benchmarks/instructions.md").startswith("**FAIL**: 1 of 1 points fail")
    (line,) = instructions.annotations
    found = re.fullmatch(r"::error title=fastformer-bench gate%3A regression::eager cpu float32 fwd "
                         r".*: regression: instruction count ratio (\d+\.\d+)", line)
    assert found and float(found.group(1)) > 1.5, line  # twice the work, less the step's fixed cost
    wall = _check_gate_step(slowed, "wall", ".benchmarks/wall.md", "A/B time")
    assert wall.returncode == 1 and slowed.read(".benchmarks/wall.md").startswith("**FAIL**: 1 of 1 points fail")
    assert len(wall.annotations) == 1 and wall.annotations[0].startswith(
        "::error title=fastformer-bench gate%3A regression::eager cpu float32 fwd "), wall.stdout

    # Both gate steps failed and continued (the Verdict step ran, so the job still stood at success()); the
    # comment still goes out, with both failing tables, and the Verdict step turns the outcomes into the job's
    # failure.
    assert slowed.gh_log == (f"pr comment {PR_NUMBER} --body-file .benchmarks/comment.md\n"
                             + slowed.read(".benchmarks/instructions.md") + slowed.read(".benchmarks/wall.md"))
    verdict = slowed.steps["Verdict"]
    assert verdict.ran and verdict.returncode == 1 and not slowed.passed
