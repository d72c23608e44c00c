"""Loading the AMT extension (``csrc/``), and its ops' fake kernels and autograd formulas.

The schemas and the CPU/CUDA kernels are C++ (``TORCH_LIBRARY_FRAGMENT(kamim_fast, ...)`` in
``csrc/amt.cpp``); this module loads them, in this order:

1. ``import kamim_fast._C``, built by ``pip install`` (setup.py: a CUDAExtension when nvcc and a CUDA
   build of torch are present, else a CppExtension);
2. a JIT build of ``csrc/`` with ``torch.utils.cpp_extension.load`` (ninja), when the package has no
   compiled module and the sources are beside it (a source checkout). ``KAMIM_FAST_JIT=0`` skips it,
   ``KAMIM_FAST_JIT=cpu`` builds the CPU kernels only (no nvcc); by default the CUDA kernels are built too
   when torch is a CUDA build and nvcc is found (``TORCH_CUDA_ARCH_LIST``, else 9.0);
3. nothing: the AMT functions then use their PyTorch references (``_backend.use_extension`` warns once,
   or raises when ``KAMIM_FAST_BACKEND=triton`` asked for the extension).

Once loaded, the Python side registers a fake kernel (shapes for torch.compile and FakeTensor) and an
autograd formula for each op. The adjoint pairs close under differentiation: gather_rows <-> scatter_rows
and unshuffle <-> unshuffle_backward, so double backward works too.
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

_warned = False


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
        from . import _C  # noqa: F401  (registers torch.ops.kamim_fast.amt_select and the others)
    except (ImportError, OSError) as exc:  # absent, or built against another torch
        try:
            _jit_build()
        except Exception as jit_exc:  # noqa: BLE001 - any build failure means: no extension
            lines = str(jit_exc).strip().splitlines() or [""]
            return False, (f"kamim_fast._C is not installed ({exc}) and the JIT build of csrc/ failed "
                           f"({type(jit_exc).__name__}: {lines[-1]})")
    _register()
    return True, ""


def has_cuda() -> bool:
    """Whether the loaded extension holds CUDA kernels (it was built with nvcc)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("kamim_fast::amt_select", "CUDA")


def warn_fallback(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"kamim_fast: the AMT ops use their PyTorch references: {reason}", RuntimeWarning, stacklevel=3)


# --- fake kernels -----------------------------------------------------------------------------------


def _fake_select(noise, weights, num_mask, num_throw, keep_first):
    B, N = noise.shape
    return (noise.new_empty((B, N), dtype=torch.int64), noise.new_empty((B, N), dtype=torch.int64),
            noise.new_empty((B, N), dtype=torch.int8))


def _fake_select_gather(x, noise, weights, num_mask, num_throw, keep_first):
    B, N, D = x.shape
    return (x.new_empty((B, N - num_mask - num_throw, D)), *_fake_select(noise, weights, num_mask, num_throw, keep_first))


def _fake_gather(x, ids):
    return x.new_empty((x.shape[0], ids.shape[1], x.shape[2]))


def _fake_scatter(src, ids, n):
    return src.new_empty((src.shape[0], n, src.shape[2]))


def _fake_unshuffle(visible, mask_token, ids_restore, num_mask, num_throw, keep_first, keep_thrown):
    N = ids_restore.shape[1]
    return visible.new_empty((visible.shape[0], N if keep_thrown else N - num_throw, visible.shape[2]))


def _fake_unshuffle_backward(grad, ids_restore, num_visible, num_mask, num_throw, keep_first, keep_thrown):
    return grad.new_empty((grad.shape[0], num_visible, grad.shape[2])), grad.new_empty((grad.shape[2],))


# --- autograd -----------------------------------------------------------------------------------------


def _gather_setup(ctx, inputs, output):
    x, ids = inputs
    ctx.save_for_backward(ids)
    ctx.n = x.shape[1]


def _gather_backward(ctx, grad):
    (ids,) = ctx.saved_tensors
    return torch.ops.kamim_fast.scatter_rows(grad, ids, ctx.n), None


def _scatter_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _scatter_backward(ctx, grad):
    (ids,) = ctx.saved_tensors
    return torch.ops.kamim_fast.gather_rows(grad, ids), None, None


def _select_gather_setup(ctx, inputs, output):
    x, noise, weights, num_mask, num_throw, keep_first = inputs
    x_kept, ids_shuffle, _, _ = output
    ctx.save_for_backward(ids_shuffle)
    ctx.n, ctx.start, ctx.k = x.shape[1], 0 if keep_first else num_mask + num_throw, x_kept.shape[1]
    ctx.shape, ctx.dtype = x.shape, x.dtype


def _select_gather_backward(ctx, grad_kept, *_int_outputs):
    (ids_shuffle,) = ctx.saved_tensors
    if grad_kept is None:
        return torch.zeros(ctx.shape, dtype=ctx.dtype, device=ids_shuffle.device), None, None, None, None, None
    ids_keep = ids_shuffle[:, ctx.start:ctx.start + ctx.k]
    return torch.ops.kamim_fast.scatter_rows(grad_kept, ids_keep, ctx.n), None, None, None, None, None


def _unshuffle_setup(ctx, inputs, output):
    visible, mask_token, ids_restore, *layout = inputs
    ctx.save_for_backward(ids_restore)
    ctx.layout, ctx.k, ctx.token_shape = layout, visible.shape[1], mask_token.shape


def _unshuffle_backward(ctx, grad):
    (ids_restore,) = ctx.saved_tensors
    gv, gt = torch.ops.kamim_fast.unshuffle_backward(grad, ids_restore, ctx.k, *ctx.layout)
    return gv, gt.reshape(ctx.token_shape), None, None, None, None, None


def _unshuffle_backward_setup(ctx, inputs, output):
    grad, ids_restore, num_visible, *layout = inputs
    ctx.save_for_backward(ids_restore)
    ctx.layout, ctx.shape, ctx.dtype = layout, grad.shape, grad.dtype


def _unshuffle_backward_backward(ctx, grad_visible, grad_token):
    (ids_restore,) = ctx.saved_tensors
    B, _, D = ctx.shape
    k = ids_restore.shape[1] - ctx.layout[0] - ctx.layout[1]
    if grad_visible is None:
        grad_visible = torch.zeros((B, k, D), dtype=ctx.dtype, device=ids_restore.device)
    if grad_token is None:
        grad_token = torch.zeros((D,), dtype=ctx.dtype, device=ids_restore.device)
    return torch.ops.kamim_fast.unshuffle(grad_visible, grad_token, ids_restore, *ctx.layout), None, None, None, None, None, None


def _register() -> None:
    lib = "kamim_fast::"
    for name, fake in (("amt_select", _fake_select), ("select_gather", _fake_select_gather), ("gather_rows", _fake_gather),
                       ("scatter_rows", _fake_scatter), ("unshuffle", _fake_unshuffle),
                       ("unshuffle_backward", _fake_unshuffle_backward)):
        torch.library.register_fake(lib + name, fake)
    torch.library.register_autograd(lib + "gather_rows", _gather_backward, setup_context=_gather_setup)
    torch.library.register_autograd(lib + "scatter_rows", _scatter_backward, setup_context=_scatter_setup)
    torch.library.register_autograd(lib + "select_gather", _select_gather_backward, setup_context=_select_gather_setup)
    torch.library.register_autograd(lib + "unshuffle", _unshuffle_backward, setup_context=_unshuffle_setup)
    torch.library.register_autograd(lib + "unshuffle_backward", _unshuffle_backward_backward,
                                    setup_context=_unshuffle_backward_setup)
