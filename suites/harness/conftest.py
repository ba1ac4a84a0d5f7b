import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent


@pytest.fixture
def test_impls(monkeypatch):
    """Registers the misbehaving implementations of plugins_for_tests (in this process and its children)."""
    import plugins_for_tests  # noqa: F401  (importable: this folder is on sys.path below)

    from fastformer_bench import impls

    spec = plugins_for_tests.plugin_spec()
    monkeypatch.setenv(impls.PLUGIN_ENV, spec)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]))
    before = dict(impls._REGISTERED)
    impls._load_plugins()
    yield
    impls._REGISTERED.clear()
    impls._REGISTERED.update(before)
    for name in list(impls._loaded):
        if name not in before:
            del impls._loaded[name]


sys.path.insert(0, str(HERE))
