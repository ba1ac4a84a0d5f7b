"""Benchmarks only: skipped, not failed, where pytest-benchmark is missing."""

import pytest

pytest.importorskip("pytest_benchmark")
