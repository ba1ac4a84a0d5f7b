"""A plugin meter, in one file: registered for a block with ``measure.registered(METER)``.

It counts the tensors one call allocates (torch's dispatcher sees every op's outputs): a quantity no built-in
meter records, which the report shows per call and per token because the meter says so.
"""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode

from fastformer_bench.measure import Meter, Shown, Subject


class _CountOutputs(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.count += len(out) if isinstance(out, tuple | list) else 1
        return out


def _measure(subject: Subject) -> dict:
    with _CountOutputs() as counter:
        subject.step()
    return {"op_outputs": counter.count}


METER = Meter(name="test_op_outputs", fields=("op_outputs",), measure=_measure,
              shows=(Shown("op_outputs", "op outputs per call", "tensors", per_token=True),))
#: a broken meter: writes a field it does not declare (the point must fail loudly, not store it)
SLOPPY = Meter(name="test_sloppy", fields=("declared",), measure=lambda subject: {"undeclared": 1})
