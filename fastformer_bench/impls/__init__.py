"""The registry of implementations.

Every implementation is an :class:`Impl`: a name, a family (``additive`` or ``softmax``), the function that
computes the core, and a ``supports`` check that says, for a device and a dtype, why it cannot run (or ``None``
when it can). Adding an implementation is one file in this folder and one line in ``REGISTRY`` below; from
outside the package, FASTFORMER_BENCH_PLUGINS or ``registered(impl)`` for a block of code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastformer_bench.plugins import Registry

ADDITIVE = "additive"
SOFTMAX = "softmax"
#: what the public API and the layers run when no implementation is named
DEFAULT_ADDITIVE = "eager"
DEFAULT_SOFTMAX = "softmax_sdpa"


def _always(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


@dataclass(frozen=True)
class Impl:
    """One implementation of one family.

    ``fn`` is ``fn(x, w, mask)`` for the additive family (x: [C, B, N, D], w: [C-1, H, Dh]) and
    ``fn(q, k, v, heads, mask)`` for the softmax family (q, k, v: [B, N, D]).
    """

    name: str
    family: str
    fn: Callable[..., torch.Tensor]
    description: str
    supports: Callable[[torch.device, torch.dtype], str | None] = _always
    #: the implementation the harness checks this one against (the ground truth of its family)
    reference: str = "reference"
    #: the first call compiles (torch.compile, Triton JIT): the harness times it apart as ``compile_s``
    compiles: bool = False
    #: the work grows as N^2 (quadratic reference, materialised softmax): used by FLOP counts and reports
    quadratic: bool = False
    #: for a ground truth too large to run (B·H·N² weights): the trusted implementation run in float64 instead
    fallback_reference: str | None = None
    #: op-level FLOP counters run this implementation instead (torch.compile's graph is eager's ops)
    counted_as: str | None = None
    #: a fused kernel that op-level FLOP counters cannot see into
    opaque_to_counters: bool = False
    #: a softmax baseline the report compares additive implementations with (1 = the primary one), or None
    baseline_rank: int | None = None
    #: the time exponent in N expected at large N, (low, high or None); None: no expectation to check
    expected_exponent: tuple[float, float | None] | None = None
    #: the dtype it computes in whatever the inputs' dtype (the float64 ground truth); None: the inputs' dtype
    compute_dtype: str | None = None
    #: bytes one call needs beyond its inputs, predicted from the shape (batch, seq_len, width, heads, columns,
    #: dtype_bytes, backward): a point predicted above the memory cap is recorded oom before it allocates. None
    #: where the need is linear in N and small beside the inputs.
    memory_model: Callable[..., int] | None = None

    @property
    def complexity(self) -> str:
        return "quadratic" if self.quadratic else "linear"

    def unsupported_reason(self, device: torch.device | str, dtype: torch.dtype) -> str | None:
        """A sentence saying why this implementation cannot run here, or None when it can."""
        return self.supports(torch.device(device), dtype)

    def core(self, x: torch.Tensor, w: torch.Tensor | None, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
        """Run the core on stacked columns x [C, B, N, D], whatever the family.

        The softmax family reads x[0], x[1], x[2] as q, k, v and ignores w.
        """
        if self.family == ADDITIVE:
            return self.fn(x, w, mask)
        return self.fn(x[0], x[1], x[2], heads, mask)


#: implementations from outside the package: "module:ATTRIBUTE" separated by commas (how the tests add
#: deliberately broken or slow ones; the variable reaches ``run --isolate`` workers and the gate's sides too)
PLUGIN_ENV = "FASTFORMER_BENCH_PLUGINS"

# Adding an implementation: one file in this folder and one line here (name -> module, attribute).
REGISTRY: Registry[Impl] = Registry("implementation", Impl, PLUGIN_ENV, {
    "reference": ("fastformer_bench.impls.additive_naive", "REFERENCE"),
    "eager": ("fastformer_bench.impls.additive_eager", "EAGER"),
    "compiled": ("fastformer_bench.impls.additive_compiled", "COMPILED"),
    "triton": ("fastformer_bench.impls.additive_triton", "TRITON"),
    "softmax_naive": ("fastformer_bench.impls.softmax", "SOFTMAX_NAIVE"),
    "softmax_sdpa": ("fastformer_bench.impls.softmax", "SOFTMAX_SDPA"),
    "stream": ("fastformer_bench.impls.additive_stream", "STREAM"),
    "softmax_blocked": ("fastformer_bench.impls.softmax", "SOFTMAX_BLOCKED"),
})
names, get, registered = REGISTRY.names, REGISTRY.get, REGISTRY.registered


def facts(name: str) -> dict:
    """What the report needs to know about an implementation, copied into each of its records (docs/design.md §4.1)."""
    impl = get(name)
    return {"family": impl.family, "complexity": impl.complexity, "baseline_rank": impl.baseline_rank,
            "expected_exponent": list(impl.expected_exponent) if impl.expected_exponent else None,
            "display_order": names().index(name)}
