"""What the gate's workers use of the side's tree: the shared point preflight and the process set-up.

Copied next to the worker script (sides.copy_worker) and run against the side's tree, which for an A/B baseline
may be a revision older than this gate; everything else the workers import is the API every revision has
(``Problem``, ``make_inputs``, ``make_step``).
"""

from __future__ import annotations

try:
    try:
        from fastformer_bench.measure.process import prepare_process
    except ModuleNotFoundError as split:  # COMPATIBILITY: a tree from before measure/host.py was split
        if split.name != "fastformer_bench.measure.process":
            raise
        from fastformer_bench.measure.host import prepare_process
    from fastformer_bench.point import check_correctness, incorrect_reason, preflight
except ModuleNotFoundError as missing:
    # COMPATIBILITY: a tree from before point.py and measure/host.py (c13d48a and older), so that gating against
    # such a baseline keeps working. The same rules, written against that tree's API; remove once no baseline
    # older than the restructure is gated against. Only a missing module falls back: a tree that has them but
    # fails to import them is an error of that tree.
    if missing.name not in ("fastformer_bench.point", "fastformer_bench.measure.host"):
        raise
    import torch

    from fastformer_bench import impls as _registry
    from fastformer_bench.sweep import check_correctness

    def preflight(problem) -> str | None:
        """point.preflight: skip reason, then unsupported reason, then no CUDA device."""
        reason = problem.skip_reason() or _registry.get(problem.impl).unsupported_reason(problem.device,
                                                                                         problem.torch_dtype)
        if reason is None and problem.device == "cuda" and not torch.cuda.is_available():
            reason = "no CUDA device on this machine"
        return reason

    def incorrect_reason(accuracy: dict) -> str:
        """point.incorrect_reason (that tree's check_correctness returns the same keys)."""
        return (f"max relative error {accuracy['max_rel_err']:.3g} > tolerance {accuracy['tolerance']:g} "
                f"against {accuracy['reference_impl']}")

    def prepare_process(threads: int | None = None, *, allocator: bool = True) -> dict:
        """process.prepare_process as the workers call it (allocator=False): the thread counts only, so both sides
        are set up alike; the allocator is what sides.MALLOC_ENV gives both."""
        if allocator:
            raise NotImplementedError("the workers leave the allocator to the environment (sides.MALLOC_ENV)")
        if threads is not None:
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(threads)
            except RuntimeError:
                pass  # settable once, before any inter-op work (as threads.configure_threads)
        return {"threads": torch.get_num_threads()}

__all__ = ["check_correctness", "incorrect_reason", "preflight", "prepare_process"]
