"""A run's plan before it runs (``fastformer-bench run --dry-run``): each CUDA point's predicted wall time in the
sweep and peak device memory on a GPU model, and the totals, from the expanded points alone: nothing is measured
and no GPU is needed, so a session on a lent GPU can be sized to its lease beforehand.

A point's wall time is mostly not its timed call. The model follows ``point.measure_point``:

- **inputs**: ``problem.make_inputs`` draws a CUDA point's values once, on the device, in its dtype (a layer's
  weights on the host), and the float64 check upcasts those values on the device (``point._reference_inputs``);
  before, every value was drawn in float64 on one host thread, twice, and copied over (``FIRST_SESSION_HOST``);
- **compile**: the first call of a compiling implementation, timed apart: a Triton JIT per kernel variant, or
  torch.compile per shape, dtype and mode (tens of times slower);
- **check**: one call of the point and one of its float64 reference (``references.reference_for``), and the comparison;
  for an additive core whose whole check would not fit (``check_method``), the chunked check instead
  (``reference_chunked``: a few passes over N, one chunk's float64 values held at a time);
- **timing** (measure/timing.py, measure/cuda_timing.py): warm-up, the sampler's set-up (three calls, and a graph's
  capture), then windows of samples of k calls lasting at least ``sample_target_s`` each;
- **meters**: the energy window (at least MIN_WINDOW_S of the same calls, and as long again of flushes when
  cold), peak memory (two calls), the FLOP counters where enabled;
- **fixed**: a cost per point (NVML, the allocator, the record) and per process (imports, CUDA, run.json's roofs
  at the start and the end).

A call is priced by what bounds it: a linear implementation by the bytes it must move (``minimal_bytes``) over a
share of the device's copy bandwidth, fused softmax attention by its FLOPs (``analytic_flops``) over the attention
kernels' rate, a materialised float64 reference by both. An implementation's profile comes from its registry facts
(:func:`profile_of`), never its name. Peak memory adds the point's inputs and gradients, its working set, and the
check's float64 copies and comparison temporaries, which are most of it at large sizes (or one chunk's, chunked).

The shares, rates and costs are calibrated on the first GPU session (results/gpu-check, an H200: the stages it
finished and the one each was stopped in) and the machine notes in docs/gpu.md. They size a session; they are no
result.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class DeviceModel:
    """One GPU kind as the plan sees it: its memory, its copy bandwidth and its L2."""

    name: str
    label: str
    #: the board's memory, the vendor's round figure (the usable total is a little above it: a margin)
    memory_bytes: int
    #: bytes read plus written per second by a large device-to-device copy (85 % of the datasheet bandwidth)
    copy_bytes_per_s: float
    l2_bytes: int


DEVICES = {
    "h100": DeviceModel("h100", "NVIDIA H100 80GB HBM3", 80 * 10**9, 0.85 * 3.35e12, 50 * 2**20),
    "h200": DeviceModel("h200", "NVIDIA H200", 141 * 10**9, 0.85 * 4.8e12, 60 * 2**20),
}
DEFAULT_DEVICE = "h100"


@dataclass(frozen=True)
class Host:
    """The harness's costs outside the timed calls, the same on either device model."""

    #: float64 normal values per second that torch.randn draws with a CPU generator (serial whatever the threads)
    draw_values_per_s: float = 40e6
    #: how many times each input value is drawn: once (the float64 check upcasts the point's own values; before,
    #: it drew them all again: FIRST_SESSION_HOST)
    draws_per_value: int = 1
    #: whether a CUDA point's inputs are drawn on the device (problem.make_inputs, input_draw "cuda-<dtype>")
    draw_on_device: bool = True
    #: normal values per second torch.randn draws with a CUDA generator in a 2-byte dtype (Philox: a few bytes
    #: written per value; well below the copy bandwidth, a margin)
    device_draw_values_per_s: float = 20e9
    #: a blocking host-to-device copy from pageable memory
    h2d_bytes_per_s: float = 10e9
    #: values per second cast from float64 on the host before such a copy
    cast_values_per_s: float = 1e9
    #: a sweep process's start (imports, CUDA context, the environment, the start roofs) and its end roofs
    process_start_s: float = 12.0
    process_end_s: float = 3.0
    #: every point: NVML's clock read, gc, the allocator's cache emptied, the record written and fsynced
    point_s: float = 0.8
    #: one sample's host side (two events, one sync) and a graph's capture beyond the calls it records
    sample_overhead_s: float = 60e-6
    capture_s: float = 0.02
    #: the share of sampling windows measured again for a spread above max_spread, where retries are allowed
    retry_share: float = 0.5
    #: what FlopCounterMode and fvcore add to a point where count_flops is on
    flop_counters_s: float = 1.5
    #: a materialised reference's per-block cost (a few launches from Python), fwd and fwd_bwd
    block_s: tuple[float, float] = (60e-6, 180e-6)
    #: device memory outside torch's allocator (the CUDA context, cuBLAS and cuDNN workspaces)
    context_bytes: int = 2 * 10**9
    #: rates of float64 and float32 matrix work on these GPUs (FP64 tensor cores; no TF32 by default)
    float64_flops_per_s: float = 25e12
    float32_flops_per_s: float = 50e12


HOST = Host()
#: the harness the first GPU session ran (code 076751c, results/gpu-check): every value drawn in float64 on the
#: host, twice (the point's inputs, then the float64 check's), and copied to the device
FIRST_SESSION_HOST = replace(HOST, draws_per_value=2, draw_on_device=False)
#: the energy meter's window of device time (measure/energy.py MIN_WINDOW_S; not imported: it pulls in NVML)
ENERGY_WINDOW_S = 1.0
#: the materialised softmax reference's scores per block of query rows (impls/softmax.py BLOCK_BYTES)
BLOCK_BYTES = 2**28


@dataclass(frozen=True)
class Profile:
    """How one kind of implementation runs, for the plan: what bounds its call and what it holds."""

    name: str
    #: bytes_min / time as a share of the copy bandwidth, (fwd, fwd_bwd); None where FLOPs bound it
    roof_share: tuple[float, float] | None = None
    #: FLOP/s on analytic FLOPs by input dtype, (fwd, fwd_bwd); None where bytes bound it
    flops_per_s: dict[str, tuple[float, float]] | None = None
    #: a call's fixed cost (its launches), (fwd, fwd_bwd)
    floor_s: tuple[float, float] = (20e-6, 100e-6)
    #: working set beyond the inputs (outputs and gradients included), in [B, N, D] tensors of the compute dtype:
    #: fwd, and fwd_bwd as a constant plus so many per column
    work: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: compile costs: (the implementation's first compile in the process, the first of each dtype and mode, each
    #: new shape), for fwd and for fwd_bwd; None where nothing compiles
    compile_fwd: tuple[float, float, float] | None = None
    compile_bwd: tuple[float, float, float] | None = None
    #: the memory model's own bytes (Impl.memory_model) are its working set; False: ``work`` alone
    materialised: bool = False


#: a fused linear kernel (Triton): one pass per column; shares and floors as the first H200 session timed them
FUSED_LINEAR = Profile("fused linear", roof_share=(0.20, 0.10), floor_s=(0.25e-3, 1.3e-3), work=(1.0, 1.0, 1.0),
                       compile_fwd=(0.0, 1.5, 0.4), compile_bwd=(0.0, 3.2, 0.6))
#: op-by-op PyTorch: a few kernels per column, each a pass over [B, N, D]
OPS = Profile("op by op", roof_share=(0.04, 0.03), floor_s=(0.4e-3, 3e-3), work=(2.0, 1.0, 3.0))
#: torch.compile of op-by-op code: Inductor's kernels, compiled per shape, dtype and mode
COMPILED_OPS = Profile("torch.compile", roof_share=(0.045, 0.03), floor_s=(0.6e-3, 3e-3), work=(5.0, 4.0, 3.0),
                       compile_fwd=(15.0, 0.0, 3.5), compile_bwd=(15.0, 5.0, 9.0))
#: fused softmax attention (SDPA's flash / memory-efficient kernels): O(N) memory, FLOP-bound
FUSED_ATTENTION = Profile("fused attention", flops_per_s={"bfloat16": (450e12, 250e12), "float16": (450e12, 250e12),
                                                          "float32": (20e12, 12e12), "float64": (2e12, 1e12)},
                          floor_s=(30e-6, 0.5e-3), work=(1.0, 3.0, 1.0))
#: the N x N weights materialised (the quadratic ground truths, softmax_naive): FLOPs and N^2 passes
MATERIALISED = Profile("materialised", flops_per_s={"bfloat16": (300e12, 200e12), "float16": (300e12, 200e12),
                                                    "float32": (HOST.float32_flops_per_s,) * 2,
                                                    "float64": (HOST.float64_flops_per_s,) * 2},
                       floor_s=(50e-6, 0.3e-3), work=(1.0, 1.0, 1.0), materialised=True)


def profile_of(impl) -> Profile:
    """The profile of an implementation from its registry facts: a linear one opaque to op-level counters is a
    fused kernel, a linear one that compiles otherwise is torch.compile's, any other linear one runs op by op; a
    softmax baseline with no memory model is a fused attention kernel; every other quadratic one materialises."""
    if not impl.quadratic:
        if impl.opaque_to_counters:
            return FUSED_LINEAR
        return COMPILED_OPS if impl.compiles else OPS
    if impl.baseline_rank is not None and impl.memory_model is None:
        return FUSED_ATTENTION
    return MATERIALISED


@dataclass
class PointPlan:
    """One point's prediction: seconds in the sweep by part, its call, its peak device memory."""

    problem: object  # fastformer_bench.problem.Problem
    call_s: float
    parts: dict[str, float]
    peak_bytes: int
    reference: str
    #: the float64 check's method: "whole", or "chunked" where the whole check would not fit (reference_chunked)
    check: str = "whole"
    #: "oom" where the preset expects this point above the device's memory
    expected: str | None = None

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())


@dataclass
class Plan:
    preset: str
    device: DeviceModel
    points: list[PointPlan]
    skipped: list = field(default_factory=list)
    #: points the model does not predict (CPU points), with the reason
    unplanned: list = field(default_factory=list)
    time_limit_s: float | None = None
    process_s: float = HOST.process_start_s + HOST.process_end_s

    @property
    def total_s(self) -> float:
        return self.process_s + sum(p.seconds for p in self.points)

    @property
    def largest(self) -> PointPlan | None:
        return max(self.points, key=lambda p: p.peak_bytes, default=None)

    def over_memory(self) -> list[PointPlan]:
        """Points predicted above the device's memory that the preset does not expect to run out of it."""
        return [p for p in self.points if p.peak_bytes > self.device.memory_bytes and p.expected != "oom"]

    def over_time_limit(self) -> list[PointPlan]:
        """Points predicted past the point time limit (the limit counts from before the inputs are drawn)."""
        limit = self.time_limit_s
        return [p for p in self.points if limit is not None and p.seconds > limit]

    def by_part(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for p in self.points:
            for part, seconds in p.parts.items():
                totals[part] = totals.get(part, 0.0) + seconds
        return totals


# ---------------------------------------------------------------------------------------------- the model


def _dtype_bytes(dtype: str) -> int:
    return {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}[dtype]


def _values(problem) -> int:
    """Input values make_inputs draws: the columns (or the layer's x and weights), w, and grad_out in fwd_bwd."""
    B, N, D, C = problem.batch, problem.seq_len, problem.width, problem.columns
    tokens = B * N * D
    if problem.scope == "core":
        values = C * tokens + (C - 1) * D
    else:
        columns = C if problem.family == "additive" else 3
        values = tokens + (columns + 1) * D * D + (columns + 1) * D
    return values + (tokens if problem.mode == "fwd_bwd" else 0)


def _outputs(problem) -> int:
    """Values the check compares: the output, and in fwd_bwd every input's gradient."""
    tokens = problem.batch * problem.seq_len * problem.width
    return tokens + (_values(problem) - tokens if problem.mode == "fwd_bwd" else 0)


def _largest_output(problem) -> int:
    tokens = problem.batch * problem.seq_len * problem.width
    return problem.columns * tokens if problem.mode == "fwd_bwd" and problem.scope == "core" else tokens


def call_seconds(problem, impl, device: DeviceModel, dtype: str | None = None) -> float:
    """One call of ``impl`` on ``problem``'s shape in ``dtype`` (default the point's), as its profile prices it."""
    from fastformer_bench.measure.flops import analytic_flops, minimal_bytes

    dtype = dtype or impl.compute_dtype or problem.dtype
    profile, bwd = profile_of(impl), int(problem.mode == "fwd_bwd")
    shape = dict(batch=problem.batch, seq_len=problem.seq_len, width=problem.width, heads=problem.heads,
                 columns=problem.columns)
    seconds = profile.floor_s[bwd]
    if profile.roof_share is not None:
        moved = minimal_bytes(impl.family, problem.scope, problem.mode, dtype_bytes=_dtype_bytes(dtype), **shape)
        seconds += moved / (profile.roof_share[bwd] * device.copy_bytes_per_s)
    if profile.flops_per_s is not None:
        flops = analytic_flops(impl.family, impl.quadratic, problem.scope, problem.mode, **shape)
        seconds += flops / profile.flops_per_s[dtype][bwd]
    if profile.materialised:
        seconds += _materialised_traffic_s(problem, impl, device, dtype)
    return seconds


def _pairs(problem) -> int:
    return problem.batch * problem.heads * problem.seq_len**2


def _materialised_traffic_s(problem, impl, device: DeviceModel, dtype: str) -> float:
    """The N x N weights' passes through memory, and where no memory model bounds them, the blocks' launches."""
    bwd = problem.mode == "fwd_bwd"
    passes = 20 if bwd else 6  # scores, scale, softmax, product; backward recomputes a checkpointed block
    seconds = passes * _pairs(problem) * _dtype_bytes(dtype) / device.copy_bytes_per_s
    if impl.memory_model is None:
        rows = max(1, BLOCK_BYTES // (2 * problem.batch * problem.heads * problem.seq_len * _dtype_bytes(dtype)))
        seconds += math.ceil(problem.seq_len / rows) * HOST.block_s[int(bwd)]
    return seconds


def working_bytes(problem, impl, dtype: str | None = None) -> int:
    """What one call holds beyond its inputs: its profile's working set, or its memory model plus its outputs."""
    dtype = dtype or impl.compute_dtype or problem.dtype
    profile, bwd = profile_of(impl), problem.mode == "fwd_bwd"
    tokens = problem.batch * problem.seq_len * problem.width * _dtype_bytes(dtype)
    tensors = profile.work[1] + profile.work[2] * problem.columns if bwd else profile.work[0]
    held = int(tensors * tokens)
    if profile.materialised:
        if impl.memory_model is not None:
            held += impl.memory_model(batch=problem.batch, seq_len=problem.seq_len, width=problem.width,
                                      heads=problem.heads, columns=problem.columns,
                                      dtype_bytes=_dtype_bytes(dtype), backward=bwd)
        else:
            held += 3 * BLOCK_BYTES  # one block's scores, weights and their product
    return held


def _compile_seconds(problem, impl, seen: set) -> float:
    """The first call's compile, given the (implementation, dtype, mode, shape) already compiled in this process."""
    profile = profile_of(impl)
    costs = profile.compile_bwd if problem.mode == "fwd_bwd" else profile.compile_fwd
    if not impl.compiles or costs is None:
        return 0.0
    first, per_kind, per_shape = costs
    kind = (problem.impl, problem.dtype, problem.mode, problem.scope, problem.masked)
    shape = (*kind, problem.batch, problem.seq_len, problem.width, problem.heads, problem.columns)
    seconds = 0.0
    if problem.impl not in seen:
        seconds += first
    if kind not in seen:
        seconds += per_kind
    if shape not in seen:
        seconds += per_shape
    seen.update({problem.impl, kind, shape})
    return seconds


def _method(problem, name: str) -> str | None:
    """A method axis's value (timing, cache) where this version has it, else None (the old per-call timing)."""
    method = getattr(problem, "method", None)
    return method(name) if callable(method) else None


def _timing_seconds(call_s: float, problem, settings, device: DeviceModel) -> tuple[float, float]:
    """(the time meter's seconds, the energy meter's) for a call of ``call_s``."""
    timing, cold = _method(problem, "timing"), _method(problem, "cache") in (None, "cold")
    flush_s = 2 * device.l2_bytes / device.copy_bytes_per_s if cold else 0.0
    per_call = call_s + flush_s
    # samples of k calls lasting at least the target (measure/cuda_timing.py), one call each before it existed
    target = max(1e-3, settings.min_time_s / settings.min_samples) if timing else per_call
    calls = max(1, math.ceil(target / per_call))
    sample = calls * per_call * (2 if cold and timing else 1) + HOST.sample_overhead_s
    samples = min(settings.max_samples, max(settings.min_samples, math.ceil(settings.min_time_s / sample)))
    window = min(samples * sample, max(30.0, sample))
    windows = 1 + (HOST.retry_share * (settings.max_attempts - 1) if settings.max_spread is not None else 0)
    warm_up = max(settings.warmup_s, 2 * call_s)
    set_up = 3 * call_s + calls * per_call  # the per-call estimate, and the first sample
    if timing == "graph":
        set_up += calls * per_call + HOST.capture_s  # the body's run before its capture, and the capture
    energy = 0.0
    if settings.measure_energy:
        energy = max(ENERGY_WINDOW_S, sample) * (2 if cold and timing else 1)
    return warm_up + set_up + windows * window, energy


def _host_values(problem) -> int:
    """Input values make_inputs draws on the host even for a CUDA point: a layer's weights."""
    if problem.scope == "core":
        return 0
    columns = problem.columns if problem.family == "additive" else 3
    D = problem.width
    return (columns + 1) * D * D + (columns + 1) * D


def inputs_seconds(problem, device: DeviceModel, host: Host = HOST) -> float:
    """Drawing the point's inputs (and the check's, where it draws again), casting and carrying them."""
    values, dtype_bytes = _values(problem), _dtype_bytes(problem.dtype)
    if host.draw_on_device:
        on_host = _host_values(problem)
        on_device = values - on_host
        seconds = on_device / host.device_draw_values_per_s
        # the check's float64 copies are made on the device from the drawn values
        seconds += on_device * (dtype_bytes + 8) / device.copy_bytes_per_s
        values = on_host
    else:
        seconds = 0.0
    draw = host.draws_per_value * values / host.draw_values_per_s
    carry = values * (dtype_bytes + 8) / host.h2d_bytes_per_s + values / host.cast_values_per_s
    return seconds + draw + carry


def plan_point(problem, settings, device: DeviceModel, compiled: set, host: Host = HOST) -> PointPlan:
    """The prediction for one CUDA point; ``compiled`` holds what earlier points of the process compiled; ``host``
    the harness's costs (FIRST_SESSION_HOST for the code that drew inputs on the host)."""
    from fastformer_bench import impls
    from fastformer_bench.references import reference_for

    impl = impls.get(problem.impl)
    ref_name = reference_for(problem)
    ref = impls.get(ref_name)
    method = check_method(problem, ref, device)
    call = call_seconds(problem, impl, device)
    if method == "chunked":
        ref_call = chunked_check_seconds(problem, device)
    else:
        ref_call = call_seconds(problem, ref, device, dtype="float64")
    compare = 4 * _outputs(problem) * 8 / device.copy_bytes_per_s
    timing, energy = _timing_seconds(call, problem, settings, device)
    meters = energy + 2 * call
    if settings.count_flops:
        meters += HOST.flop_counters_s + 3 * call
    parts = {"inputs": inputs_seconds(problem, device, host), "compile": _compile_seconds(problem, impl, compiled),
             "check": call + ref_call + compare, "timing": timing, "meters": meters, "fixed": HOST.point_s}
    return PointPlan(problem=problem, call_s=call, parts=parts, reference=ref_name, check=method,
                     peak_bytes=peak_bytes(problem, impl, ref, device, method))


def whole_check_bytes(problem, ref) -> int:
    """What the whole float64 check holds beyond the point's inputs and its kept outputs: the inputs' float64
    copies, with its reference's working set, or with the reference's outputs and the comparison's temporaries
    ((got - want).abs(): the difference and its absolute value, in float64, of the largest output)."""
    ref_in, ref_out = _values(problem) * 8, _outputs(problem) * 8
    return max(ref_in + working_bytes(problem, ref, dtype="float64"),
               ref_in + ref_out + 2 * _largest_output(problem) * 8)


def check_method(problem, ref, device: DeviceModel) -> str:
    """The float64 check the point gets on ``device``, as reference_chunked.method_for chooses it there: chunked
    where it is eligible and the whole check would not fit beside the point's inputs and kept outputs."""
    from fastformer_bench import reference_chunked

    if not reference_chunked.eligible(problem):
        return reference_chunked.WHOLE
    dtype_bytes = _dtype_bytes(problem.dtype)
    held = (_values(problem) + _outputs(problem)) * dtype_bytes + HOST.context_bytes
    room = device.memory_bytes - held
    chunked = whole_check_bytes(problem, ref) > reference_chunked.WHOLE_SHARE * room
    return reference_chunked.CHUNKED if chunked else reference_chunked.WHOLE


def chunked_check_seconds(problem, device: DeviceModel) -> float:
    """The chunked float64 check's reference (reference_chunked.check_core): C passes over the tokens forward
    (C - 1 poolings, the output) and C more backward, each pass's chunk upcast and run through a few float64
    temporaries (CHUNKED_PASS_BYTES per element) at CHUNKED_SHARE of the copy bandwidth, plus every chunk's
    launches."""
    from fastformer_bench.reference_chunked import chunk_tokens

    bwd = int(problem.mode == "fwd_bwd")
    elements = problem.batch * problem.seq_len * problem.width
    passes = problem.columns * (1 + bwd)
    traffic = passes * elements * CHUNKED_PASS_BYTES[bwd]
    chunks = math.ceil(problem.seq_len / chunk_tokens(problem.batch, problem.width))
    return traffic / (CHUNKED_SHARE * device.copy_bytes_per_s) + chunks * passes * CHUNKED_CHUNK_S[bwd]


#: bytes moved per token element per pass by the chunked check (fwd pass, fwd_bwd pass: autograd's saved
#: tensors and gradients), its share of the copy bandwidth, and one chunk's launches from Python per pass
CHUNKED_PASS_BYTES = (100, 300)
CHUNKED_SHARE = 0.5
CHUNKED_CHUNK_S = (0.3e-3, 1.2e-3)


def peak_bytes(problem, impl, ref, device: DeviceModel, method: str = "whole") -> int:
    """The most device memory the point holds at once: during its own call, its float64 check (``method``: the
    whole check's reference call and comparison, or one chunk of the chunked check's), or its timing (a graph's
    pool beside the inputs), plus what lives outside torch's allocator."""
    from fastformer_bench.reference_chunked import CHUNK_BYTES, CHUNKED

    point_in = _values(problem) * _dtype_bytes(problem.dtype)
    kept = _outputs(problem) * _dtype_bytes(problem.dtype)  # the point's outputs and gradients, kept for the check
    own = point_in + working_bytes(problem, impl)
    check = CHUNK_BYTES if method == CHUNKED else whole_check_bytes(problem, ref)
    cold = _method(problem, "cache") in (None, "cold")
    timing = point_in + 2 * working_bytes(problem, impl) + (2 * device.l2_bytes if cold else 0)
    return max(own, point_in + kept + check, timing) + HOST.context_bytes


# ---------------------------------------------------------------------------------------------- text

TOTAL_LINE = "predicted run time:"


def _label(problem, name: str) -> str:
    return str(_method(problem, name) or "-")


def format_plan(plan: Plan) -> list[str]:
    """The plan as text: a line per point (with the running total), then the totals and what needs a look."""
    device = plan.device
    lines = [f"dry run of preset {plan.preset} on the {device.name} model ({device.label}: "
             f"{device.memory_bytes / 1e9:.0f} GB, copy {device.copy_bytes_per_s / 1e12:.2f} TB/s); nothing is "
             "measured",
             f"{'#':>4}  {'impl':13s} {'dtype':9s} {'mode':8s} {'timing':6s} {'cache':5s} {'B':>3s} {'N':>8s} "
             f"{'D':>5s} {'H':>3s} {'C':>2s} {'call ms':>9s} {'point s':>8s} {'cum s':>7s} {'peak GB':>8s}  note"]
    running = plan.process_s - HOST.process_end_s
    for index, point in enumerate(plan.points, 1):
        p = point.problem
        running += point.seconds
        note = []
        if point.peak_bytes > device.memory_bytes:
            note.append("expected oom" if point.expected == "oom" else "ABOVE THE DEVICE'S MEMORY")
        if point.check == "chunked":
            note.append("float64 check in chunks")
        if plan.time_limit_s is not None and point.seconds > plan.time_limit_s:
            note.append(f"past the {plan.time_limit_s:g} s point limit")
        lines.append(f"{index:4d}  {p.impl:13s} {p.dtype:9s} {p.mode:8s} {_label(p, 'timing'):6s} "
                     f"{_label(p, 'cache'):5s} {p.batch:3d} {p.seq_len:8d} {p.width:5d} {p.heads:3d} "
                     f"{p.columns:2d} {point.call_s * 1e3:9.3f} {point.seconds:8.1f} {running:7.1f} "
                     f"{point.peak_bytes / 1e9:8.1f}  {', '.join(note)}".rstrip())
    for problem, reason in plan.skipped:
        lines.append(f"   -  {problem.impl:13s} {problem.dtype:9s} {problem.mode:8s} not planned: {reason}")
    for reason, impl_counts in _grouped(plan.unplanned).items():
        counts = ", ".join(f"{impl} {count}" for impl, count in impl_counts.items())
        lines.append(f"   -  {sum(impl_counts.values())} points not planned ({counts}): {reason}")
    largest = plan.largest
    lines.append(f"points: {len(plan.points)} planned, {len(plan.skipped)} skipped, {len(plan.unplanned)} not "
                 f"planned; the process's start and end: {plan.process_s:.0f} s")
    parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in plan.by_part().items())
    if parts:
        lines.append(f"by part: {parts}")
    if largest is not None:
        p = largest.problem
        against = largest.reference if largest.check == "whole" else "the chunked core"
        lines.append(f"largest peak: {largest.peak_bytes / 1e9:.1f} GB of {device.memory_bytes / 1e9:.0f} GB "
                     f"(#{plan.points.index(largest) + 1}: {p.impl} {p.dtype} {p.mode} B={p.batch} N={p.seq_len} "
                     f"D={p.width}; checked against {against} in float64)")
    chunked = sum(p.check == "chunked" for p in plan.points)
    if chunked:
        lines.append(f"float64 check in chunks over N (reference_chunked): {chunked} points, where the whole check "
                     "would not fit")
    over, late = plan.over_memory(), plan.over_time_limit()
    expected = [p for p in plan.points if p.expected == "oom"]
    lines.append(f"above the device's memory: {len(over)} unexpected, {len(expected)} expected oom; past the point "
                 f"time limit: {len(late)}")
    left_out = f"; the {len(plan.unplanned)} points not planned are not in it" if plan.unplanned else ""
    lines.append(f"{TOTAL_LINE} {plan.total_s:.1f} s ({plan.total_s / 60:.1f} min){left_out}")
    return lines


def _grouped(unplanned: list) -> dict[str, Counter]:
    """Points not planned by reason, each reason's count per implementation, in the sweep's order."""
    grouped: dict[str, Counter] = {}
    for problem, reason in unplanned:
        grouped.setdefault(reason, Counter())[problem.impl] += 1
    return grouped
