"""Comparison helper shared by the correctness tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fastformer_bench import impls as registry


def registered(family: str, *, compiles: bool | None = None) -> list[str]:
    """The registered implementations of ``family`` (with ``compiles``, only those that do / do not compile).

    Tests parametrize over this, never over hand-written names: a new implementation is tested on arrival.
    Compiling ones (torch.compile ~10 s a shape on two cores, Triton's interpreter) run on fixed cases apart.
    """
    return [name for name in registry.names() if registry.get(name).family == family
            and (compiles is None or registry.get(name).compiles == compiles)]


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
