"""Shared pytest set-up.

TRITON_INTERPRET must be set before any Triton kernel module is imported, so it is set here, at collection
start, unless a CUDA device is present (then the kernels run for real) or the caller already chose.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Two threads: the CI machine has two cores; fixed so numerics and run time do not depend on the host.
torch.set_num_threads(min(2, os.cpu_count() or 1))
