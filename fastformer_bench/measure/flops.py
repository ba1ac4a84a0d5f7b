"""Work counts: analytic FLOPs, minimal bytes, and two independent counters to check them against.

Conventions. A FLOP is one floating-point operation; a multiply-add is 2 FLOPs. B batch, N tokens, D width,
H heads, Dh = D/H, C columns, A = C - 1 aggregations. "Elementwise" ops cost 1 per element; a softmax over a row
costs 5 per element (max, subtract, exp, sum, divide); the 1/sqrt(Dh) score scale costs 1 per score. Masking (a
select and a final multiply by 0/1) is not counted: the analytic count describes the unmasked problem.

Additive core, forward, per aggregation (A of them):
    scores s = <G, w_c>           2·B·N·D          scale  B·H·N       softmax  5·B·H·N
    global g = sum_n a_n G_n      2·B·N·D          (quadratic reference: P·G, P the [N×N] weights per (b, h): 2·B·N²·D)
    product G' = x_{c+1} * g      B·N·D
  linear total = A·(5·B·N·D + 6·B·H·N);  quadratic total = A·(2·B·N²·D + 3·B·N·D + 6·B·H·N)
Additive core, backward, per aggregation (derived by hand from the chain rule):
    dx_{c+1} = dY*g  B·N·D;  dg = sum_n dY*x_{c+1}  2·B·N·D;  da_n = <dg, G_n>  2·B·N·D;
    dG = a*dg + ds*w·scale  3·B·N·D;  dw = sum ds*G  2·B·N·D;  softmax backward a*(da - sum a*da)  4·B·H·N;
    scale  B·H·N                                                  -> 10·B·N·D + 5·B·H·N (2x the forward matmuls)
  quadratic reference: dP = dG'·G^T and dG = P^T·dG' (2·B·N²·D each), the expand's backward sums P's rows
    (B·H·N²), the product's two gradients (2·B·N·D), score path as above (4·B·N·D + 5·B·H·N)
                                                                  -> 4·B·N²·D + B·H·N² + 6·B·N·D + 5·B·H·N
Softmax core (naive and sdpa alike: the same algorithm), forward: QK^T 2·B·N²·D, scale B·H·N², softmax
5·B·H·N², AV 2·B·N²·D. Backward: dV, dP, dQ, dK are 4 matmuls of 2·B·N²·D; dS = P*(dP - rowsum(P*dP)) 4·B·H·N²
and the scale B·H·N² (flash kernels recompute the forward in backward: extra work the analytic count omits).
Layer scope adds the Linears, each Linear(i -> o) on M = B·N rows: forward 2·M·i·o + M·o (bias), backward
4·M·i·o (dx and dW) + M·o (db). Additive layer: in-proj D -> C·D, out-proj D -> D, residual add B·N·D forward
(its backward is a pass-through, not counted). Softmax layer: in-proj D -> 3·D, out-proj D -> D, no residual.

Minimal bytes: the compulsory traffic of stages that each read their inputs once and write their outputs once
(small per-(b, h) vectors such as g stay on chip). Backward of a stage reads the gradient of its output and its
inputs again, and writes a gradient for every input. It is a lower bound: the global reductions force more
passes than this in practice. Additive core: reads C·B·N·D + A·D (x and w), writes B·N·D. Softmax core: reads
3·B·N·D, writes B·N·D. Layer scope: one stage that reads x and every parameter once and writes the output (the
columns, the core's output and the residual are intermediates a fused layer keeps on chip). The record holds
the reads and the writes apart too (``bytes_read_min``, ``bytes_written_min``; they sum to ``bytes_min``).

Counters. ``counter_flops`` is torch's FlopCounterMode (2 per multiply-add, matmul-like ops only) plus the list
of arithmetic ops it has no formula for; dynamo will not run a compiled step under a dispatch mode, so compiled
steps give (None, [why]): count their eager equivalent. ``fvcore_flops`` is fvcore's FlopCountAnalysis, whose
unit is one multiply-add; the handles added here express every op in that unit (an elementwise op is half a
unit per element, a softmax 2.5), so 2 x fvcore equals the analytic count wherever both see the same ops.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable

import torch

from fastformer_bench.measure import Meter, Subject

ADDITIVE, SOFTMAX = "additive", "softmax"


def _check(family: str, scope: str, mode: str) -> None:
    if family not in (ADDITIVE, SOFTMAX):
        raise ValueError(f"unknown family {family!r}; known: additive, softmax.")
    if scope not in ("core", "layer"):
        raise ValueError(f"unknown scope {scope!r}; known: core, layer.")
    if mode not in ("fwd", "fwd_bwd"):
        raise ValueError(f"unknown mode {mode!r}; known: fwd, fwd_bwd.")


def _linear_flops(rows: int, i: int, o: int, backward: bool) -> int:
    return (4 * rows * i * o + rows * o) if backward else (2 * rows * i * o + rows * o)


def analytic_flops(family: str, quadratic: bool, scope: str, mode: str, batch: int, seq_len: int, width: int,
                   heads: int, columns: int) -> int:
    """FLOPs of one call (2 per multiply-add); the formulas are in the module docstring."""
    _check(family, scope, mode)
    B, N, D, H = batch, seq_len, width, heads
    bwd = mode == "fwd_bwd"
    if family == ADDITIVE:
        A = columns - 1
        if quadratic:
            core = A * (2 * B * N * N * D + 3 * B * N * D + 6 * B * H * N)
            if bwd:
                core += A * (4 * B * N * N * D + B * H * N * N + 6 * B * N * D + 5 * B * H * N)
        else:
            core = A * (5 * B * N * D + 6 * B * H * N)
            if bwd:
                core += A * (10 * B * N * D + 5 * B * H * N)
        in_cols, residual = columns, B * N * D
    else:
        core = 4 * B * N * N * D + 6 * B * H * N * N
        if bwd:
            core += 8 * B * N * N * D + 5 * B * H * N * N
        in_cols, residual = 3, 0
    if scope == "core":
        return core
    layer = _linear_flops(B * N, D, in_cols * D, False) + _linear_flops(B * N, D, D, False) + residual
    if bwd:
        layer += _linear_flops(B * N, D, in_cols * D, True) + _linear_flops(B * N, D, D, True)
    return core + layer


def _stage_bytes(reads: int, writes: int, output: int, bwd: bool) -> tuple[int, int]:
    """(elements read, elements written) by one stage; its backward reads the output gradient and its inputs
    again, and writes a gradient for every input."""
    return reads + ((output + reads) if bwd else 0), writes + (reads if bwd else 0)


def minimal_bytes(family: str, scope: str, mode: str, batch: int, seq_len: int, width: int, heads: int,
                  columns: int, dtype_bytes: int) -> int:
    """Minimal bytes read + written by one call; the model is in the module docstring."""
    return sum(minimal_bytes_split(family, scope, mode, batch, seq_len, width, heads, columns, dtype_bytes))


def minimal_bytes_split(family: str, scope: str, mode: str, batch: int, seq_len: int, width: int, heads: int,
                        columns: int, dtype_bytes: int) -> tuple[int, int]:
    """(minimal bytes read, minimal bytes written) by one call: minimal_bytes apart, so a reader can set each
    implementation against the roof of its own mix (read, write or copy: measure/env.py traffic_roofs)."""
    _check(family, scope, mode)
    bwd = mode == "fwd_bwd"
    tokens = batch * seq_len * width  # one [B, N, D] tensor
    C = columns if family == ADDITIVE else 3
    static = (columns - 1) * width if family == ADDITIVE else 0  # the learned queries w
    if scope == "core":
        read, written = _stage_bytes(C * tokens + static, tokens, tokens, bwd)
        return read * dtype_bytes, written * dtype_bytes
    # A layer is one stage to the memory system: x and the parameters in, the output out. Its columns are
    # intermediates a fused layer never needs to write (adding each internal stage's traffic overstated it 5x).
    params = C * width * width + C * width + width * width + width + static
    read, written = _stage_bytes(tokens + params, tokens, tokens, bwd)
    return read * dtype_bytes, written * dtype_bytes


# -- torch's FlopCounterMode --------------------------------------------------------------------------------

# Ops that move or select data without floating-point arithmetic: not worth reporting as "uncounted".
_NO_ARITHMETIC = {
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::zeros", "aten::zeros_like", "aten::ones",
    "aten::ones_like", "aten::full", "aten::full_like", "aten::fill_", "aten::zero_", "aten::copy_",
    "aten::clone", "aten::_to_copy", "aten::detach", "aten::cat", "aten::stack", "aten::index_select",
    "aten::masked_fill", "aten::where", "aten::lift_fresh", "aten::new_empty", "aten::new_zeros",
    "aten::new_empty_strided", "aten::arange", "aten::bitwise_not", "aten::logical_not", "aten::eq",
    "aten::ne", "aten::lt", "aten::gt", "aten::le", "aten::ge", "aten::_local_scalar_dense", "aten::resize_",
    "aten::set_", "aten::scalar_tensor", "aten::contiguous", "aten::_unsafe_view", "aten::expand",
    "aten::as_strided_scatter", "aten::slice_scatter", "aten::select_scatter", "aten::fill",
    "aten::select_backward", "aten::slice_backward", "aten::expand_copy", "aten::permute_copy", "aten::view_copy",
}


def _op_name(func) -> str:
    return func.name().split(".")[0]  # "aten::mul.Tensor" -> "aten::mul"


def counter_flops(step: Callable[[], object]) -> tuple[int | None, list[str]]:
    """(FlopCounterMode's total for one call, arithmetic aten ops that ran but it has no formula for)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    registry = counter.flop_registry
    missed: set[str] = set()

    class _Recorder(TorchDispatchMode):
        # Entered outside FlopCounterMode, so it sees the ops FlopCounterMode could not decompose further.
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = _op_name(func)
            if (func._overloadpacket not in registry and not getattr(func, "is_view", False)
                    and name not in _NO_ARITHMETIC and name.startswith("aten::")):
                missed.add(name)
            return func(*args, **(kwargs or {}))

    try:
        with _Recorder(), counter:
            step()
    except Exception as exc:  # e.g. a compiled step dynamo cannot trace under the mode
        return None, [f"FlopCounterMode failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    total = int(counter.get_total_flops())
    # Nothing counted while arithmetic ran that it has no formula for (CPU SDPA): unknown, not zero work.
    return (None if total == 0 and missed else total), sorted(missed)


# -- fvcore ---------------------------------------------------------------------------------------------------
# Handles get jit values; they return multiply-add units (fvcore's unit), so elementwise work is 0.5 per element.

def _shape(value) -> list[int] | None:
    try:
        return list(value.type().sizes()) if value.isCompleteTensor() else None
    except Exception:
        return None


def _numel(value) -> int:
    shape = _shape(value)
    return math.prod(shape) if shape is not None else 0


def _einsum_handle(inputs, outputs) -> float:
    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    if any(s is None for s in shapes):
        return 0.0  # shapes unknown to the trace: nothing honest to count
    operands, _, _ = equation.partition("->")
    terms = operands.split(",")
    if len(terms) <= 2 and "..." not in equation:
        sizes: dict[str, int] = {}
        for term, shape in zip(terms, shapes):
            sizes.update(zip(term, shape))
        # A pairwise contraction does one multiply-add per point of the joint index space; a one-operand
        # einsum (a reduction) does one add per point: half a unit.
        return math.prod(sizes.values()) * (1.0 if len(terms) == 2 else 0.5)
    import numpy as np

    path = np.einsum_path(equation, *[np.empty(s) for s in shapes], optimize="optimal")[1]
    found = re.search(r"optimized flop count:\s*([0-9.e+]+)", path, re.IGNORECASE)
    return float(found.group(1)) / 2 if found else 0.0


def _matmul_handle(inputs, outputs) -> float:
    # Vectors included: every output element is a dot product over the first operand's last dimension.
    first = _shape(inputs[0])
    return _numel(outputs[0]) * (first[-1] if first else 0)


def _addmm_handle(inputs, outputs) -> float:
    first = _shape(inputs[1])
    return _numel(outputs[0]) * (first[-1] if first else 0) + 0.5 * _numel(outputs[0])


def _linear_handle(inputs, outputs) -> float:
    first = _shape(inputs[0])
    macs = _numel(outputs[0]) * (first[-1] if first else 0)
    return macs + (0.5 * _numel(outputs[0]) if _shape(inputs[2]) is not None else 0)


def _per_output(flops_per_element: float) -> Callable:
    def handle(inputs, outputs) -> float:
        return flops_per_element / 2 * _numel(outputs[0])
    return handle


def _per_input(flops_per_element: float) -> Callable:
    def handle(inputs, outputs) -> float:
        return flops_per_element / 2 * _numel(inputs[0])
    return handle


def _sdpa_handle(inputs, outputs) -> float:
    q, k, v = (_shape(t) for t in inputs[:3])
    if not (q and k and v):
        return 0.0
    batch = math.prod(q[:-2])
    scores = batch * q[-2] * k[-2]
    # QK^T and AV, plus the scale (1) and the softmax (5) per score: 6 FLOPs = 3 units.
    return scores * q[-1] + scores * v[-1] + 3 * scores


_ELEMENTWISE = ("mul", "mul_", "add", "add_", "sub", "sub_", "rsub", "div", "div_", "neg", "exp", "exp_", "sqrt",
                "rsqrt", "reciprocal", "pow", "tanh", "sigmoid", "relu", "gelu", "silu", "maximum", "minimum")


def _fvcore_handles() -> dict[str, Callable | None]:
    handles: dict[str, Callable | None] = {f"aten::{op}": _per_output(1) for op in _ELEMENTWISE}
    handles.update({
        "aten::einsum": _einsum_handle,
        "aten::matmul": _matmul_handle, "aten::mm": _matmul_handle, "aten::bmm": _matmul_handle,
        "aten::addmm": _addmm_handle, "aten::linear": _linear_handle,
        "aten::softmax": _per_output(5), "aten::_softmax": _per_output(5), "aten::log_softmax": _per_output(5),
        "aten::sum": _per_input(1), "aten::mean": _per_input(1),
        "aten::scaled_dot_product_attention": _sdpa_handle,
        "aten::masked_fill": _per_output(0),  # a select: no arithmetic, as in the analytic count
    })
    return handles


class _Call(torch.nn.Module):
    """fn(*inputs) as a module; non-tensor inputs (a None mask) are held as constants, as tracing requires."""

    def __init__(self, fn: Callable, inputs: tuple):
        super().__init__()
        self.fn, self.inputs = fn, inputs
        self.slots = [i for i, v in enumerate(inputs) if isinstance(v, torch.Tensor)]

    def forward(self, *tensors):
        args = list(self.inputs)
        for slot, tensor in zip(self.slots, tensors):
            args[slot] = tensor
        return self.fn(*args)


def fvcore_flops(fn: Callable, inputs: tuple) -> tuple[int | None, list[str]]:
    """(fvcore's count of fn(*inputs), 1 per multiply-add, ops it still could not count); (None, [why]) on failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its import touches torch.jit APIs that now warn
            from fvcore.nn import FlopCountAnalysis
    except Exception as exc:
        return None, [f"fvcore unavailable: {type(exc).__name__}: {exc}"]
    module = _Call(fn, tuple(inputs))
    tensors = tuple(inputs[i] for i in module.slots)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; failures still raise
            analysis = FlopCountAnalysis(module, tensors).set_op_handle(**_fvcore_handles())
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            total = analysis.total()
            skipped = sorted(analysis.unsupported_ops())
    except Exception as exc:
        return None, [f"fvcore failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    return int(round(total)), skipped


def _measure(subject: Subject) -> dict:
    """The analytic counts, and (with the count_flops setting) what the two op-level counters see."""
    from fastformer_bench.problem import forward, make_step

    problem, impl, inputs = subject.problem, subject.impl, subject.inputs
    shape = dict(batch=problem.batch, seq_len=problem.seq_len, width=problem.width, heads=problem.heads,
                 columns=problem.columns)
    read, written = minimal_bytes_split(impl.family, problem.scope, problem.mode,
                                        dtype_bytes=problem.torch_dtype.itemsize, **shape)
    work = {
        "flops": analytic_flops(impl.family, impl.quadratic, problem.scope, problem.mode, **shape),
        "bytes_min": read + written, "bytes_read_min": read, "bytes_written_min": written,
        "flops_fvcore": None, "flops_counter": None, "flops_notes": {},
    }
    if not subject.settings.count_flops:
        return work
    notes: dict = {}
    # The counters see aten ops: a fused kernel is opaque to them and torch.compile's graph is eager's.
    counted_impl = impl.counted_as or problem.impl
    if impl.opaque_to_counters:
        notes["fvcore_skipped"] = notes["counter_missing"] = [f"{problem.impl} kernel (opaque to op-level counters)"]
    else:
        if problem.mode == "fwd":
            def fwd_fn(*args):
                return forward(problem, inputs, counted_impl)
            count, skipped = fvcore_flops(fwd_fn, ())
            work["flops_fvcore"], notes["fvcore_skipped"] = count, skipped
        else:
            notes["fvcore_skipped"] = ["fvcore counts forward graphs only"]
        count, missing = counter_flops(make_step(problem, inputs, counted_impl))
        work["flops_counter"], notes["counter_missing"] = count, missing
    work["flops_notes"] = notes
    return work


#: analytic work describes the problem, not the run: it is recorded for an incorrect point too
METER = Meter(name="work", fields=("flops", "bytes_min", "bytes_read_min", "bytes_written_min", "flops_fvcore",
                                   "flops_counter", "flops_notes"),
              measure=_measure, needs_correct=False)
