"""Sweep presets: TOML files in this folder, expanded to a list of Problems.

A preset has ``name``, ``description``, a ``[settings]`` table (see :class:`fastformer_bench.point.Settings`;
built and checked by :func:`settings_for`, with the command line's changes)
and one or more ``[[grid]]`` tables whose values are lists (axes from ``fastformer_bench.axes``, an axis a grid
leaves out takes the axis's default); each grid is the cartesian product of its axes.
A grid may set ``token_budget`` instead of ``batch``: batch = token_budget // seq_len (the paper's Figure 2).
Axis overrides from the CLI replace that axis in every grid.
A preset with ``kind = "probe"`` is a capability probe: its settings are ``ProbeSettings`` and its grid axes the
probe's (fastformer_bench.probe.point); the same loader checks both.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from fastformer_bench import axes

if TYPE_CHECKING:  # pragma: no cover
    from fastformer_bench.point import Settings
    from fastformer_bench.probe.point import ProbeSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).parent
GRID_KEYS = (*axes.NAMES, "token_budget")


@dataclass
class Preset:
    name: str
    description: str
    settings: dict
    grids: list[dict]
    #: "speed" (timed points) or "probe" (trained models)
    kind: str = "speed"


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def load(name_or_path: str) -> Preset:
    """A preset by name (this folder) or by path to a TOML file; ValueError with one sentence otherwise."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = HERE / f"{name_or_path}.toml"
        if not path.exists():
            raise ValueError(f"unknown preset {name_or_path!r}; known: {', '.join(names())}.")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"preset {path} is not valid TOML: {exc}.") from None
    grids = data.get("grid")
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) for g in grids):
        raise ValueError(f"preset {path} needs at least one [[grid]] table.")
    kind = data.get("kind", "speed")
    if kind not in ("speed", "probe"):
        raise ValueError(f"preset {path}: kind must be \"speed\" or \"probe\", got {kind!r}.")
    grid_keys = GRID_KEYS
    if kind == "probe":
        from fastformer_bench.probe.point import NAMES as grid_keys
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise ValueError(f"preset {path}: [settings] must be a table.")
    for grid in grids:
        unknown = set(grid) - set(grid_keys)
        if unknown:
            raise ValueError(f"preset {path} has unknown grid axes {sorted(unknown)}; known: {', '.join(grid_keys)}.")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"preset {path}: grid axis {key!r} must be a non-empty list.")
            if not all(isinstance(v, str | int | float) for v in values):
                raise ValueError(f"preset {path}: grid axis {key!r} must list plain values, got {values!r}.")
    grids = [select_impls(grid, path) for grid in grids]
    preset = Preset(name=str(data.get("name", path.stem)), description=str(data.get("description", "")),
                    settings=settings, grids=grids, kind=kind)
    try:
        settings_for(preset)  # a preset with senseless settings is refused when it is read, not when it runs
    except ValueError as exc:
        raise ValueError(f"preset {path}: {exc}") from None
    return preset


def settings_for(preset: Preset, **changes: object) -> Settings | ProbeSettings:
    """The preset's Settings (ProbeSettings for a probe preset) with ``changes`` in place (a change of None is
    none): the one place a run's settings are built and checked, whether they come from a preset file, the
    command line or a Python caller. ValueError with one sentence for an unknown setting or a senseless value."""
    if preset.kind == "probe":
        from fastformer_bench.probe.point import ProbeSettings as made
    else:
        from fastformer_bench.point import Settings as made
    values = {**preset.settings, **{key: value for key, value in changes.items() if value is not None}}
    known = sorted(f.name for f in fields(made))
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {known}.")
    return made(**values)


DEFAULTS = {name: [value] for name, value in axes.defaults().items()}


def expand(preset: Preset, overrides: dict[str, list] | None = None):
    """The preset's Problems in grid order, without duplicates, and the combinations skipped with reasons.

    A probe preset gives ProbePoints (and skips nothing: an impossible probe point is a ValueError).
    """
    if preset.kind == "probe":
        from fastformer_bench.probe.point import expand as expand_probe

        return expand_probe(preset.grids, overrides), []
    from fastformer_bench.problem import Problem

    overrides = overrides or {}
    problems, skipped, seen = [], [], set()
    for grid in preset.grids:
        axes = {**DEFAULTS, **grid, **overrides}
        if "token_budget" in axes:
            if "batch" in overrides:
                axes.pop("token_budget")
            else:
                axes.pop("batch")
        axis_names = list(axes)
        for combo in itertools.product(*(axes[n] for n in axis_names)):
            params = dict(zip(axis_names, combo))
            budget = params.pop("token_budget", None)
            if budget is not None:
                params["batch"] = max(1, int(budget) // int(params["seq_len"]))
            problem = Problem(**params)
            if problem.point_id in seen:
                continue
            seen.add(problem.point_id)
            reason = problem.skip_reason()
            if reason:
                skipped.append((problem, reason))
            else:
                problems.append(problem)
    return problems, skipped


def select_impls(grid: dict, path: Path) -> dict:
    """``grid`` with each selector in its ``impl`` list replaced by the built-in implementations (the registry's
    own table, no plugin) it selects, in registry order: "@linear" (work linear in N) or "@baselines" (the softmax
    baselines the report compares with), either with "-uncompiled" for only those that do not compile. A preset
    that selects instead of naming takes a new implementation on arrival; ValueError for an unknown selector."""
    if not any(str(value).startswith("@") for value in grid.get("impl", ())):
        return grid
    from fastformer_bench import impls

    kinds = {"linear": lambda impl: not impl.quadratic, "baselines": lambda impl: impl.baseline_rank is not None}
    builtin = [impls.get(name) for name in impls.names()
               if impls.REGISTRY.entries[name][0].startswith(f"{impls.__name__}.")]
    names = []
    for value in grid["impl"]:
        kind, _, only = str(value).removeprefix("@").partition("-")
        if not str(value).startswith("@"):
            names.append(value)
        elif kind in kinds and only in ("", "uncompiled"):
            names += [impl.name for impl in builtin if kinds[kind](impl) and not (only and impl.compiles)]
        else:
            raise ValueError(f"preset {path}: unknown implementation selector {value!r}; known: @linear and "
                             "@baselines, either with -uncompiled.")
    return {**grid, "impl": list(dict.fromkeys(names))}
