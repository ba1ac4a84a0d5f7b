"""Which implementation checks a point: the quadratic ground truth where its pairwise matrix is affordable, else
the fallback reference its implementation names (docs/design.md §4.2). Below point.py and plan.py, which both ask."""

from __future__ import annotations

from fastformer_bench import impls as registry
from fastformer_bench.problem import Problem

#: the quadratic ground truth materialises B·H·N² float64 weights; above this it is not "affordable"
REFERENCE_BUDGET_BYTES = 2 * 2**30


def reference_for(problem: Problem) -> str:
    """The implementation a point is checked against: the quadratic ground truth when affordable."""
    truth = registry.get(registry.get(problem.impl).reference)
    pairwise = problem.batch * problem.heads * problem.seq_len**2 * 8
    if truth.quadratic and truth.fallback_reference and pairwise * 2 > REFERENCE_BUDGET_BYTES:
        # The fallback may be the point's own implementation: then the float64 run checks the low-precision
        # one's numerics, and the correctness suite is what ties that implementation to the reference.
        return truth.fallback_reference
    return truth.name
