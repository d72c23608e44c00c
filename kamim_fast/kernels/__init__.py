"""Triton kernels of kamim_fast (``kamim_fast.kernels``).

One file per fused kernel; ``fast_tile`` holds the ``@triton.jit`` helpers they share. A kernel file
holds kernels and their launchers only: argument checks, backend choice and torch.library registration
live in ``kamim_fast`` (the op registry, ``kamim_fast/ops/``, checks the arguments before a launcher runs); the
launch policy (device, grid size, configs, compile signatures) is ``_launch``. The configurations the compile
tooling builds are listed beside it, in ``benchmarks/compile_specs.py``.
"""

import triton
from triton.runtime.jit import JITFunction


@triton.jit
def _probe():
    pass


# True when TRITON_INTERPRET=1 was set before triton was imported: the kernels then run on CPU tensors.
INTERPRETED: bool = not isinstance(_probe, JITFunction)
