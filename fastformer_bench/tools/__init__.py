"""Tools around the benchmark that are neither commands of the CLI nor tests.

The gate's self-test (scripts/gate_selftest.py runs it) measures the regression gate's own error rates: its
deliberately slowed candidates in slowed_impls.py, the snapshot and scoring of its gates in gate_selftest.py.
This package imports nothing at import time, so a worker that loads a slowed candidate as a plugin loads no more.
"""
