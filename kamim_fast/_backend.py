"""Which implementation runs: the Triton kernels or the PyTorch references.

``KAMIM_FAST_BACKEND`` is read at every call (a dictionary lookup), so tests and users can switch it at
run time:

- ``auto`` (default): the best available. KAMIM ops: Triton for CUDA tensors, the PyTorch reference
  for everything else. AMT ops (C++/CUDA extension ``kamim_fast._C``): the extension on CPU and CUDA
  tensors when it loads (compiled at install, else JIT-built from ``csrc/`` with ninja), else the
  PyTorch reference with one warning.
- ``triton``: always the compiled kernels. KAMIM ops: the Triton kernels; CPU tensors need Triton's
  interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is first imported); that is how CI runs
  every kernel without a GPU. AMT ops: the C++/CUDA extension, raising when it cannot load.
- ``torch``: always the PyTorch reference.

A backend that cannot run raises; nothing falls back silently (the one exception, announced by a
warning, is ``auto`` on a machine where the AMT extension neither is installed nor builds). CUDA tensors
given to an extension built without CUDA raise under every value but ``torch``. Under torch.compile the
choice is made once, at trace time.
"""

from __future__ import annotations

import functools
import os

import torch

ENV_VAR = "KAMIM_FAST_BACKEND"
BACKENDS = ("auto", "triton", "torch")


def requested_backend() -> str:
    """The backend named by ``KAMIM_FAST_BACKEND`` (``auto`` when unset or empty)."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {os.environ[ENV_VAR]!r}")
    return value


@functools.cache
def triton_status() -> tuple[bool, str]:
    """(importable, reason). Imports triton, so it is only called once a kernel may be needed."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:  # pragma: no cover - triton ships with CUDA builds of torch
        return False, f"triton cannot be imported ({exc})"
    return True, ""


def interpreter_active() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    ok, _ = triton_status()
    if not ok:
        return False
    from kamim_fast.kernels import INTERPRETED

    return INTERPRETED


def use_triton(x: torch.Tensor) -> bool:
    """Whether the op on ``x`` runs the Triton kernel (True) or the PyTorch reference (False).

    Raises:
        RuntimeError: the requested backend cannot run on ``x``'s device.
    """
    backend = requested_backend()
    if backend == "torch":
        return False
    if backend == "auto" and x.device.type != "cuda":
        return False
    ok, reason = triton_status()
    if not ok:
        raise RuntimeError(
            f"{ENV_VAR}={backend} needs Triton for {x.device.type} tensors, but {reason}; "
            f"set {ENV_VAR}=torch to use the PyTorch reference"
        )
    if x.device.type == "cuda":
        if interpreter_active():
            raise RuntimeError(
                "TRITON_INTERPRET=1 was set when triton was imported, so the kernels cannot run on "
                f"CUDA tensors; unset it or move the tensors to the CPU (or set {ENV_VAR}=torch)"
            )
        return True
    if x.device.type == "cpu" and interpreter_active():
        return True
    raise RuntimeError(
        f"{ENV_VAR}=triton needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before triton "
        f"is imported; got a {x.device.type} tensor without the interpreter"
    )


def use_extension(x: torch.Tensor) -> bool:
    """Whether an AMT op on ``x`` runs the compiled extension (True) or the PyTorch reference (False).

    The AMT ops (``kamim_fast.amt``) are C++/CUDA, not Triton: ``auto`` takes the extension when it loads
    (the compiled ``kamim_fast._C``, else a JIT build of ``csrc/``) and otherwise the reference, warning
    once; ``triton`` demands the extension (any device it was built for); ``torch`` takes the reference.

    Raises:
        RuntimeError: ``triton`` was asked for and the extension cannot load, or ``x`` is a CUDA tensor
            and the extension was built without CUDA.
    """
    return _use_extension_on(x.device.type)


@torch.compiler.assume_constant_result
def _use_extension_on(device_type: str) -> bool:
    # torch.compile runs this once while tracing and bakes the answer into the graph (no graph break).
    backend = requested_backend()
    if backend == "torch":
        return False
    from . import _ext

    ok, reason = _ext.status()
    if not ok:
        if backend == "triton":
            raise RuntimeError(
                f"{ENV_VAR}=triton needs the compiled AMT extension, but {reason}; "
                f"set {ENV_VAR}=torch to use the PyTorch reference"
            )
        _ext.warn_fallback(reason)
        return False
    if device_type == "cuda" and not _ext.has_cuda():
        raise RuntimeError(
            "the AMT extension kamim_fast._C was built without CUDA, so it cannot run on CUDA tensors; "
            f"rebuild it with nvcc available (CUDA_HOME set: pip install --no-build-isolation -e .) or set {ENV_VAR}=torch"
        )
    if device_type not in ("cpu", "cuda", "meta"):
        if backend == "triton":
            raise RuntimeError(f"{ENV_VAR}=triton: the AMT extension runs on CPU and CUDA tensors, got {device_type}")
        return False
    return True
