"""Shared pytest set-up.

TRITON_INTERPRET must be set before any Triton kernel module is imported, so it is set here, at collection
start, unless a CUDA device is present (then the kernels run for real) or the caller already chose.
"""

import os
from pathlib import Path

import pytest
import torch

SUITES = Path(__file__).parent
REPO = SUITES.parent

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Two threads: the CI machine has two cores; fixed so numerics and run time do not depend on the host.
torch.set_num_threads(min(2, os.cpu_count() or 1))

#: warnings torch raises from its own internals, which the suites cannot fix; ignored per test (a mark outranks
#: `pytest -W error`) so a strict run still fails on every warning of ours or of a dependency we call
TORCH_INTERNAL_WARNINGS = (
    # torch 2.13's inductor calls its own deprecated torch.jit.script_method while compiling
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
    # dynamo probes .grad of a non-leaf input while tracing and hides the warning with a display hook, which an
    # "error" filter pre-empts; only an access from inside torch is ignored (a .grad misuse of ours still fails)
    r"ignore:The \.grad attribute of a Tensor that is not a leaf:UserWarning:torch\.",
)


def pytest_collection_modifyitems(items):
    import pytest

    for item in items:
        for spec in TORCH_INTERNAL_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture
def test_impls(monkeypatch):
    """Registers the misbehaving implementations of testkit.plugin_faulty_impls (in this process and its children)."""
    from testkit import plugin_faulty_impls

    from fastformer_bench import impls

    monkeypatch.setenv(impls.PLUGIN_ENV, plugin_faulty_impls.plugin_spec())
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SUITES), str(REPO), os.environ.get("PYTHONPATH", "")]))
    before = dict(impls.REGISTRY.entries)
    impls.REGISTRY.load_plugins()
    yield
    monkeypatch.delenv(impls.PLUGIN_ENV)  # before the registry forgets them: names() reads the variable again
    impls.REGISTRY.entries = before
    for name in list(impls.REGISTRY.loaded):
        if name not in before:
            del impls.REGISTRY.loaded[name]
