"""torch.compile of the eager implementation.

One compiled graph per (shapes, strides class, dtype, device, mask presence, grad mode), cached here, so the
harness can time the first call apart (``compiles=True`` → ``compile_s``) and never mixes it into samples.

A silent fallback to eager would be timed as "compiled" and lie. Two guards make it loud instead:
``fullgraph=True`` turns any graph break into an exception, and hitting dynamo's recompile limit raises
(``fail_on_recompile_limit_hit``) instead of quietly running eager. Either surfaces as
:class:`CompileFallbackError`, which the harness records as an error, not a time.
"""

from __future__ import annotations

import os
import shutil

import torch

from fastformer_bench.impls import ADDITIVE, Impl
from fastformer_bench.impls.additive_eager import additive_attention_core
from fastformer_bench.impls.checks import check_additive


class CompileFallbackError(RuntimeError):
    """torch.compile could not compile the whole call and would have run (part of) it eagerly."""


_compiled = None


def _configure_dynamo() -> None:
    import torch._dynamo.config as dynamo_config

    # Each benchmarked shape is its own static graph; a sweep visits many shapes, so allow many, and make
    # running out an error rather than a silent fallback.
    for name, value in (("recompile_limit", 512), ("cache_size_limit", 512), ("accumulated_recompile_limit", 4096),
                        ("accumulated_cache_size_limit", 4096), ("fail_on_recompile_limit_hit", True)):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, value)


def _compiled_core():
    global _compiled
    if _compiled is None:
        _configure_dynamo()
        _compiled = torch.compile(additive_attention_core, fullgraph=True, dynamic=False)
    return _compiled


def compiled_additive_attention(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    check_additive(x, w, mask)
    try:
        return _compiled_core()(x, w, mask)
    except Exception as exc:  # dynamo wraps graph breaks / limits in several exception types
        name = type(exc).__name__
        if "Unsupported" in name or "RecompileLimit" in name or "CacheLimit" in name or "graph break" in str(exc):
            first_line = (str(exc).splitlines() or [""])[0]
            raise CompileFallbackError(f"torch.compile fell back to eager ({name}): {first_line}") from exc
        raise


def _supports(device: torch.device, dtype: torch.dtype) -> str | None:
    # Inductor's CPU backend writes C++ and builds it: without a compiler every call would fail.
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++")
                                        if c):
        return "torch.compile's CPU backend needs a C++ compiler (g++ or clang++) and none is on PATH"
    return None


COMPILED = Impl(
    name="compiled",
    family=ADDITIVE,
    fn=compiled_additive_attention,
    description="torch.compile(fullgraph=True, dynamic=False) of eager; graph breaks and recompile limits raise",
    supports=_supports,
    compiles=True,
    expected_exponent=(0.8, 1.2),
    counted_as="eager",
)
