"""Loading the AMT extension (``csrc/``), and its ops' fake kernels and autograd formulas.

The schemas and the CPU/CUDA kernels are C++ (``TORCH_LIBRARY_FRAGMENT(kamim_fast, ...)`` in
``csrc/amt.cpp``); this module loads them, in this order:

1. **prebuilt**: ``import kamim_fast._C``, built by ``pip install`` (setup.py: CUDA kernels too when torch
   is a CUDA build and a CUDA toolkit is found, see ``kamim_fast/_build.py``);
2. **JIT-built**: when ``_C`` is absent or does not load (built against another torch), the C++ sources
   are built with ``torch.utils.cpp_extension.load`` (ninja) at first use: those shipped in the package
   (``kamim_fast/csrc``, in every wheel), else a checkout's ``csrc/``. ``KAMIM_FAST_JIT=0`` skips it,
   ``KAMIM_FAST_JIT=cpu`` builds the CPU kernels only, ``KAMIM_FAST_JIT=cuda`` the CUDA kernels too even
   without a visible GPU; by default the CUDA kernels are built when torch is a CUDA build, a CUDA toolkit
   is found and a GPU is visible, for ``TORCH_CUDA_ARCH_LIST`` when set, else the visible GPUs'
   architectures (the policy of ``kamim_fast/_build.py``, shared with setup.py). It warns once, saying
   how to get the prebuilt extension;
3. **reference**: the AMT functions use their PyTorch references (``_backend.use_extension`` warns once,
   or raises when ``KAMIM_FAST_BACKEND=triton`` asked for the extension).

``loaded()`` says which of the three is in use, and from where.

Once loaded, the Python side registers a fake kernel (shapes for torch.compile and FakeTensor) and an
autograd formula for each op. The adjoint pairs close under differentiation: gather_rows <-> scatter_rows
and unshuffle <-> unshuffle_backward, so double backward works too.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path

import torch

from . import _build

PACKAGE_DIR = Path(__file__).resolve().parent
JIT_ENV_VAR = "KAMIM_FAST_JIT"
OPS = ("amt_select", "select_gather", "gather_rows", "scatter_rows", "unshuffle", "unshuffle_backward")
HOW_TO_PREBUILD = ("for the prebuilt extension, build kamim-fast against this torch: `pip install "
                   "--no-build-isolation --no-binary kamim-fast --force-reinstall --no-deps kamim-fast` "
                   "(in a checkout: `pip install --no-build-isolation -e .`)")

_warned = False
_loaded = {"kind": "", "where": "", "built": ""}  # set by status(): kind "prebuilt" | "jit" | "reference"


def sources_dir() -> Path | None:
    """The C++ sources the JIT build compiles: ``kamim_fast/csrc`` (installed), else the checkout's ``csrc/``."""
    return _build.find_sources(PACKAGE_DIR)


def _jit_build() -> str:
    """Builds and loads the C++ sources with ninja; returns the library path. Raises when it cannot."""
    mode = os.environ.get(JIT_ENV_VAR, "").strip().lower()
    if mode == "0":
        raise RuntimeError(f"the JIT build is disabled ({JIT_ENV_VAR}=0)")
    csrc = sources_dir()
    if csrc is None:
        raise RuntimeError(f"the C++ sources are neither in the package nor in a checkout (looked in "
                           f"{PACKAGE_DIR / 'csrc'} and {PACKAGE_DIR.parent / 'csrc'})")
    from torch.utils import cpp_extension

    cpp, cuda = _build.source_files(csrc)
    home, gpus = None, []
    if mode == "cpu":
        why = f"{JIT_ENV_VAR}=cpu"
    elif torch.version.cuda is None:
        why = "torch is a CPU-only build"
    elif not cuda:
        why = f"no *.cu in {csrc}"
    else:
        gpus = _build.visible_gpu_capabilities()
        if gpus or mode == "cuda":
            home, why = _build.choose_cuda_toolkit(torch.version.cuda, cpp_extension.CUDA_HOME)
        else:
            why = f"no GPU is visible ({JIT_ENV_VAR}=cuda builds them anyway)"
    flags = _build.compiler_flags()
    cuda_flags = list(flags["nvcc"])
    saved = cpp_extension.CUDA_HOME, os.environ.get(_build.ARCH_ENV_VAR)
    _loaded["built"] = f"CPU kernels only: {why}"
    if home is not None:
        archs = _build.cuda_arch_list(os.environ, gpus, portable=False)
        _loaded["built"] = f"CPU and CUDA kernels for {archs} ({why})"
        cuda_flags.append("-DKAMIM_FAST_ARCHS=" + re.sub(r"\W", "_", archs))  # in the build's hash: a new list rebuilds
        cpp_extension.CUDA_HOME = home  # torch's guess may be no toolkit (nvcc outside one)
        os.environ[_build.ARCH_ENV_VAR] = archs
    try:
        return cpp_extension.load(
            name="kamim_fast_cuda" if home else "kamim_fast_cpu", sources=cpp + (cuda if home else []),
            extra_include_paths=[str(csrc)], extra_cflags=flags["cxx"], extra_cuda_cflags=cuda_flags,
            extra_ldflags=flags["link"], with_cuda=home is not None, is_python_module=False, verbose=False,
        )
    finally:
        cpp_extension.CUDA_HOME = saved[0]
        if saved[1] is None:
            os.environ.pop(_build.ARCH_ENV_VAR, None)
        else:
            os.environ[_build.ARCH_ENV_VAR] = saved[1]


@functools.cache
def status() -> tuple[bool, str]:
    """(loaded, reason when not). Loads the extension on first call and registers the Python side."""
    try:
        from . import _C  # registers torch.ops.kamim_fast.amt_select and the others
    except (ImportError, OSError) as exc:  # absent, or built against another torch
        try:
            path = _jit_build()
        except Exception as jit_exc:  # noqa: BLE001 - any build failure means: no extension
            lines = str(jit_exc).strip().splitlines() or [""]
            reason = (f"kamim_fast._C did not load ({exc}) and the JIT build of the C++ sources failed "
                      f"({type(jit_exc).__name__}: {lines[-1]})")
            _loaded.update(kind="reference", where=reason)
            return False, reason
        _loaded.update(kind="jit", where=str(path))
        _warn_once(f"kamim_fast: the AMT ops use a JIT build of the C++ sources ({path}; {_loaded['built']}) "
                   f"because the prebuilt kamim_fast._C did not load ({exc}); {HOW_TO_PREBUILD}")
    else:
        _loaded.update(kind="prebuilt", where=str(getattr(_C, "__file__", "")))
    _register()
    return True, ""


def loaded() -> tuple[str, str]:
    """Which AMT implementation is in use, loading it first: ("prebuilt", path of kamim_fast._C),
    ("jit", path of the JIT-built library) or ("reference", why the other two are not)."""
    status()
    return _loaded["kind"], _loaded["where"]


def has_cuda() -> bool:
    """Whether the loaded extension holds CUDA kernels (it was built with nvcc)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("kamim_fast::amt_select", "CUDA")


def _warn_once(message: str, stacklevel: int = 4) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def warn_fallback(reason: str) -> None:
    _warn_once(f"kamim_fast: the AMT ops use their PyTorch references: {reason}; {HOW_TO_PREBUILD}")


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
