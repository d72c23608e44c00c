"""Triton kernels of kamim_fast (``kamim_fast.kernels``).

One file per fused kernel; ``fast_tile`` holds the ``@triton.jit`` helpers they share. A kernel file
holds kernels and their launchers only: argument checks, backend choice and torch.library registration
live in ``kamim_fast``; the launch policy (device, grid size, configs, compile signatures) is
``_launch``. Each launcher's module also lists every configuration a user can reach in
``compile_specs()``, which CI compiles for sm_80, sm_89 and sm_90a (``benchmarks/ptxas_report.py``).
"""

import triton
from triton.runtime.jit import JITFunction


@triton.jit
def _probe():
    pass


# True when TRITON_INTERPRET=1 was set before triton was imported: the kernels then run on CPU tensors.
INTERPRETED: bool = not isinstance(_probe, JITFunction)
