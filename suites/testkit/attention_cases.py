"""The correctness tests' cases and checks: the shapes they run (one table), masks and inputs, the registered
implementations and dtypes as pytest params, a tolerance-by-dtype comparison, forward and gradients of a case."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from fastformer_bench import impls as registry

#: (B, N, H, Dh) by test id: odd sizes, so a mistake in the head split, masking or tiling shows
SHAPES = {
    "N1-H1-Dh5": (1, 1, 1, 5),
    "N37-H3-Dh5": (2, 37, 3, 5),
    "N16-H1-Dh24": (3, 16, 1, 24),
    "N37-H4-Dh24": (2, 37, 4, 24),
    "N8-H4-Dh4": (2, 8, 4, 4),  # H == Dh, several heads: a swapped or interleaved head split type-checks here
    # the stream kernel's vector code takes Dh % 8 == 0, with head tiles of 8, 4, 2 and 1 vectors (Dh = 64, 32,
    # 16, 8, 24 = 2 + 1, 136 = 8 + 8 + 1); Dh = 5 and 4 above take its scalar code
    "N1-H2-Dh8": (2, 1, 2, 8),
    "N37-H1-Dh24": (3, 37, 1, 24),
    "N19-H2-Dh136": (1, 19, 2, 136),
    "N45-H3-Dh16": (2, 45, 3, 16),
    "N33-H2-Dh64": (2, 33, 2, 64),
}
#: the shapes of the additive and softmax tests (the stream kernel's own tests take STREAM_SHAPES)
COMMON_SHAPES = ("N1-H1-Dh5", "N37-H3-Dh5", "N16-H1-Dh24", "N37-H4-Dh24", "N8-H4-Dh4")
#: both code paths of the stream kernel
STREAM_SHAPES = ("N1-H1-Dh5", "N37-H3-Dh5", "N8-H4-Dh4", "N1-H2-Dh8", "N37-H1-Dh24", "N19-H2-Dh136", "N45-H3-Dh16",
                 "N33-H2-Dh64")


def shape_params(names: tuple[str, ...] = COMMON_SHAPES) -> list:
    """The shapes called ``names`` in SHAPES, as pytest params whose ids are their names."""
    return [pytest.param(SHAPES[name], id=name) for name in names]


def registered(family: str, *, compiles: bool | None = None) -> list:
    """The registered implementations of ``family`` (with ``compiles``, only those that do / do not compile), as
    pytest params.

    Tests parametrize over this, never over hand-written names: a new implementation is tested on arrival.
    Compiling ones (torch.compile ~10 s a shape on two cores, Triton's interpreter) run on fixed cases apart.
    """
    found = [name for name in registry.names() if registry.get(name).family == family
             and (compiles is None or registry.get(name).compiles == compiles)]
    # one that cannot run on this CPU (stream without a C++ compiler) is skipped with its reason, not failed
    return [pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=f"{name}: {reason}"))
            for name in found for reason in [registry.get(name).unsupported_reason("cpu", torch.float32)]]


def low_dtype_params(cpu_supports: Callable[[torch.dtype], bool]) -> list:
    """float32, bfloat16, float16 as pytest params, each skipped where ``cpu_supports`` says the CPU lacks it."""
    return [pytest.param(dt, id=str(dt).removeprefix("torch."),
                         marks=pytest.mark.skipif(not cpu_supports(dt), reason=f"{dt} not supported on CPU"))
            for dt in (torch.float32, torch.bfloat16, torch.float16)]


def make_assert_close(tolerances: dict[torch.dtype, float]) -> Callable[..., None]:
    """An ``assert_close(actual, expected, dtype, what)`` whose tolerance, relative to max |expected|, is by dtype."""

    def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
        assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        actual, expected = actual.detach().double(), expected.detach().double()
        assert torch.isfinite(actual).all(), f"{what}: non-finite values"
        tol = tolerances[dtype]
        scale = float(expected.abs().max()) if expected.numel() else 1.0
        torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1e-12),
                                   msg=lambda m: f"{what}: {m}")

    return assert_close


def make_mask(batch: int, seq_len: int, kind: str | None, gen: torch.Generator) -> torch.Tensor | None:
    """None; "ragged" (row 0 full when B > 1, the last row short, others random lengths); "holes" (random
    real tokens anywhere, at least one per row)."""
    if kind is None:
        return None
    if kind == "ragged":
        lengths = torch.randint(1, seq_len + 1, (batch,), generator=gen)
        lengths[-1] = max(1, seq_len // 3)
        if batch > 1:
            lengths[0] = seq_len
        return torch.arange(seq_len)[None, :] < lengths[:, None]
    assert kind == "holes"
    mask = torch.rand(batch, seq_len, generator=gen) < 0.6
    mask[torch.arange(batch), torch.randint(0, seq_len, (batch,), generator=gen)] = True
    return mask


def make_case(C: int, B: int, N: int, H: int, Dh: int, mask_kind: str | None = None, seed: int = 0):
    """float64 x [C, B, N, D], w [C-1, H, Dh], mask, grad_out [B, N, D]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(C, B, N, H * Dh, generator=gen, dtype=torch.float64)
    w = torch.randn(C - 1, H, Dh, generator=gen, dtype=torch.float64) / math.sqrt(Dh)
    grad_out = torch.randn(B, N, H * Dh, generator=gen, dtype=torch.float64)
    return x, w, make_mask(B, N, mask_kind, gen), grad_out


def run(fn, x, w, mask, grad_out):
    """Forward and the gradients of x and w for backward(grad_out); x and w are copied as fresh leaves."""
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    out = fn(x, w, mask)
    gx, gw = torch.autograd.grad(out, (x, w), grad_out.to(out.dtype))
    return out.detach(), gx, gw
