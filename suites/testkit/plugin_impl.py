"""A plugin implementation, in one file: registered for a block with ``impls.registered(MIRROR)``.

It is eager under another name with its own facts, so a test can follow it from the registry through a sweep's
records to the report's tables and figures without any other module knowing it.
"""

from fastformer_bench.impls import ADDITIVE, Impl
from fastformer_bench.impls.additive_eager import eager_additive_attention

MIRROR = Impl(name="test_mirror", family=ADDITIVE, fn=eager_additive_attention,
              description="eager under a plugin's name", expected_exponent=(0.8, 1.2))
