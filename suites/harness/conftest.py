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
    before = dict(impls.REGISTRY.entries)
    impls.REGISTRY.load_plugins()
    yield
    monkeypatch.delenv(impls.PLUGIN_ENV)  # before the registry forgets them: names() reads the variable again
    impls.REGISTRY.entries = before
    for name in list(impls.REGISTRY.loaded):
        if name not in before:
            del impls.REGISTRY.loaded[name]


sys.path.insert(0, str(HERE))
