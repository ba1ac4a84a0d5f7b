"""A preset's GPU plan (`run --dry-run`): its points, in the order a sweep measures them, through the cost model
of plan.py, with the preset's ``[[expect_oom]]`` selectors. Apart from plan.py so that the model stays below the
point and the presets (the float64 check asks the model what a whole check would hold)."""

from __future__ import annotations

import sys
from pathlib import Path

from fastformer_bench import axes, presets
from fastformer_bench.plan import DEFAULT_DEVICE, DEVICES, Plan, plan_point

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def expected_oom(preset_path: Path | None, device: str) -> list[dict]:
    """The preset's ``[[expect_oom]]`` selectors that apply on ``device``: points measured on purpose past the
    device's memory (each key an axis and its values; ``device_model`` limits a selector to those models)."""
    if preset_path is None or not preset_path.exists():
        return []
    tables = tomllib.loads(preset_path.read_text()).get("expect_oom", [])
    found = []
    for table in tables:
        unknown = sorted(set(table) - {*axes.NAMES, "device_model"}) if isinstance(table, dict) else None
        if unknown is None or unknown or not all(isinstance(v, list) for v in table.values()):
            raise ValueError(f"preset {preset_path}: each [[expect_oom]] must be a table of axis lists"
                             f"{f' (unknown: {unknown})' if unknown else ''}.")
        models = table.get("device_model", list(DEVICES))
        if device in models:
            found.append({key: values for key, values in table.items() if key != "device_model"})
    return found


def _selected(problem, selector: dict) -> bool:
    return all(getattr(problem, key, None) in values for key, values in selector.items())


def _preset_path(name_or_path: str) -> Path | None:
    """The TOML file presets.load reads for ``name_or_path``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    path = presets.HERE / f"{name_or_path}.toml"
    return path if path.exists() else None


def plan_preset(name_or_path: str, device: str = DEFAULT_DEVICE, overrides: dict | None = None,
                settings: dict | None = None) -> Plan:
    """The plan of a preset's points (with the run's axis overrides, lists or command-line text, and setting
    changes) on a device model, in the order a sweep measures them, in one process."""
    if device not in DEVICES:
        raise ValueError(f"unknown device model {device!r}; known: {', '.join(DEVICES)}.")
    preset = presets.load(name_or_path)
    if preset.kind != "speed":
        raise ValueError(f"--dry-run plans speed presets; {preset.name!r} is a {preset.kind} preset.")
    chosen = presets.settings_for(preset, **(settings or {}))
    parsed = {name: axes.get(name).parse(values) if isinstance(values, str) else list(values)
              for name, values in (overrides or {}).items()}
    problems, skipped = presets.expand(preset, parsed)
    selectors = expected_oom(_preset_path(name_or_path), device)
    model, compiled = DEVICES[device], set()
    points, unplanned = [], []
    for problem in problems:
        if problem.device != "cuda":
            unplanned.append((problem, "CPU points: the plan models GPU points only"))
            continue
        planned = plan_point(problem, chosen, model, compiled)
        if any(_selected(problem, selector) for selector in selectors):
            planned.expected = "oom"
        points.append(planned)
    return Plan(preset=preset.name, device=model, points=points, skipped=skipped, unplanned=unplanned,
                time_limit_s=chosen.time_limit_s)
