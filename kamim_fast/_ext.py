"""Loading the compiled extension ``kamim_fast._C`` (``csrc/``): the native kernels of every op.

The extension registers its kernels in C++ as ``kamim_fast_cpp::<op>`` (``TORCH_LIBRARY_FRAGMENT`` in each
``csrc/*.cpp``; CPU, and CUDA for the AMT ops in ``csrc/amt_cuda.cu``), with the schemas of the public
``kamim_fast::<op>`` ops that ``_ops.py`` and ``_amt_ops.py`` define; the implementation table
(``_backend.py``) calls them. This module loads them, in this order:

1. ``import kamim_fast._C``, built by ``pip install`` (setup.py: a CUDAExtension when nvcc and a CUDA
   build of torch are present, else a CppExtension);
2. a JIT build of ``csrc/`` with ``torch.utils.cpp_extension.load`` (ninja), when the package has no
   compiled module and the sources are beside it (a source checkout). ``KAMIM_FAST_JIT=0`` skips it,
   ``KAMIM_FAST_JIT=cpu`` builds the CPU kernels only (no nvcc); by default the CUDA kernels are built too
   when torch is a CUDA build and nvcc is found (``TORCH_CUDA_ARCH_LIST``, else 9.0);
3. nothing: ``KAMIM_FAST_BACKEND=auto`` then runs the PyTorch references on CPU tensors (warning once),
   and a forced ``cpp`` raises.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent.parent / "csrc"
JIT_ENV_VAR = "KAMIM_FAST_JIT"
OPS = ("amt_select", "select_gather", "gather_rows", "scatter_rows", "unshuffle", "unshuffle_backward")



def _nvcc_available() -> bool:
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    return torch.version.cuda is not None and home is not None and (Path(home) / "bin" / "nvcc").exists()


def _jit_build() -> str:
    """Builds and loads csrc/ with ninja; returns the library path. Raises when it cannot."""
    mode = os.environ.get(JIT_ENV_VAR, "").strip().lower()
    if mode == "0":
        raise RuntimeError(f"the JIT build is disabled ({JIT_ENV_VAR}=0)")
    if not (CSRC / "amt.cpp").exists():
        raise RuntimeError(f"the C++ sources are not beside the package (looked in {CSRC})")
    from torch.utils import cpp_extension

    sources = sorted(str(p) for p in CSRC.glob("*.cpp"))  # every CPU kernel file
    if mode != "cpu" and _nvcc_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        sources.append(str(CSRC / "amt_cuda.cu"))
    name = "kamim_fast_cuda" if sources[-1].endswith(".cu") else "kamim_fast_cpu"
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []  # at::parallel_for is inline OpenMP
    return cpp_extension.load(
        name=name, sources=sources, extra_include_paths=[str(CSRC)], extra_cflags=["-O3", "-DNDEBUG", *openmp],
        extra_ldflags=openmp,
        extra_cuda_cflags=["-O3", "-DNDEBUG", "-lineinfo"], is_python_module=False, verbose=False,
    )


@functools.cache
def status() -> tuple[bool, str]:
    """(loaded, reason when not). Loads the extension on first call and registers the Python side."""
    try:
        from . import _C  # noqa: F401  (registers the ops torch.ops.kamim_fast_cpp.*)
    except (ImportError, OSError) as exc:  # absent, or built against another torch
        try:
            _jit_build()
        except Exception as jit_exc:  # noqa: BLE001 - any build failure means: no extension
            lines = str(jit_exc).strip().splitlines() or [""]
            return False, (f"kamim_fast._C is not installed ({exc}) and the JIT build of csrc/ failed "
                           f"({type(jit_exc).__name__}: {lines[-1]})")
    return True, ""


def has_cuda() -> bool:
    """Whether the loaded extension holds CUDA kernels (it was built with nvcc)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("kamim_fast_cpp::amt_select", "CUDA")
