"""`history show --html`: one self-contained interactive page per machine, which a real headless browser loads
without console errors, drawing every series, and whose points open their commit (history/html.py)."""

from __future__ import annotations

import html as htmltext
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from testkit.synthetic_results import run_env, synthetic_records, write_results

from fastformer_bench import history
from fastformer_bench.history import html
from fastformer_bench.history.store import add_failure

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.name=html-test", "-c", "user.email=html@test", "-c", "commit.gpgsign=false"]
URL = "https://github.com/example/fastformer-bench/commit/{commit}"
#: CI sets it, and installs a browser: there the browser test must run, not skip
REQUIRE_BROWSER = "FASTFORMER_BENCH_REQUIRE_BROWSER"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SERIES = ("eager", "compiled", "softmax_sdpa")
COMMITS, STEP_AT, SPIKE_AT, FAILED_AT = 12, 7, 4, 9


@pytest.fixture(scope="module")
def filed(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A repository of 12 commits and a history of them: eager steps 1.3x at commit 7, compiled spikes 1.9x at
    commit 4 only, softmax_sdpa stays flat; commit 9 could not be imported (a gap in every series)."""
    tmp = tmp_path_factory.mktemp("html")
    repo, store = tmp / "repo", tmp / "history"
    subprocess.run([*GIT, "init", "--quiet", str(repo)], check=True)
    commits = []
    for index in range(COMMITS):
        subprocess.run([*GIT, "-C", str(repo), "commit", "--quiet", "--allow-empty", "-m", f"change number {index}"],
                       check=True)
        commits.append(subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                                      text=True).stdout.strip())
    rng = np.random.default_rng(8)
    base = [r for r in synthetic_records() if r["impl"] in SERIES and r["seq_len"] == 1024 and r["width"] == 64
            and r["mode"] == "fwd" and r["scope"] == "core" and r["columns"] == 3 and not r.get("masked")]
    assert len(base) == len(SERIES)
    for index, commit in enumerate(commits):
        if index == FAILED_AT:
            fingerprint = history.entries(store)[next(iter(history.entries(store)))][0]["fingerprint"]
            add_failure(store, commit, fingerprint, status="failed", reason="SyntaxError: invalid syntax (x.py, 3)",
                        repo=repo)
            continue
        records = []
        for r in base:
            factor = float(np.exp(rng.normal(0, 0.005)))
            factor *= 1.3 if r["impl"] == "eager" and index >= STEP_AT else 1.0
            factor *= 1.9 if r["impl"] == "compiled" and index == SPIKE_AT else 1.0
            records.append({**r, **{k: r[k] * factor for k in ("time_median", "time_p20", "time_p80")}})
        history.add(write_results(tmp / f"run{index}", records, {**run_env(), "git_commit": commit}), store,
                    repo=repo)
    return repo, store, commits


def test_the_page_is_self_contained_and_lists_steps_outliers_and_gaps(filed):
    repo, store, commits = filed
    (machine, entries), = history.entries(store).items()
    text, summary = html.page(machine, entries, commit_url=URL)
    assert "<script src=" not in text and "<link " not in text  # plotly.js inlined, nothing fetched
    assert len(text) > 1_000_000 and 'id="history-plot"' in text
    assert [(s["point"].split()[0], s["commit"]) for s in summary["steps"]] == [("eager", commits[STEP_AT])]
    assert [(o["point"].split()[0], o["commit"]) for o in summary["outliers"]] == [("compiled", commits[SPIKE_AT])]
    assert {g["commit"] for g in summary["gaps"]} == {commits[FAILED_AT]} and len(summary["gaps"]) == len(SERIES)
    assert f'href="{URL.format(commit=commits[SPIKE_AT])}"' in text and "SyntaxError: invalid syntax" in text
    assert "change number 3" in text  # the commit's subject, for the hover
    again, _ = html.page(machine, entries, commit_url=URL)
    assert again == text  # a function of the history: no timestamps, fixed ids


@pytest.mark.parametrize("remote, expected", [
    ("git@github.com:owner/repo.git", "https://github.com/owner/repo/commit/{commit}"),
    ("https://github.com/owner/repo", "https://github.com/owner/repo/commit/{commit}"),
    ("https://x-access-token:abc@github.com/owner/repo.git", "https://github.com/owner/repo/commit/{commit}"),
    ("https://gitlab.com/group/sub/repo.git", "https://gitlab.com/group/sub/repo/-/commit/{commit}"),
    ("/srv/git/repo.git", None), ("https://example.org/owner/repo.git", None)])
def test_the_commit_url_comes_from_the_origin_remote(tmp_path, remote, expected):
    subprocess.run([*GIT, "init", "--quiet", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", remote], check=True)
    assert html.commit_url_from(tmp_path) == expected


def test_no_remote_no_links(tmp_path):
    assert html.commit_url_from(tmp_path) is None


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", "history", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_show_html_writes_a_page_per_machine_and_an_index(filed, tmp_path):
    _, store, _ = filed
    done = _cli("show", "--history", str(store), "--html", str(tmp_path / "site"), "--commit-url", URL)
    assert done.returncode == 0, done.stderr
    pages = sorted(p.name for p in (tmp_path / "site").glob("*.html"))
    (machine,) = history.entries(store)
    assert pages == sorted([f"{machine}.html", "index.html"])
    assert f'href="{machine}.html"' in (tmp_path / "site" / "index.html").read_text()
    no_commit = _cli("show", "--history", str(store), "--html", str(tmp_path / "x"), "--commit-url", "https://a/b")
    assert no_commit.returncode == 2 and "{commit}" in no_commit.stderr
    neither = _cli("show", "--history", str(store))
    assert neither.returncode == 2 and "--html" in neither.stderr


# -- in a real browser -----------------------------------------------------------------------------------------
#: injected into a copy of the page: console errors and uncaught errors marked on stderr; then, after plotly has
#: drawn, what the DOM holds, and what a click on the first median point opens
_HOOK = """<script>
(function () {
  var error = console.error;
  console.error = function () { error.apply(console, ['FFB-CONSOLE-ERROR'].concat([].slice.call(arguments))); };
  window.addEventListener('error', function (e) { console.log('FFB-CONSOLE-ERROR ' + e.message); });
})();
</script>"""
_CHECK = """<script>
setTimeout(function () {
  var plot = document.getElementById('history-plot'), opened = [];
  window.open = function (url) { opened.push(url); };
  var medians = plot.data.filter(function (t) { return t.name === 'median'; });
  var first = medians[0], at = first.y.findIndex(function (v) { return v !== null; });
  plot.emit('plotly_click', {points: [{curveNumber: plot.data.indexOf(first), pointNumber: at,
                                        customdata: first.customdata[at]}]});
  var traces = document.querySelectorAll('.scatterlayer .trace');
  var out = document.createElement('pre');
  out.id = 'ffb-check';
  out.textContent = JSON.stringify({
    data: plot.data.length, drawn: traces.length, medians: medians.length,
    values: medians.map(function (t) { return t.y.filter(function (v) { return v !== null; }).length; }),
    points: Array.prototype.map.call(traces, function (t) { return t.querySelectorAll('path.point').length; }),
    subplots: document.querySelectorAll('.cartesianlayer .subplot').length, opened: opened,
    first: first.customdata[at][0]});
  document.body.appendChild(out);
}, 1500);
</script>"""


def _browser() -> str | None:
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None and os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{REQUIRE_BROWSER}=1 and no browser ({', '.join(BROWSERS)}) on PATH: install chromium")
    return found


def test_a_headless_browser_draws_every_series_without_console_errors(filed, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH; CI sets {REQUIRE_BROWSER}=1")
    _, store, commits = filed
    (machine, entries), = history.entries(store).items()
    text, summary = html.page(machine, entries, commit_url=URL)
    page = tmp_path / "page.html"
    page.write_text(text.replace("<head>", "<head>" + _HOOK, 1).replace("</body>", _CHECK + "</body>", 1))
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "FFB-CONSOLE-ERROR" in line or "Uncaught" in line], console
    found = re.search(r'<pre id="ffb-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the check never ran: {console} {done.stdout[-2000:]}"
    check = json.loads(htmltext.unescape(found.group(1)))
    assert check["medians"] == check["subplots"] == len(SERIES)
    assert check["drawn"] == check["data"]  # every trace of the figure is in the DOM
    # each median trace drew its commits but the gap (and the band traces draw no markers)
    assert check["values"] == [COMMITS - 1] * len(SERIES)
    assert sorted(check["points"], reverse=True)[:len(SERIES)] == [COMMITS - 1] * len(SERIES)
    assert check["opened"] == [URL.replace("{commit}", check["first"])] and check["first"] == commits[0]


def test_without_a_browser_the_test_skips_unless_ci_requires_one(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    assert _browser() is None
    monkeypatch.setenv(REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match="install chromium"):
        _browser()
