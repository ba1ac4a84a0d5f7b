"""The docs are the reference: every pointer from the code into them resolves, every relative link in them leads to a
file, and every fenced ``python`` block in README.md and docs/ runs as written (docs/extending.md's walk-throughs
included), so a change that breaks a documented step fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: a pointer from the code into the docs: "docs/design.md §4.1", or a whole page
POINTER = re.compile(r"docs/([\w-]+\.md)(?: §(\d+(?:\.\d+)?))?")
#: a pointer from one page to a section of another: "[measuring.md](measuring.md) §9", "gate.md §8"
PAGE_POINTER = re.compile(r"([\w-]+\.md)\)? §(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)?)\.? ", re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _code_files() -> list[Path]:
    found = [p for top in ("fastformer_bench", "suites", "scripts") for p in (REPO / top).rglob("*")
             if p.suffix in (".py", ".sh", ".toml", ".cpp") and "__pycache__" not in p.parts]
    found += [REPO / "Makefile", REPO / "tox.ini", REPO / ".ci" / "run"]
    return [p for p in found if p != Path(__file__).resolve()]  # this file names the patterns it looks for


def _sections(page: Path) -> set[str]:
    return set(HEADING.findall(page.read_text()))


def test_every_pointer_from_the_code_into_the_docs_resolves():
    pointers = [(path, line, name, section) for path in _code_files()
                for line in path.read_text(errors="replace").splitlines()
                for name, section in POINTER.findall(line)]
    assert len(pointers) > 20, "the code's pointers into docs/ were not found: is the pattern stale?"
    broken = [f"{path.relative_to(REPO)}: docs/{name}" + (f" §{section}" if section else "")
              for path, line, name, section in pointers
              if not (REPO / "docs" / name).is_file() or (section and section not in _sections(REPO / "docs" / name))]
    assert not broken, f"pointers to no page or no such section: {broken}"


def test_no_pointer_is_left_to_the_design_card_outside_the_repository():
    stale = [f"{path.relative_to(REPO)}:{number}" for path in _code_files()
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if "DESIGN §" in line]
    assert not stale, f"'DESIGN §n' points outside the repository; point at docs/design.md §n instead: {stale}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_in_the_docs_leads_to_a_file(page):
    links = [target for target in LINK.findall(page.read_text()) if "://" not in target]
    missing = [target for target in links if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to what is not there: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_section_one_page_points_to_on_another_exists(page):
    pointers = PAGE_POINTER.findall(page.read_text())
    broken = [f"{name} §{section}" for name, section in pointers
              if not (REPO / "docs" / name).is_file() or section not in _sections(REPO / "docs" / name)]
    assert not broken, f"{page.relative_to(REPO)} points to no such section: {broken}"


def _blocks() -> list:
    return [pytest.param(page, index, code, id=f"{page.name}-{index}")
            for page in PAGES for index, code in enumerate(BLOCK.findall(page.read_text()), 1)]


@pytest.mark.parametrize(("page", "index", "code"), _blocks())
def test_every_python_block_in_the_docs_runs_as_written(page, index, code, tmp_path):
    script = tmp_path / f"{page.stem}_{index}.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{page.relative_to(REPO)} block {index} failed:\n{done.stderr[-3000:]}"
