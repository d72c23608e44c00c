"""The implementation table: which implementation of each ``kamim_fast::`` op runs, per device.

Every op has up to three implementations, all with the op's own signature:

- ``triton``: the Triton kernels in ``kamim_fast/kernels/`` (CUDA tensors; CPU tensors only through Triton's
  interpreter, ``TRITON_INTERPRET=1`` set before ``triton`` is first imported: how CI runs them);
- ``cpp``: the compiled extension ``kamim_fast._C`` (``csrc/``), its ops registered in C++ under the
  namespace ``kamim_fast_cpp`` with the public op's schema (``torch.ops.kamim_fast_cpp.<op>``);
- ``torch``: the PyTorch reference, the semantics written plainly.

:data:`TABLE` says, per op, which implementations exist, on which devices each runs, and which one
``auto`` takes per device. ``KAMIM_FAST_BACKEND=auto|triton|cpp|torch`` is read at every call
(:func:`resolve`), inside the op: under ``torch.compile`` the op is one opaque node and the choice is
made when it runs. A forced backend applies to the ops that implement it (an op without it, e.g. the AMT
ops under ``triton``, runs its ``auto`` choice, as the table says) and raises ``RuntimeError`` when it
cannot run. The one fallback is announced: ``auto`` on a CPU tensor when the extension neither is
installed nor builds (no compiler) takes the reference and warns once.

Each op's per-device kernels are registered with ``register_kernel("cpu")`` / ``("cuda")`` and call
:func:`run`; the op bodies themselves hold no device branches (``_ops.py``, ``_ext.py``).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

ENV_VAR = "KAMIM_FAST_BACKEND"
BACKENDS = ("auto", "triton", "cpp", "torch")
IMPLEMENTATIONS = ("triton", "cpp", "torch")
CPP_NAMESPACE = "kamim_fast_cpp"


@dataclass(frozen=True)
class Impl:
    """One implementation of an op: the device types it runs on, and the callable (the op's signature)."""

    backend: str
    devices: tuple[str, ...]
    kernel: Callable


@dataclass(frozen=True)
class OpEntry:
    """An op's row of the table: its implementations and, per device type, the one ``auto`` takes."""

    name: str
    impls: Mapping[str, Impl]
    auto: Mapping[str, str]


TABLE: dict[str, OpEntry] = {}


def register(op, *, torch_ref: Callable, triton: Callable | None = None, cpp: tuple[str, ...] = (),
             auto: Mapping[str, str], cpp_kernel: Callable | None = None):
    """Adds the custom op ``kamim_fast::<name>`` to the table and registers its CPU and CUDA kernels, which
    look the table up at every call (:func:`run`). Returns the op.

    Args:
        op: the ``torch.library.custom_op``; its name (the stem) is also that of its C++ implementation in
            ``kamim_fast_cpp``.
        torch_ref: the PyTorch reference (runs on every device).
        triton: the Triton launcher (CUDA, and CPU through the interpreter), if the op has one.
        cpp: the device types the extension implements ``kamim_fast_cpp::name`` for.
        cpp_kernel: a wrapper around ``torch.ops.kamim_fast_cpp.name`` where the op's arguments need
            adapting (default: the C++ op called with the op's own arguments).
        auto: device type -> the backend ``auto`` takes there; other devices take ``torch``.
    """
    name = op._name
    impls = {"torch": Impl("torch", ("cpu", "cuda", "meta"), torch_ref)}
    if triton is not None:
        impls["triton"] = Impl("triton", ("cuda", "cpu"), triton)
    if cpp:
        impls["cpp"] = Impl("cpp", tuple(cpp), cpp_kernel or _cpp_kernel(name))
    for device, backend in auto.items():
        if backend not in impls or device not in impls[backend].devices:
            raise AssertionError(f"{name}: auto takes {backend} on {device}, which the table does not list")
    TABLE[name] = OpEntry(name, impls, dict(auto))
    for device in ("cpu", "cuda"):
        op.register_kernel(device)(lambda *args, _device=device: run(name, _device, *args))
    return op


def _cpp_kernel(name: str) -> Callable:
    def kernel(*args):
        return getattr(getattr(torch.ops, CPP_NAMESPACE), name)(*args)

    kernel.__name__ = f"{CPP_NAMESPACE}::{name}"
    return kernel


def requested_backend() -> str:
    """The backend named by ``KAMIM_FAST_BACKEND`` (``auto`` when unset or empty)."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {os.environ[ENV_VAR]!r}")
    return value


# resolve()'s answers: (op, device type, requested backend) -> (the table row and the checks it was decided
# with, the Impl). Every op call resolves, and deciding costs more than many small kernels; what it reads (the
# table row, whether the extension loaded and holds the kernel) does not change while a process runs, except
# where a test swaps a row or a check, which the stored identities catch.
_RESOLVED: dict[tuple[str, str, str], tuple[OpEntry, Callable, Callable, Impl]] = {}


def resolve(name: str, device: torch.device | str) -> Impl:
    """The implementation of op ``name`` that runs on ``device`` under ``KAMIM_FAST_BACKEND`` now.

    Raises:
        RuntimeError: the requested backend has no implementation of the op on that device, or cannot run.
    """
    entry = TABLE[name]
    device_type = device if isinstance(device, str) else device.type
    backend = requested_backend()
    key = (name, device_type, backend)
    hit = _RESOLVED.get(key)
    if hit is not None and hit[0] is entry and hit[1] is cpp_status and hit[2] is _available:
        return hit[3]
    impl = _resolve(name, entry, torch.device(device).type, backend)
    _RESOLVED[key] = (entry, cpp_status, _available, impl)
    return impl


def _resolve(name: str, entry: OpEntry, device_type: str, backend: str) -> Impl:
    if backend != "auto" and backend not in entry.impls:
        backend = "auto"  # a forced backend applies to the ops that have it; the others run their default
    if backend == "auto":
        choice = entry.auto.get(device_type, "torch")
        if choice == "cpp" and device_type == "cpu":
            ok, reason = cpp_status(name, device_type)
            if not ok:  # no compiler: the reference, announced once
                warn_fallback(reason)
                return entry.impls["torch"]
        backend = choice
    impl = entry.impls[backend]
    if device_type not in impl.devices:
        raise RuntimeError(f"{ENV_VAR}={backend}: kamim_fast::{name}'s {backend} implementation runs on "
                           f"{'/'.join(impl.devices)} tensors, got {device_type}; set {ENV_VAR}=auto or torch")
    ok, reason = _available(backend, name, device_type)
    if not ok:
        raise RuntimeError(f"{ENV_VAR}={backend} cannot run kamim_fast::{name} on {device_type} tensors: {reason}; "
                           f"set {ENV_VAR}=torch to use the PyTorch reference")
    return impl


def run(name: str, device: torch.device | str, *args):
    """Runs op ``name``'s resolved implementation on ``args`` (the op's own arguments)."""
    return resolve(name, device).kernel(*args)


def _available(backend: str, name: str, device_type: str) -> tuple[bool, str]:
    if backend == "triton":
        return triton_available(device_type)
    if backend == "cpp":
        return cpp_status(name, device_type)
    return True, ""


def triton_available(device_type: str) -> tuple[bool, str]:
    ok, reason = triton_status()
    if not ok:
        return False, reason
    if device_type == "cuda" and interpreter_active():
        return False, ("TRITON_INTERPRET=1 was set when triton was imported, so the kernels cannot run on CUDA "
                       "tensors; unset it or move the tensors to the CPU")
    if device_type == "cpu" and not interpreter_active():
        return False, ("the Triton kernels need CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before "
                       "triton is imported")
    return True, ""


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


_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def cpp_status(name: str, device_type: str) -> tuple[bool, str]:
    """Whether the extension is loaded and implements ``kamim_fast_cpp::name`` for ``device_type``."""
    from . import _ext

    ok, reason = _ext.status()
    if not ok:
        return False, reason
    key = _DISPATCH_KEYS.get(device_type)
    qualified = f"{CPP_NAMESPACE}::{name}"
    if key is None or not _has_kernel(qualified, key):
        hint = ("it was built without CUDA kernels: rebuild it with a CUDA toolkit where a GPU is visible, or name the "
                "GPUs to build for: TORCH_CUDA_ARCH_LIST=9.0 pip install --force-reinstall --no-deps kamim-fast"
                ) if device_type == "cuda" else "it was built from other sources: rebuild it"
        return False, f"the extension kamim_fast._C has no {device_type} kernel of {qualified} ({hint})"
    return True, ""


def _has_kernel(qualified: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key)
    except RuntimeError:  # no such op: the loaded library predates it
        return False


_warned = False


def warn_fallback(reason: str) -> None:
    """Says once that ``auto`` runs the PyTorch references on CPU tensors, and why."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"kamim_fast: CPU tensors use the PyTorch references, not the native kernels: {reason}",
                      RuntimeWarning, stacklevel=4)


def backend_table_markdown() -> str:
    """The README's backend table, generated from :data:`TABLE` (``tests/test_backend.py`` keeps them equal)."""
    rows = ["| op | triton | cpp | torch | auto on cpu | auto on cuda |", "|---|---|---|---|---|---|"]
    for name, entry in TABLE.items():
        cells = ["/".join(d for d in entry.impls[b].devices if d != "meta") if b in entry.impls else "-"
                 for b in IMPLEMENTATIONS]
        rows.append(f"| `{name}` | " + " | ".join(cells)
                    + f" | {entry.auto.get('cpu', 'torch')} | {entry.auto.get('cuda', 'torch')} |")
    return "\n".join(rows)
