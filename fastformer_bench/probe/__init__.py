"""The capability probe: what additive attention can still learn, measured beside its speed (docs/design.md §3.5).

tasks.py (synthetic tasks from a seed), model.py (models that differ only in the mixer), train.py (deterministic
CPU training, the static-query analysis), point.py (axes, settings, grid), runner.py (the sweep into a results
store), cli.py (`run --preset probe...`). The report is report/probe.py.
"""
