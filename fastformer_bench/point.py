"""One point, start to end: a shared preflight (supported? inputs, correctness), then every registered meter.

``measure_point`` turns a :class:`Problem` into one record (docs/design.md §4.1) and never raises for a failure of the
point itself: out-of-memory, a time limit, a wrong answer or an exception become the record's status. The
preflight (``preflight``, ``check_correctness``) is also what the gate's workers run before they time anything.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch

from fastformer_bench import axes as axis_table
from fastformer_bench import impls as registry
from fastformer_bench import measure, reference_chunked
from fastformer_bench.impls import buffer_cache
from fastformer_bench.impls.softmax import last_sdpa_backend, reset_sdpa_backend, sdpa_softmax_attention
from fastformer_bench.measure import allocator, memory_cap, timing
from fastformer_bench.measure.cuda_timing import TimingUnsupported
from fastformer_bench.measure.env import cpu_model
from fastformer_bench.measure.threads import threads_set
from fastformer_bench.problem import Inputs, Problem, make_inputs, make_step
from fastformer_bench.ranges import Range, check_ranges
from fastformer_bench.references import REFERENCE_BUDGET_BYTES, reference_for  # noqa: F401 (the point API)
from fastformer_bench.results import REFERENCE_OOM, new_record

#: the axes that say how a point is measured (timing, cache): CUDA points only
METHOD_AXES = axis_table.names(axis_table.METHOD)
#: max |out - ref| / max |ref| allowed, by the dtype the implementation ran in (the reference runs in float64)
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 5e-3, "bfloat16": 4e-2}


#: each numeric setting's range (ranges.Range: type, lowest value, whether it is allowed, whether None is)
_RANGES = {
    "threads": Range(int, 1, True, True), "warmup_s": Range(float, 0.0), "min_time_s": Range(float, 0.0, False),
    "min_samples": Range(int, 1), "max_samples": Range(int, 1), "time_limit_s": Range(float, 0.0, False),
    "max_spread": Range(float, 0.0, False, True), "max_attempts": Range(int, 1), "revisits": Range(int, 0),
    "max_contention": Range(float, 0.0, False, True),
}


@dataclass(frozen=True)
class Settings:
    """How each point is measured (from the preset's [settings] and the CLI); every value is range-checked."""

    threads: int | None = None
    warmup_s: float = 0.2
    min_time_s: float = 1.0
    min_samples: int = 10
    max_samples: int = 100
    time_limit_s: float = 300.0
    count_flops: bool = True
    measure_energy: bool = True
    #: re-measure a sampling window whose (p80 - p20) / median exceeds this, up to max_attempts windows
    max_spread: float | None = None
    max_attempts: int = 1
    #: passes at the end of the sweep that measure again each point still above max_spread (runner.run_sweep)
    revisits: int = 0
    #: pin the process to idle CPUs no other fastformer-bench process holds (cpu_claims.claim_cpus)
    pin_cpus: bool = False
    #: share of the timing the timed threads may wait for their CPU (or lose to the hypervisor) before the point
    #: is measured again, and stored ``contended`` if that happens again (None: recorded, never acted on)
    max_contention: float | None = None

    def __post_init__(self) -> None:
        check_ranges(self, _RANGES)
        for name in ("count_flops", "measure_energy", "pin_cpus"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"setting {name} must be true or false, got {getattr(self, name)!r}.")
        if self.max_contention is not None and self.max_contention > 1:
            raise ValueError(f"setting max_contention is a share of the time (at most 1), got {self.max_contention!r}.")
        timing.check_sampling(self.min_samples, self.max_samples, self.max_spread, self.max_attempts)

    @property
    def digest(self) -> str:
        """A stable hash of every setting: records measured under different settings never share it."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class ReferenceOutOfMemory(MemoryError):
    """The float64 check ran out of memory, not the implementation: its reason starts with REFERENCE_OOM."""


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "not enough memory",
                                   "failed to allocate", "cannot allocate memory"))


def device_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu_model() or platform.processor() or "cpu"


def _reference_inputs(problem: Problem, inputs: Inputs, ref_impl: str) -> Inputs:
    """The point's own inputs upcast to float64, where they are (on the device for a CUDA point), so the check
    sees only the implementation's error on exactly the values that are timed; nothing is drawn again.

    ``ref_impl`` runs through the copied layer as ``problem.forward`` runs any implementation through a layer."""
    needs_grad = problem.mode == "fwd_bwd"

    def upcast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to(torch.float64, copy=True).requires_grad_(needs_grad)

    with torch.no_grad():
        layer = None
        if problem.scope == "core":
            x, w = upcast(inputs.x), upcast(inputs.w)
            leaves = [x, w]
        else:
            x, w = upcast(inputs.x), None
            layer = copy.deepcopy(inputs.layer).to(torch.float64)
            for param in layer.parameters():
                param.grad = None
                param.requires_grad_(needs_grad)
            leaves = [x, *layer.parameters()]
        grad_out = None if inputs.grad_out is None else inputs.grad_out.detach().to(torch.float64, copy=True)
    return Inputs(x=x, w=w, mask=inputs.mask, layer=layer, grad_out=grad_out, leaves=leaves, draw=inputs.draw)


def _outputs(problem: Problem, inputs: Inputs, impl: str) -> list[torch.Tensor]:
    step = make_step(problem, inputs, impl)
    out = step()
    tensors = [out.detach()]
    if problem.mode == "fwd_bwd":
        tensors += [leaf.grad.detach() if leaf.grad is not None else torch.zeros_like(leaf) for leaf in inputs.leaves]
    return tensors


def check_method(problem: Problem, ref_impl: str) -> str:
    """CHUNKED where the point is eligible and the whole check (its float64 copies, its reference's working set and
    the comparison: plan.whole_check_bytes) would take more than WHOLE_SHARE of the room left, else WHOLE. A whole
    check that runs out of memory all the same is redone in chunks (check_correctness)."""
    if not reference_chunked.eligible(problem):
        return reference_chunked.WHOLE
    from fastformer_bench.plan import whole_check_bytes

    room = reference_chunked.room_bytes(problem.device)
    need = whole_check_bytes(problem, registry.get(ref_impl))
    return reference_chunked.CHUNKED if room is not None and need > reference_chunked.WHOLE_SHARE * room \
        else reference_chunked.WHOLE


def check_correctness(problem: Problem, inputs: Inputs) -> dict:
    """Compare the point's outputs (and gradients in fwd_bwd) with its reference in float64: the whole reference on
    float64 copies of the inputs, or, for an additive core whose whole check would not fit in the memory left
    (or ran out of it), the chunked one (reference_chunked); ``reference_method`` says which."""
    ref_impl = reference_for(problem)
    method = check_method(problem, ref_impl)
    got = _outputs(problem, inputs, problem.impl)
    pairs = None
    if method == reference_chunked.WHOLE:
        try:
            pairs = _whole_check(problem, inputs, ref_impl, got)
        except ReferenceOutOfMemory:
            if not reference_chunked.eligible(problem):
                raise
            method = reference_chunked.CHUNKED
    if pairs is None:
        gc.collect()  # outside the except block: its traceback held the whole check's float64 tensors
        if problem.device == "cuda":
            torch.cuda.empty_cache()
        ref_impl = reference_chunked.NAME
        pairs = reference_chunked.check_core(inputs.x, inputs.w, inputs.mask, got,
                                             inputs.grad_out if problem.mode == "fwd_bwd" else None)
    max_abs, max_rel = 0.0, 0.0
    for diff, scale in pairs:
        if not math.isfinite(diff):
            max_abs, max_rel = math.inf, math.inf
            break
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    tol = TOLERANCE[problem.dtype]
    del got
    return {"max_abs_err": max_abs, "max_rel_err": max_rel, "tolerance": tol, "reference_impl": ref_impl,
            "reference_method": method, "ok": max_rel <= tol}


def _whole_check(problem: Problem, inputs: Inputs, ref_impl: str, got: list[torch.Tensor]) -> list[tuple]:
    """(max |got - want|, max |want|) per compared tensor, the reference run whole on float64 copies."""
    try:
        ref_inputs = _reference_inputs(problem, inputs, ref_impl)  # the float64 copies are the check's memory too
        want = _outputs(problem, ref_inputs, ref_impl)
        pairs = []
        for g, w in zip(got, want):
            diff = (g.double() - w).abs().max().item() if g.numel() else 0.0
            pairs.append((diff, w.abs().max().item() if w.numel() else 0.0))
    except Exception as exc:
        if is_oom(exc):  # _measure_point keeps the first line of this message as the point's reason
            raise ReferenceOutOfMemory(f"{REFERENCE_OOM} ({ref_impl}): {type(exc).__name__}: {exc}") from exc
        raise
    return pairs


def preflight(problem: Problem) -> str | None:
    """Why this point cannot run here (recorded ``unsupported``), or None: the same rule for sweeps and gates."""
    reason = problem.skip_reason() or registry.get(problem.impl).unsupported_reason(problem.device,
                                                                                    problem.torch_dtype)
    if reason is None and problem.device == "cuda" and not torch.cuda.is_available():
        reason = "no CUDA device on this machine"
    cores = os.cpu_count()
    if reason is None and problem.threads is not None and cores is not None and problem.threads > cores:
        # a cluster node or a gate side smaller than the machine that planned the run: not timed oversubscribed
        reason = f"{problem.threads} threads asked, this machine has {cores} logical cores"
    return reason


#: a CPU point predicted to need more than this share of the address-space cap runs in a process of its own
OWN_PROCESS_SHARE = 1 / 16


def predicted_need_bytes(problem: Problem) -> int | None:
    """What a CPU point needs beyond its inputs, by its implementation's memory model (None: no model, or GPU)."""
    model = registry.get(problem.impl).memory_model
    if model is None or problem.device != "cpu":
        return None
    return model(batch=problem.batch, seq_len=problem.seq_len, width=problem.width, heads=problem.heads,
                 columns=problem.columns, dtype_bytes=problem.torch_dtype.itemsize, backward=problem.mode == "fwd_bwd")


def wants_own_process(problem: Problem) -> bool:
    """Whether a point is measured in a child process even without ``--isolate``: a CPU point predicted to need
    more than OWN_PROCESS_SHARE of this process's address-space cap.

    The measuring process keeps its freed heap (allocator.configure_allocator), and a heap grown by gigabytes keeps
    its address space when a small block stays live above the freed ones: in the cpu study the address space
    reached the cap after the quadratic points at N = 4096, and softmax_naive at N = 8192 (4 GiB) failed to
    allocate, or was predicted not to fit in the 0.06 GiB left, in a 24 GiB machine with 22 GiB available. In a
    child the point has a fresh heap and its own cap, and the sweep's process never grows that far."""
    need, cap = predicted_need_bytes(problem), memory_cap.address_space_cap()
    return need is not None and cap is not None and need > OWN_PROCESS_SHARE * cap


def predicted_oom(problem: Problem) -> str | None:
    """Why a CPU point would run out of memory, from its implementation's memory model, before it allocates."""
    need = predicted_need_bytes(problem)
    if need is None:
        return None
    room = memory_cap.memory_headroom_bytes()
    if room is None or need <= room:
        return None
    return (f"predicted to need {need / 2**30:.3g} GiB beyond its inputs, more than the {room / 2**30:.3g} GiB "
            "this process may allocate (not attempted)")


def incorrect_reason(accuracy: dict) -> str:
    return (f"max relative error {accuracy['max_rel_err']:.3g} > tolerance {accuracy['tolerance']:g} "
            f"against {accuracy['reference_impl']}")


def base_record(problem: Problem, run_id: str = "", preset: str | None = None, threads: int | None = None,
                settings: Settings | None = None) -> dict:
    """The record's identity: the point's axes, the facts of its implementation and its settings (docs/design.md §4.1).

    ``threads``: the point's own (threads axis), else ``threads``, else the count in force in this process.
    """
    impl = registry.get(problem.impl)
    threads = problem.threads or threads
    # like threads, the method axes hold what the point ran with (a CUDA point's defaults where it named none)
    axes = {**problem.params(), "threads": torch.get_num_threads() if threads is None else threads,
            **{name: problem.method(name) for name in METHOD_AXES}}
    return new_record(run_id=run_id, point_id=problem.point_id, **axes, **registry.facts(problem.impl),
                      device_name=device_name(problem.device), compute_dtype=impl.compute_dtype or problem.dtype,
                      settings_hash=settings.digest if settings is not None else None, preset=preset, quantities={})


def noisy_reason(record: dict, settings: Settings) -> str | None:
    """Why a timed CUDA point is ``noisy`` (its kept window's p20-p80 spread still above max_spread), or None.

    A CPU point keeps its status: its noise is the host's, which revisits and the report's noise section handle.
    """
    limit = settings.max_spread
    if record.get("device") != "cuda" or limit is None or record.get("time_median") is None:
        return None
    median, p20, p80 = record["time_median"], record["time_p20"], record["time_p80"]
    spread = (p80 - p20) / median if median > 0 else math.inf
    if spread <= limit:
        return None
    windows = record.get("timing_attempts") or 1
    return (f"p20-p80 spread {spread * 100:.1f}% above the {limit * 100:g}% limit after {windows} "
            f"window{'s' if windows != 1 else ''} ({record.get('timing_method')} timing)")


def _apply(meter: measure.Meter, subject: measure.Subject, record: dict) -> None:
    found = meter.measure(subject)
    foreign = sorted(set(found) - set(meter.fields))
    if foreign:
        raise RuntimeError(f"meter {meter.name!r} wrote fields it does not declare: {', '.join(foreign)}")
    record.update(found)
    for shown in meter.shows:
        if found.get(shown.field) is not None:
            record["quantities"][shown.field] = shown.spec()


def _note_sdpa_backend(impl: registry.Impl, record: dict) -> None:
    """The SDPA kernel the point's CUDA calls ran (impls/softmax.py picks FlashAttention first), where one ran."""
    if impl.fn is sdpa_softmax_attention and last_sdpa_backend() is not None:
        record["sdpa_backend"] = last_sdpa_backend()


def measure_point(problem: Problem, settings: Settings, run_id: str = "", preset: str | None = None) -> dict:
    """Measure one point and return its record; every failure of the point is a status, not an exception.

    A point of the threads axis runs at its own thread count (the whole point: its compile, check and timing),
    and the process's count is restored after it.
    """
    with threads_set(problem.threads):
        return _measure_point(problem, settings, run_id, preset)


def _measure_point(problem: Problem, settings: Settings, run_id: str, preset: str | None) -> dict:
    impl = registry.get(problem.impl)
    record = base_record(problem, run_id, preset, settings=settings)
    reason = preflight(problem)
    if reason is not None:
        return {**record, "status": "unsupported", "reason": reason}
    reason = predicted_oom(problem)
    if reason is not None:
        return {**record, "status": "oom", "reason": reason}
    deadline = time.monotonic() + settings.time_limit_s
    inputs = step = subject = None
    try:
        inputs = make_inputs(problem)
        record["input_draw"] = inputs.draw
        reset_sdpa_backend()
        step = make_step(problem, inputs)
        if impl.compiles:
            record["compile_s"] = timing.time_first_call(step, problem.device)
        accuracy = check_correctness(problem, inputs)
        record.update({k: accuracy[k] for k in ("max_abs_err", "max_rel_err", "tolerance", "reference_impl")})
        record["reference_method"] = accuracy.get("reference_method")  # whole | chunked (docs/gpu.md §3.1)
        _note_sdpa_backend(impl, record)
        subject = measure.Subject(problem=problem, impl=impl, inputs=inputs, step=step, settings=settings,
                                  deadline=deadline)
        meters = [m for m in measure.active() if m.applies(subject)]
        for meter in meters:
            if not meter.needs_correct:
                _apply(meter, subject, record)
        if not accuracy["ok"]:
            # Correctness before speed: a wrong answer gets no time, memory or energy.
            return {**record, "status": "incorrect", "compile_s": None, "reason": incorrect_reason(accuracy)}
        if time.monotonic() > deadline:
            raise TimeoutError(f"correctness check alone exceeded the {settings.time_limit_s:g} s point limit")
        for meter in meters:
            if meter.needs_correct:
                _apply(meter, subject, record)
        _note_sdpa_backend(impl, record)
        contention = record.get("contention") or {}
        if contention.get("contended"):
            # Kept with its samples, but never fitted, plotted or gated as if the machine had been its own.
            return {**record, "status": "contended",
                    "reason": f"another task held the timed CPU {contention['share'] * 100:.0f}% of the timing, "
                              f"twice (limit {contention['limit'] * 100:g}%)"}
        reason = noisy_reason(record, settings)
        if reason is not None:
            # Kept with its samples, but its median is no better than its spread: out of fits, figures and gates.
            return {**record, "status": "noisy", "reason": reason}
        record["status"] = "ok"
        return record
    except TimingUnsupported as exc:
        return {**record, "status": "unsupported", "reason": str(exc), "timing_method": exc.method}
    except TimeoutError as exc:
        return {**record, "status": "timeout", "reason": str(exc) or f"exceeded {settings.time_limit_s:g} s"}
    except Exception as exc:  # the point failed; the sweep goes on
        status = "oom" if is_oom(exc) else "error"
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        named = first_line if isinstance(exc, ReferenceOutOfMemory) else f"{type(exc).__name__}: {first_line}"
        if status == "oom" and problem.device == "cpu":
            named += f" (at the failure: {memory_cap.memory_state()})"
        return {**record, "status": status, "reason": named}
    finally:
        if subject is not None:
            subject.release()
        del inputs, step, subject
        gc.collect()
        allocator.release_heap()
        buffer_cache.release()
        if problem.device == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
