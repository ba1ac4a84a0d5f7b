"""The registry of implementations.

Every implementation is an :class:`Impl`: a name, a family (``additive`` or ``softmax``), the function that
computes the core, and a ``supports`` check that says, for a device and a dtype, why it cannot run (or ``None``
when it can). Adding an implementation is one file in this folder and one line in ``_REGISTERED`` below.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

ADDITIVE = "additive"
SOFTMAX = "softmax"


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


# name -> (module, attribute). Modules are imported lazily so that a missing optional dependency (triton)
# makes that one implementation unsupported instead of breaking the registry.
_REGISTERED: dict[str, tuple[str, str]] = {
    "reference": ("fastformer_bench.impls.additive_naive", "REFERENCE"),
    "eager": ("fastformer_bench.impls.additive_eager", "EAGER"),
    "compiled": ("fastformer_bench.impls.additive_compiled", "COMPILED"),
    "triton": ("fastformer_bench.impls.additive_triton", "TRITON"),
    "softmax_naive": ("fastformer_bench.impls.softmax", "SOFTMAX_NAIVE"),
    "softmax_sdpa": ("fastformer_bench.impls.softmax", "SOFTMAX_SDPA"),
}

_loaded: dict[str, Impl] = {}

#: extra implementations from outside the package, "module:ATTRIBUTE" separated by commas: how a user plugs in
#: an implementation without editing this file (and how the tests add deliberately broken or slow ones; the
#: variable reaches the processes of ``run --isolate`` and the gate's worktree runs too)
PLUGIN_ENV = "FASTFORMER_BENCH_PLUGINS"


def _load_plugins() -> None:
    for entry in filter(None, (e.strip() for e in os.environ.get(PLUGIN_ENV, "").split(","))):
        module, _, attr = entry.partition(":")
        if not attr:
            raise ValueError(f"{PLUGIN_ENV} entry {entry!r} must look like module:ATTRIBUTE.")
        try:
            impl = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{PLUGIN_ENV} entry {entry!r} cannot be loaded: {exc}.") from None
        if not isinstance(impl, Impl):
            raise ValueError(f"{PLUGIN_ENV} entry {entry!r} is not an Impl.")
        _REGISTERED.setdefault(impl.name, (module, attr))


_load_plugins()


def names() -> list[str]:
    """Every registered implementation name, in a stable order."""
    return list(_REGISTERED)


def get(name: str) -> Impl:
    """The implementation called ``name``; ``ValueError`` for an unknown name."""
    if name not in _REGISTERED:
        raise ValueError(f"unknown implementation {name!r}; known: {', '.join(_REGISTERED)}.")
    if name not in _loaded:
        module, attr = _REGISTERED[name]
        _loaded[name] = getattr(importlib.import_module(module), attr)
    return _loaded[name]

