"""Problem: one point of a sweep — its parameters, its inputs, and the step the harness times."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from fastformer_bench import axes
from fastformer_bench import impls as registry
from fastformer_bench.layers import FastformerLayer, SoftmaxAttentionLayer

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in axes.DTYPES}


def _default(name: str):
    return axes.get(name).default


@dataclass(frozen=True)
class Problem:
    """One point: a value for every axis of ``axes.AXES`` (the field names are the axis names)."""

    impl: str
    batch: int
    seq_len: int
    width: int
    heads: int
    columns: int = _default("columns")
    dtype: str = _default("dtype")
    device: str = _default("device")
    mode: str = _default("mode")
    scope: str = _default("scope")
    masked: bool = _default("masked")
    seed: int = _default("seed")
    #: CPU threads of the timed step; None: the run's setting (Settings.threads), as before this axis existed
    threads: int | None = _default("threads")
    #: how a CUDA point is timed (graph | launch) and whether its L2 starts cold; None: axes.CUDA_DEFAULTS
    timing: str | None = _default("timing")
    cache: str | None = _default("cache")
    #: the measuring process's allocator condition (measure/allocator.py); None: the sweep process's own, warm
    allocator: str | None = _default("allocator")

    def __post_init__(self) -> None:
        axes.validate(self.params())
        registry.get(self.impl)  # ValueError for an unknown name
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}.")

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return registry.get(self.impl).family

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def params(self) -> dict:
        """The point's axes; an optional axis holding None is left out (its point_id predates the axis, and a
        baseline revision without that axis can still build the Problem from these)."""
        return {name: value for name, value in asdict(self).items()
                if value is not None or not axes.get(name).optional}

    @property
    def point_id(self) -> str:
        """A stable hash of the parameters: the same point in two runs has the same id."""
        blob = json.dumps(self.params(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def skip_reason(self) -> str | None:
        """Why this combination makes no sense (skipped, not an error), or None."""
        if self.family == registry.SOFTMAX and self.columns != 3:
            return "softmax attention has exactly three columns (q, k, v)"
        named = [name for name in axes.CUDA_DEFAULTS if getattr(self, name) is not None]
        if named and self.device != "cuda":
            axis = "axes apply" if len(named) > 1 else "axis applies"
            return f"the {' and '.join(named)} {axis} to CUDA points only (a CPU point is timed by the wall clock)"
        return None

    def method(self, name: str) -> str | None:
        """The value of the method axis ``name`` (timing, cache) this point is measured with: its own, the CUDA
        default where it names none, None on a CPU."""
        if name not in axes.CUDA_DEFAULTS:  # the allocator: what the point names (None: the sweep's own, warm)
            return getattr(self, name)
        if self.device != "cuda":
            return None
        return getattr(self, name) or axes.CUDA_DEFAULTS[name]

    def with_(self, **changes) -> Problem:
        return Problem(**{**self.params(), **changes})


@dataclass
class Inputs:
    """Everything one call needs. ``x`` is [C, B, N, D] (core) or [B, N, D] (layer)."""

    x: torch.Tensor
    w: torch.Tensor | None
    mask: torch.Tensor | None
    layer: torch.nn.Module | None = None
    grad_out: torch.Tensor | None = None
    leaves: list[torch.Tensor] = field(default_factory=list)
    #: how the values were drawn (the record's ``input_draw``): "cpu-float64", or "cuda-<dtype>" on the device
    draw: str = "cpu-float64"


def ragged_mask(batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """Row 0 is full; the others keep a random length in [N/2, N] (at least one token)."""
    lengths = torch.randint(max(1, seq_len // 2), seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    return torch.arange(seq_len)[None, :] < lengths[:, None]


def input_draw(device: str | torch.device, dtype: torch.dtype) -> str:
    """How ``make_inputs`` draws values for ``device`` in ``dtype``: "cpu-float64" (a CPU generator in float64, then
    cast and copied: the same values in any dtype and device) or "cuda-<dtype>" (a device generator, in the dtype)."""
    if torch.device(device).type == "cuda":
        return f"cuda-{str(dtype).removeprefix('torch.')}"
    return "cpu-float64"


def make_inputs(problem: Problem, dtype: torch.dtype | None = None, device: str | None = None,
                impl: str | None = None) -> Inputs:
    """Deterministic inputs for ``problem``.

    On a CPU every value is drawn in float64 from a CPU generator seeded with the point's seed, then cast: the same
    seed gives the same values in any dtype. On CUDA the columns, w and grad_out are drawn on the device by a device
    generator seeded with the point's seed, in the point's dtype (deterministic per seed and GPU kind; on one host
    thread the float64 draws took 0.15 s per million B·N·D); the ragged mask and a layer's weights, small, are
    still drawn on the host. ``Inputs.draw`` says which.
    """
    dtype = dtype or problem.torch_dtype
    device = device or problem.device
    impl = impl or problem.impl
    draw = input_draw(device, dtype)
    gen = torch.Generator().manual_seed(problem.seed)
    if draw == "cpu-float64":
        def randn(*shape: int, divisor: float = 1.0) -> torch.Tensor:
            values = torch.randn(*shape, generator=gen, dtype=torch.float64)
            return (values if divisor == 1.0 else values / divisor).to(device=device, dtype=dtype)
    else:
        device_gen = torch.Generator(device=device).manual_seed(problem.seed)

        def randn(*shape: int, divisor: float = 1.0) -> torch.Tensor:
            values = torch.randn(*shape, generator=device_gen, dtype=dtype, device=device)
            return values if divisor == 1.0 else values / divisor
    B, N, D, H, C = problem.batch, problem.seq_len, problem.width, problem.heads, problem.columns
    mask = ragged_mask(B, N, gen).to(device) if problem.masked else None
    needs_grad = problem.mode == "fwd_bwd"
    if problem.scope == "core":
        x = randn(C, B, N, D)
        w = randn(C - 1, H, D // H, divisor=math.sqrt(D // H))
        x.requires_grad_(needs_grad)
        w.requires_grad_(needs_grad)
        leaves, layer = [x, w], None
    else:
        layer_cls = FastformerLayer if problem.family == registry.ADDITIVE else SoftmaxAttentionLayer
        kwargs = {"columns": C} if layer_cls is FastformerLayer else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(problem.seed)
            layer = layer_cls(D, H, impl=impl, **kwargs).to(dtype=torch.float64)
        layer = layer.to(device=device, dtype=dtype)
        x = randn(B, N, D)
        x.requires_grad_(needs_grad)
        w = None
        leaves = [x, *layer.parameters()]
        for p in layer.parameters():
            p.requires_grad_(needs_grad)
    grad_out = None
    if needs_grad:
        grad_out = randn(B, N, D)
    return Inputs(x=x, w=w, mask=mask, layer=layer, grad_out=grad_out, leaves=leaves, draw=draw)


def forward(problem: Problem, inputs: Inputs, impl: str | None = None) -> torch.Tensor:
    """One forward call of ``impl`` (default: the problem's) on ``inputs``."""
    chosen = registry.get(impl or problem.impl)
    if problem.scope == "layer":
        layer = inputs.layer
        built_with, layer.impl = layer.impl, chosen.name  # the same weights through another core
        try:
            return layer(inputs.x, inputs.mask)
        finally:
            layer.impl = built_with
    return chosen.core(inputs.x, inputs.w, inputs.mask, problem.heads)


def make_step(problem: Problem, inputs: Inputs, impl: str | None = None) -> Callable[[], torch.Tensor]:
    """The callable the harness times: forward (no autograd graph) or forward + backward.

    In ``fwd_bwd`` mode gradients are reset before every call, so they never accumulate across samples.
    """
    if problem.mode == "fwd":
        def step() -> torch.Tensor:
            with torch.no_grad():
                return forward(problem, inputs, impl)
        return step

    def step_bwd() -> torch.Tensor:
        for leaf in inputs.leaves:
            leaf.grad = None
        out = forward(problem, inputs, impl)
        out.backward(inputs.grad_out)
        return out
    return step_bwd


def gradients(inputs: Inputs) -> list[torch.Tensor | None]:
    return [leaf.grad for leaf in inputs.leaves]
