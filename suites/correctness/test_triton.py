"""The fused Triton implementation against the float64 quadratic reference: forward and gradients.

Without a GPU the kernels run under TRITON_INTERPRET=1 (suites/conftest.py sets it), which is slow per
program and per tile, so shapes are tiny and the chunk size is forced small to push several chunks of N
through the split-N combine step. With a GPU the same tests run the compiled kernels on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

pytest.importorskip("triton", reason="triton is not installed; the fused kernel cannot run")

from fastformer_bench import impls  # noqa: E402
from fastformer_bench.impls import additive_triton as at  # noqa: E402
from fastformer_bench.impls.additive_naive import quadratic_additive_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_kernel = pytest.mark.skipif(
    DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
    reason="no CUDA device and TRITON_INTERPRET is not 1 (run through suites/conftest.py)",
)
# Error bound relative to the largest reference value: fp32 accumulates in fp32; fp16/bf16 round inputs' products
# and outputs to 11 / 8 significant bits.
TOL = {torch.float32: 3e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def make_inputs(C: int, B: int, N: int, H: int, Dh: int, dtype: torch.dtype, *, masked: bool, strided: bool,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    D = H * Dh
    if strided:
        # What a fused projection gives: [B, N, C*D] viewed as [C, B, N, D], no axis contiguous but the last.
        x = torch.randn(B, N, C * D, generator=gen).view(B, N, C, D).permute(2, 0, 1, 3)
    else:
        x = torch.randn(C, B, N, D, generator=gen)
    w = torch.randn(C - 1, H, Dh, generator=gen)
    mask = None
    if masked:
        # Ragged: each row a different length of real tokens, plus scattered holes; row 0 stays full-length.
        lengths = torch.randint(1, N + 1, (B,), generator=gen)
        lengths[0] = N
        mask = torch.arange(N)[None, :] < lengths[:, None]
        mask &= torch.rand(B, N, generator=gen) > 0.2
        mask[:, 0] = True
    x = x.to(DEVICE, dtype)
    if strided:
        assert not x.is_contiguous()
    return x, w.to(DEVICE, dtype), None if mask is None else mask.to(DEVICE)


def fresh_plans(monkeypatch) -> None:
    """Start from no cached plans (and workspaces), as a new process would."""
    monkeypatch.setattr(at, "_PLANS", OrderedDict(), raising=False)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    scale = expected.abs().max().item()
    err = (actual.double() - expected).abs().max().item()
    assert err <= tol * max(scale, 1e-6), f"{what}: max abs error {err:.3e} > {tol:.0e} × max |ref| {scale:.3e}"


def check_against_reference(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, **plan) -> None:
    """Forward and both gradients of the fused kernel against the float64 reference on the same inputs."""
    tol = TOL[x.dtype]
    gen = torch.Generator().manual_seed(1)
    grad_out = torch.randn(x.shape[1:], generator=gen).to(x.device, x.dtype)

    xt, wt = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    out = at.triton_additive_attention(xt, wt, mask, **plan)
    out.backward(grad_out)

    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = quadratic_additive_attention(x64, w64, mask)
    ref.backward(grad_out.double())

    assert out.dtype == x.dtype and out.shape == ref.shape
    assert xt.grad.dtype == x.dtype and wt.grad.dtype == w.dtype
    assert_close(out, ref, tol, "out")
    assert_close(xt.grad, x64.grad, tol, "dx")
    assert_close(wt.grad, w64.grad, tol, "dw")
    if mask is not None:
        pad = ~mask
        assert (out[pad] == 0).all(), "padding rows of the output must be exactly zero"
        assert (xt.grad[:, pad] == 0).all(), "padding tokens must get exactly zero gradient"


# (C, B, N, H, Dh, dtype, masked, strided, plan). plan forces split-N: chunk_n tokens per program.
CASES = [
    (2, 1, 1, 1, 5, torch.float32, False, False, {}),
    (3, 2, 37, 3, 5, torch.float32, True, False, dict(chunk_n=8, block_n=8)),
    (4, 2, 129, 1, 24, torch.float32, True, True, dict(chunk_n=32, block_n=32)),
    (6, 1, 37, 3, 24, torch.float32, True, True, dict(chunk_n=16, block_n=16)),
    (3, 2, 129, 3, 24, torch.float32, False, True, {}),
    (3, 2, 129, 3, 24, torch.float16, True, True, dict(chunk_n=32, block_n=32)),
    (4, 1, 37, 1, 5, torch.float16, False, False, dict(chunk_n=16, block_n=16)),
    (3, 1, 37, 3, 24, torch.bfloat16, True, False, dict(chunk_n=16, block_n=16)),
]


@needs_kernel
@pytest.mark.parametrize("C,B,N,H,Dh,dtype,masked,strided,plan", CASES,
                         ids=[f"C{c[0]}-B{c[1]}-N{c[2]}-H{c[3]}-Dh{c[4]}-{str(c[5])[6:]}"
                              f"{'-mask' if c[6] else ''}{'-strided' if c[7] else ''}"
                              f"{'-chunk' + str(c[8]['chunk_n']) if c[8] else ''}" for c in CASES])
def test_matches_reference(C, B, N, H, Dh, dtype, masked, strided, plan):
    if plan:
        # The forced plan really splits N: several chunks go through the combine step.
        assert at._plan(B, H, N, Dh, torch.device(DEVICE), plan["block_n"], plan["chunk_n"])[3] > 1
    check_against_reference(*make_inputs(C, B, N, H, Dh, dtype, masked=masked, strided=strided), **plan)


@needs_kernel
def test_all_padding_chunks_and_uneven_chunks(monkeypatch):
    # Row 0: real tokens only at the start; row 1: only at the end; with 8-token chunks most chunks of each
    # row hold no real token (their running max stays -inf), and chunk_n = 6 is not a multiple of block_n = 4.
    # Combining 2 chunk partials per step makes every combine loop run several steps.
    monkeypatch.setattr(at, "_COMBINE_BLOCK", 2)
    fresh_plans(monkeypatch)  # plans made before the patch keep their block sizes
    C, B, N, H, Dh = 3, 2, 40, 1, 8
    x, w, _ = make_inputs(C, B, N, H, Dh, torch.float32, masked=False, strided=False, seed=3)
    mask = torch.zeros(B, N, dtype=torch.bool, device=DEVICE)
    mask[0, :3] = True
    mask[1, -2:] = True
    check_against_reference(x, w, mask, chunk_n=8, block_n=8)
    check_against_reference(x, w, mask, chunk_n=6, block_n=4)


@needs_kernel
def test_padding_values_are_never_read():
    # NaN in every padded position of x must not reach the output or the gradients: masked tokens are not loaded.
    x, w, mask = make_inputs(3, 2, 37, 1, 8, torch.float32, masked=True, strided=False, seed=4)
    assert (~mask).any()
    clean = x.clone()
    clean[:, ~mask] = 0
    dirty = x.clone()
    dirty[:, ~mask] = float("nan")
    results = []
    for xin in (clean, dirty):
        xin = xin.requires_grad_()
        wt = w.clone().requires_grad_()
        out = at.triton_additive_attention(xin, wt, mask, chunk_n=16, block_n=16)
        out.sum().backward()  # grad_out is a stride-0 expanded tensor: the kernels take any strides
        results.append((out, xin.grad, wt.grad))
    for a, b in zip(*results):
        assert torch.isfinite(b).all()
        assert torch.equal(a, b)


@needs_kernel
def test_gradient_for_w_only_and_no_grad_forward():
    x, w, mask = make_inputs(3, 2, 37, 3, 5, torch.float32, masked=True, strided=True, seed=5)
    with torch.no_grad():
        plain = at.triton_additive_attention(x, w, mask, chunk_n=16, block_n=16)
    ref = quadratic_additive_attention(x.double(), w.double(), mask)
    assert_close(plain, ref, TOL[torch.float32], "no-grad out")

    wt = w.clone().requires_grad_()
    at.triton_additive_attention(x, wt, mask, chunk_n=16, block_n=16).square().sum().backward()
    w64 = w.double().requires_grad_()
    quadratic_additive_attention(x.double(), w64, mask).square().sum().backward()
    assert_close(wt.grad, w64.grad, TOL[torch.float32], "dw (x without grad)")


@needs_kernel
def test_registry_entry_runs_and_validates_input():
    impl = impls.get("triton")
    assert impl is at.TRITON and impl.family == impls.ADDITIVE and impl.compiles
    x, w, mask = make_inputs(2, 1, 9, 1, 4, torch.float32, masked=True, strided=False)
    ref = quadratic_additive_attention(x.double(), w.double(), mask)
    assert_close(impl.fn(x, w, mask), ref, TOL[torch.float32], "registry fn")
    with pytest.raises(ValueError, match="width D"):
        impl.fn(x, w[:, :, :3], mask)
    with pytest.raises(ValueError, match="float64"):
        impl.fn(x.double(), w.double(), mask)
    with pytest.raises(ValueError, match="chunk_n"):
        at.triton_additive_attention(x, w, mask, chunk_n=0)


def test_default_plan_splits_long_sequences():
    # One (batch, head) and a long sequence: the automatic plan must still spread N over several programs.
    block_n, block_d, chunk_n, n_chunks = at._plan(1, 1, 1 << 16, 64, torch.device("cpu"), None, None)
    assert block_d == 64 and chunk_n % block_n == 0
    assert n_chunks == at._PROGRAMS_PER_SM and n_chunks * chunk_n >= 1 << 16
    # Many (batch, head) pairs already fill the machine: no split; a short sequence is not split into slivers.
    assert at._plan(64, 16, 1024, 64, torch.device("cpu"), None, None)[3] == 1
    assert at._plan(1, 1, 100, 64, torch.device("cpu"), None, None)[3] == 1


def test_supports_cpu_only_with_interpreter(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = at.TRITON.unsupported_reason(cpu, torch.float32)
    assert reason is not None and "CUDA" in reason and "TRITON_INTERPRET=1" in reason
    assert at.TRITON.unsupported_reason(cuda, torch.bfloat16) is None
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert at.TRITON.unsupported_reason(cpu, dtype) is None
    assert "float64" in at.TRITON.unsupported_reason(cpu, torch.float64)
    assert "float64" in at.TRITON.unsupported_reason(cuda, torch.float64)
    assert at.TRITON.unsupported_reason(torch.device("meta"), torch.float32) is not None


def test_supports_reports_missing_triton(monkeypatch):
    monkeypatch.setattr(at, "_triton_import_error", lambda: "triton is not importable (ImportError: gone)")
    assert "triton is not importable" in at.TRITON.unsupported_reason(torch.device("cuda"), torch.float32)


def test_gpu_check_preset_spans_the_kernels_bandwidth_sweep():
    # The GPU check is a preset of the one harness (make gpu-check): the fused kernel and its two PyTorch twins
    # at B·N·D = 2^22 .. 2^27 in every low-precision dtype, forward and backward, all on the GPU.
    from fastformer_bench import presets

    problems, skipped = presets.expand(presets.load("gpu-check"))
    assert not skipped
    assert {p.device for p in problems} == {"cuda"}
    assert {p.dtype for p in problems} == {"bfloat16", "float16", "float32"}
    assert {p.mode for p in problems} == {"fwd", "fwd_bwd"}
    assert "triton" in {p.impl for p in problems}
    sizes = sorted({p.batch * p.seq_len * p.width for p in problems})
    assert sizes == [2**k for k in range(22, 28)]


def test_registry_loads_without_triton():
    # sys.modules[name] = None makes `import triton` raise ImportError, as on a machine without it.
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\n"
            "from fastformer_bench import impls\n"
            "print(impls.get('triton').unsupported_reason(torch.device('cuda'), torch.float32))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "triton is not importable" in proc.stdout


# -- host work per call: launches, device work, allocations, no syncs ------------------------------------------
# A small problem on the GPU takes as long as the host needs to issue it: every torch op the launcher issues is
# one more kernel launch, every allocation one more trip through the allocator, and a read of device data waits
# for the GPU. These tests count all three per call, with the kernels stubbed out so that only the launcher's
# own work is seen (the interpreter's copies of the arguments are torch ops too).

#: torch ops that only allocate; everything else that is not a view is device work (one launch on a GPU)
FACTORY_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
               "new_zeros", "ones", "ones_like", "full", "full_like"}
#: the op behind .item() / bool(tensor): on a GPU it waits for every queued kernel
SYNC_OPS = {"_local_scalar_dense", "item"}


class OpCounter(TorchDispatchMode):
    """Counts the torch ops issued under it: allocations, views and device work (with their names)."""

    def __init__(self) -> None:
        super().__init__()
        self.allocations: list[str] = []
        self.work: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in FACTORY_OPS:
            self.allocations.append(name)
        elif not func.is_view:
            self.work.append(name)
        return func(*args, **(kwargs or {}))


class StubKernels:
    """Replaces every kernel of the kernels module by one that launches nothing and logs its launch."""

    def __init__(self, monkeypatch) -> None:
        self.launches: list[str] = []
        kernels = at._kernels()
        for name in dir(kernels):
            if name.endswith("_kernel"):
                monkeypatch.setattr(kernels, name, self._stub(name))

    def _stub(self, name: str):
        log = self.launches

        class Stub:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: log.append(name)

        return Stub()


def host_work(monkeypatch, call) -> tuple[list[str], OpCounter]:
    """The kernel launches and torch ops of ``call()``, kernels stubbed out."""
    stubs = StubKernels(monkeypatch)
    with OpCounter() as ops:
        call()
    return stubs.launches, ops


@needs_kernel
@pytest.mark.parametrize("C", [2, 3, 6], ids=lambda c: f"C{c}")
def test_launches_per_call(monkeypatch, C):
    # The real kernels, each launch counted: C per forward, C + 1 per backward (C when only x needs a gradient).
    monkeypatch.setattr(at, "_direct_ok", lambda plan: False, raising=False)  # every launch through the JIT functions
    launches = []
    kernels = at._kernels()
    for name in dir(kernels):
        if name.endswith("_kernel"):
            kernel = getattr(kernels, name)

            class Counting:
                def __getitem__(self, grid, kernel=kernel, name=name):
                    launch = kernel[grid]
                    return lambda *args, **kwargs: (launches.append(name), launch(*args, **kwargs))[1]

            monkeypatch.setattr(kernels, name, Counting())
    x, w, mask = make_inputs(C, 2, 19, 2, 8, torch.float32, masked=True, strided=False, seed=6)
    with torch.no_grad():
        at.triton_additive_attention(x, w, mask, chunk_n=8, block_n=8)
    assert len(launches) == C
    xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
    launches.clear()
    out = at.triton_additive_attention(xt, wt, mask, chunk_n=8, block_n=8)
    assert len(launches) == C
    launches.clear()
    torch.autograd.grad(out, (xt, wt), torch.ones_like(out))
    assert len(launches) == C + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_host_work_per_call(monkeypatch, dtype):
    """Past the first call on a shape, a forward is its C launches and the allocation of what it returns (and,
    keeping a graph, of what backward needs), and a backward its C + 1 launches and its two gradients: no other
    device work (no conversion of w or of dw), no workspace allocated again, nothing read back from the device."""
    fresh_plans(monkeypatch)
    C, B, N, H, Dh = 3, 2, 64, 2, 16
    x, w, _ = make_inputs(C, B, N, H, Dh, dtype, masked=False, strided=False, seed=7)
    xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
    grad_out = torch.ones(B, N, H * Dh, dtype=dtype, device=x.device)

    def no_grad_forward():
        with torch.no_grad():
            at.triton_additive_attention(x, w)

    def forward_backward():
        out = at.triton_additive_attention(xt, wt)
        torch.autograd.grad(out, (xt, wt), grad_out)

    host_work(monkeypatch, no_grad_forward)  # the first calls make the plan and its workspaces
    host_work(monkeypatch, forward_backward)
    launches, ops = host_work(monkeypatch, no_grad_forward)
    assert (len(launches), ops.work, ops.allocations) == (C, [], ["empty"]), "no-grad forward"
    launches, ops = host_work(monkeypatch, lambda: at.triton_additive_attention(xt, wt))
    assert (len(launches), ops.work, len(ops.allocations)) == (C, [], 2), "forward keeping a graph: out, stats"
    out = at.triton_additive_attention(xt, wt)
    launches, ops = host_work(monkeypatch, lambda: torch.autograd.grad(out, (xt, wt), grad_out))
    assert (len(launches), ops.work, len(ops.allocations)) == (C + 1, [], 2), "backward: dx, dw"


def test_input_checks_run_once_per_plan_and_still_refuse_what_differs(monkeypatch):
    """The checks of x and w run when a plan is made (it is cached under all they read), a mask's once per layout
    unless its rows are read; a call that differs in any of those is checked again and refused as before."""
    fresh_plans(monkeypatch)
    StubKernels(monkeypatch)
    checked = []
    real = at.check_additive
    monkeypatch.setattr(at, "check_additive", lambda *args, **kwargs: (checked.append(1), real(*args, **kwargs))[1])
    x, w, mask = make_inputs(3, 2, 16, 2, 8, torch.float32, masked=True, strided=False, seed=13)
    with torch.no_grad():
        for _ in range(3):
            at.triton_additive_attention(x, w)
        assert len(checked) == 1
        for _ in range(3):
            at.triton_additive_attention(x, w, mask, check_mask_rows=False)
        assert len(checked) == 2
        at.triton_additive_attention(x, w, mask, check_mask_rows=True)  # the rows are data: read on every call
        assert len(checked) == 3
        with pytest.raises(ValueError, match="same dtype|one dtype"):
            at.triton_additive_attention(x, w.double())
        with pytest.raises(ValueError, match="mask must have shape"):
            at.triton_additive_attention(x, w, mask[:, :8], check_mask_rows=False)
        with pytest.raises(ValueError, match="mask must have dtype"):
            at.triton_additive_attention(x, w, mask.float(), check_mask_rows=False)
        with pytest.raises(ValueError, match="torch.Tensors"):
            at.triton_additive_attention(x, None)
        with pytest.raises(ValueError, match="float64"):
            at.triton_additive_attention(x.double(), w.double())


def test_unchecked_mask_costs_no_device_read(monkeypatch):
    # A GPU mask is not checked for rows of padding alone (the check would wait for the device); check_mask_rows
    # gives a CPU mask the same treatment, so the host work of a masked call can be counted here.
    fresh_plans(monkeypatch)
    x, w, mask = make_inputs(3, 2, 64, 2, 16, torch.float32, masked=True, strided=False, seed=8)

    def masked_forward():
        with torch.no_grad():
            at.triton_additive_attention(x, w, mask, check_mask_rows=False)

    host_work(monkeypatch, masked_forward)
    launches, ops = host_work(monkeypatch, masked_forward)
    assert (len(launches), ops.work, ops.allocations) == (3, [], ["empty"])
    checked = host_work(monkeypatch, lambda: at.triton_additive_attention(x, w, mask, check_mask_rows=True))[1]
    assert SYNC_OPS & set(checked.work), "the checked call reads the mask back"


@needs_kernel
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's 0 / 0
def test_unchecked_padding_row_is_nan_and_leaves_other_rows_alone():
    x, w, _ = make_inputs(3, 2, 19, 2, 8, torch.float32, masked=False, strided=False, seed=9)
    mask = torch.ones(2, 19, dtype=torch.bool, device=DEVICE)
    mask[1] = False
    with pytest.raises(ValueError, match="at least one real token"):
        at.triton_additive_attention(x, w, mask, check_mask_rows=True)
    out = at.triton_additive_attention(x, w, mask, check_mask_rows=False, chunk_n=8, block_n=8)
    assert out[1].isnan().all()
    ref = quadratic_additive_attention(x[:, :1].double(), w.double(), mask[:1])
    assert_close(out[:1], ref, TOL[torch.float32], "the row with real tokens")


@needs_kernel
def test_workspaces_are_never_returned_or_saved():
    """Two calls on one shape share the plan's workspaces, never their outputs: the first call's output and
    gradients stay as they were after the second call, and each backward uses its own forward's statistics."""
    C, B, N, H, Dh = 3, 2, 37, 3, 8
    plan = dict(chunk_n=8, block_n=8)
    inputs = [make_inputs(C, B, N, H, Dh, torch.float32, masked=True, strided=False, seed=s) for s in (10, 11)]
    grad_out = torch.randn(B, N, H * Dh, generator=torch.Generator().manual_seed(2)).to(DEVICE)

    with torch.no_grad():
        first = at.triton_additive_attention(*inputs[0], **plan)
        kept = first.clone()
        second = at.triton_additive_attention(*inputs[1], **plan)
    assert first.data_ptr() != second.data_ptr() and torch.equal(first, kept)

    leaves = [(x.clone().requires_grad_(), w.clone().requires_grad_(), mask) for x, w, mask in inputs]
    outs = [at.triton_additive_attention(*leaf, **plan) for leaf in leaves]  # both graphs alive at once
    grads = [torch.autograd.grad(outs[i], leaves[i][:2], grad_out) for i in (1, 0)][::-1]  # backward: last first
    for (x, w, mask), out, (dx, dw) in zip(inputs, outs, grads):
        x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
        ref = quadratic_additive_attention(x64, w64, mask)
        ref_dx, ref_dw = torch.autograd.grad(ref, (x64, w64), grad_out.double())
        assert_close(out, ref, TOL[torch.float32], "out")
        assert_close(dx, ref_dx, TOL[torch.float32], "dx")
        assert_close(dw, ref_dw, TOL[torch.float32], "dw")
    assert grads[0][0].data_ptr() != grads[1][0].data_ptr() and grads[0][1].data_ptr() != grads[1][1].data_ptr()


def test_direct_launches_replay_the_dispatched_ones(monkeypatch):
    """On CUDA a layout's first call goes through Triton's dispatch and later calls launch the compiled kernels it
    returned, with the same arguments; a new layout (here strided x) or launch hooks go through dispatch again."""
    fresh_plans(monkeypatch)
    monkeypatch.setattr(at, "_direct_ok", lambda plan: True)
    monkeypatch.setattr(at, "_current_stream", lambda index: 1234)
    dispatched, direct = [], []

    class Compiled:
        function, packed_metadata = "function", "metadata"

        def __init__(self, name):
            self.name = name

        def run(self, *args):
            direct.append((self.name, args[:9], list(args[9:])))

    def fake(name):
        class Kernel:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    dispatched.append((name, grid, list(args)))
                    return Compiled(name)
                return launch
        return Kernel()

    kernels = at._kernels()
    for name in dir(kernels):
        if name.endswith("_kernel"):
            monkeypatch.setattr(kernels, name, fake(name))
    C = 4
    x, w, mask = make_inputs(C, 2, 40, 2, 8, torch.float32, masked=True, strided=False, seed=12)
    xs = make_inputs(C, 2, 40, 2, 8, torch.float32, masked=True, strided=True, seed=12)[0]
    xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()

    def call(x_in=xt):
        out = at.triton_additive_attention(x_in, wt, mask, chunk_n=16, block_n=16)
        torch.autograd.grad(out, (x_in, wt), torch.ones_like(out))

    call()
    assert len(dispatched) == 2 * C + 1 and not direct
    first = list(dispatched)
    dispatched.clear()
    call()
    assert not dispatched and len(direct) == 2 * C + 1

    def layout(args):  # the outputs are new tensors each call: compare what the compiled kernel depends on
        return [(a.dtype, a.shape, a.stride()) if isinstance(a, torch.Tensor) else a for a in args]

    for (name, grid, args), (run_name, head, run_args) in zip(first, direct, strict=True):
        assert run_name == name and head == (grid[0], 1, 1, 1234, "function", "metadata", None, None, None)
        assert layout(run_args) == layout(args)
    direct.clear()
    call(xs.clone().requires_grad_())
    assert len(dispatched) == 2 * C + 1 and not direct, "a new layout of x is dispatched (and compiled) afresh"


def test_launch_variable_selects_triton_dispatch(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.delenv(at._LAUNCH_MODE_ENV, raising=False)
    assert at._Plan(cuda, 3, 1, 64, 2, 8, 16, 16).direct
    assert not at._Plan(torch.device("cpu"), 3, 1, 64, 2, 8, 16, 16).direct
    monkeypatch.setenv(at._LAUNCH_MODE_ENV, "jit")
    assert not at._Plan(cuda, 3, 1, 64, 2, 8, 16, 16).direct
