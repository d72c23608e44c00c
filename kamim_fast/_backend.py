"""The op registry and the one mechanism that decides which implementation of a ``kamim_fast::`` op runs.

Each op lives in its own module of ``kamim_fast/ops/`` (one op, one module): its schema (the
``torch.library.custom_op`` signature, written once), fake kernel, autograd, PyTorch reference, the one check
of its arguments, its implementations and what each supports (with the reason where it does not), and the
samples and tolerances the conformance suite runs. The module adds the op to :data:`TABLE` with
:func:`register`; tests, benchmarks, the compile tooling, the sanitizer target and the README's backend table
read the ops from :data:`TABLE`, and no other list of op names exists.

Every op has up to three implementations, all with the op's own signature:

- ``triton``: the Triton kernels in ``kamim_fast/kernels/`` (CUDA tensors; CPU tensors only through Triton's
  interpreter, ``TRITON_INTERPRET=1`` set before ``triton`` is first imported: how CI runs them);
- ``cpp``: the compiled extension ``kamim_fast._C`` (``csrc/``), which registers implementations of the ops
  ``kamim_fast_cpp::<op>`` whose schema is the public op's (``torch.ops.kamim_fast_cpp.<op>``);
- ``torch``: the PyTorch reference, the semantics written plainly.

:data:`TABLE` says, per op, which implementations exist, on which devices each runs (and why not elsewhere),
and which one ``auto`` takes per device. A call of an op (:func:`run`) first checks its arguments (the op's
``check``: the same for every backend, so every backend sees checked arguments and gives the same message),
then resolves the implementation: ``KAMIM_FAST_BACKEND=auto|triton|cpp|torch`` is read at every call
(:func:`resolve`), inside the op: under ``torch.compile`` the op is one opaque node and the choice is made
when it runs. A forced backend applies to the ops that implement it (an op without it, e.g. the AMT ops under
``triton``, runs its ``auto`` choice, as the table says) and raises ``RuntimeError`` when it cannot run. An
implementation that cannot run the given arguments (``Impl.not_supported``) raises ``ValueError`` with its
reasons. The one fallback is announced: ``auto`` on a CPU tensor when the extension neither is installed nor
builds (no compiler) takes the reference and warns once per reason.

Each op's per-device kernels are registered with ``register_kernel("cpu")`` / ``("cuda")`` and call
:func:`run`; the op bodies themselves hold no device branches.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch

from ._checks import warn_once

ENV_VAR = "KAMIM_FAST_BACKEND"
BACKENDS = ("auto", "triton", "cpp", "torch")
IMPLEMENTATIONS = ("triton", "cpp", "torch")
CPP_NAMESPACE = "kamim_fast_cpp"
KERNELS_PACKAGE = "kamim_fast.kernels"


def _no_reasons(*args) -> list[str]:
    return []


@dataclass(frozen=True)
class Impl:
    """One implementation of an op: the device types it runs on, the callable (the op's signature), and what
    it does not support, in the manner of xformers' ``not_supported_reasons``.

    Attributes:
        backend: "triton", "cpp" or "torch".
        devices: the device types it runs on.
        kernel: the callable, with the op's own arguments.
        why_not: device type -> why it does not run there (devices outside ``devices`` that users reach).
        not_supported: the op's arguments -> the reasons this implementation cannot run them (empty: it can).
        limits: one line saying what ``not_supported`` refuses (the README's table).
        modules: the Triton kernel modules (``kamim_fast.kernels.<module>``) it launches.
    """

    backend: str
    devices: tuple[str, ...]
    kernel: Callable | None
    why_not: Mapping[str, str] = field(default_factory=dict)
    not_supported: Callable[..., list[str]] = _no_reasons
    limits: str = ""
    modules: tuple[str, ...] = ()


def torch_impl(kernel: Callable) -> Impl:
    """The PyTorch reference: every device."""
    return Impl("torch", ("cpu", "cuda", "meta"), kernel)


def triton_impl(kernel: Callable, *modules: str) -> Impl:
    """The Triton launcher: CUDA tensors, and CPU tensors through the interpreter; ``modules``: the kernel modules
    of ``kamim_fast/kernels/`` it launches."""
    return Impl("triton", ("cuda", "cpu"), kernel, modules=modules)


def cpp_impl(devices: tuple[str, ...], kernel: Callable | None = None, **kwargs) -> Impl:
    """The extension's ``kamim_fast_cpp::<op>`` on ``devices``; ``kernel`` wraps it where the op's arguments
    need adapting (default: the C++ op called with the op's own arguments)."""
    return Impl("cpp", tuple(devices), kernel, **kwargs)


@dataclass(frozen=True)
class OpEntry:
    """An op's row of the registry.

    Attributes:
        name: the stem: ``torch.ops.kamim_fast.<name>``, its module ``kamim_fast.ops.<name>``, its C++
            implementation ``kamim_fast_cpp::<name>``.
        impls: backend -> :class:`Impl`.
        auto: device type -> the backend ``auto`` takes there; other devices take ``torch``.
        check: the one check of the op's arguments (raises TypeError/ValueError naming the argument), run
            before dispatch.
        samples: ``samples(source)`` -> argument tuples for the conformance suite (``source``: the test
            suite's images on a device, see ``kamim_fast.ops._common.SampleSource``).
        tolerances: output index -> "reduction" (a float sum in another order) or "rounding" (a few ulps);
            the other outputs are compared bit for bit.
        differentiable: the inputs the op's autograd differentiates.
        module: the op module.
    """

    name: str
    impls: Mapping[str, Impl]
    auto: Mapping[str, str]
    check: Callable[..., None] = _no_reasons
    samples: Callable | None = None
    tolerances: Mapping[int, str] = field(default_factory=dict)
    differentiable: tuple[int, ...] = ()
    module: str = ""

    @property
    def schema(self) -> str:
        """The op's schema without its namespace, e.g. ``gather_patches(Tensor x, Tensor ids) -> Tensor``: the
        one source the extension's ``kamim_fast_cpp::<op>`` takes its schema from."""
        return str(getattr(torch.ops.kamim_fast, self.name).default._schema).split("::", 1)[1]


TABLE: dict[str, OpEntry] = {}
"""The op registry: name -> :class:`OpEntry`, in the order of ``kamim_fast/ops/__init__.py``."""


def register(op, *, check: Callable[..., None], impls: list[Impl], auto: Mapping[str, str],
             samples: Callable | None = None, tolerances: Mapping[int, str] | None = None,
             differentiable: tuple[int, ...] = ()):
    """Adds the custom op ``kamim_fast::<name>`` to :data:`TABLE` and registers its CPU and CUDA kernels, which
    check the arguments and look the table up at every call (:func:`run`). Returns the op.

    Args:
        op: the ``torch.library.custom_op``; its name (the stem) is also that of its module and of its C++
            implementation in ``kamim_fast_cpp``.
        check: the op's argument check.
        impls: its implementations (:func:`torch_impl` required; :func:`triton_impl`, :func:`cpp_impl`).
        auto: device type -> the backend ``auto`` takes there; other devices take ``torch``.
        samples, tolerances, differentiable: for the conformance suite (:class:`OpEntry`).
    """
    name = op._name
    table = {impl.backend: impl for impl in impls}
    assert "torch" in table and set(table) <= set(IMPLEMENTATIONS) and len(table) == len(impls), (name, list(table))
    if "cpp" in table and table["cpp"].kernel is None:
        table["cpp"] = replace(table["cpp"], kernel=_cpp_kernel(name))
    for device, backend in auto.items():
        if backend not in table or device not in table[backend].devices:
            raise AssertionError(f"{name}: auto takes {backend} on {device}, which the table does not list")
    TABLE[name] = OpEntry(name, table, dict(auto), check, samples, dict(tolerances or {}), tuple(differentiable),
                          op._init_fn.__module__ if hasattr(op, "_init_fn") else "")
    for device in ("cpu", "cuda"):
        op.register_kernel(device)(lambda *args, _device=device: run(name, _device, *args))
        _without_dynamo_until_imported(op, device)
    return op


def _without_dynamo_until_imported(op, device: str) -> None:
    """Keeps ``torch._dynamo`` (about 1 s to import) off the eager path of ``op``'s ``device`` kernel.

    ``register_kernel`` wraps each kernel in ``torch._disable_dynamo``, which imports ``torch._dynamo`` at the
    kernel's first call, so that ``torch.compile`` never traces into the kernel's Python frames. Those frames can
    only be traced while dynamo's frame-evaluation hook is set, which only ``torch._dynamo`` sets; until it is
    imported, the kernel is called without the wrapper, and from then on through it. Under ``torch.compile`` (which
    imports dynamo first) nothing changes: the op stays one opaque node, traced through its fake kernel.
    """
    fns = getattr(op, "_backend_fns", None)
    guarded = fns.get(device) if isinstance(fns, dict) else None
    # the wrapped function: torch's own dispatch to the kernel (or, when disabled, to the op's default)
    plain = getattr(guarded, "__wrapped__", None)
    if plain is None:  # a torch whose custom ops are laid out otherwise: its wrapper, as it is
        return

    def kernel(*args, **kwargs):
        if "torch._dynamo" in sys.modules:
            return guarded(*args, **kwargs)
        return plain(*args, **kwargs)

    kernel.__wrapped__ = guarded
    fns[device] = kernel


def _cpp_kernel(name: str) -> Callable:
    def kernel(*args):
        return getattr(getattr(torch.ops, CPP_NAMESPACE), name)(*args)

    kernel.__name__ = f"{CPP_NAMESPACE}::{name}"
    return kernel


def kernel_modules() -> list[str]:
    """The Triton kernel modules (``kamim_fast.kernels.<module>``) that the registry's ops launch, in order: the
    one list the compile tooling and the tests read."""
    return list(dict.fromkeys(m for entry in TABLE.values() for impl in entry.impls.values() for m in impl.modules))


def requested_backend() -> str:
    """The backend named by ``KAMIM_FAST_BACKEND`` (``auto`` when unset or empty)."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {os.environ[ENV_VAR]!r}")
    return value


# resolve()'s answers: (op, device type, requested backend) -> (what the answer was decided from, the Impl).
# Every op call resolves, and deciding costs more than many small kernels; what it reads (the table row and its
# implementations, whether the extension loaded and holds the kernel, whether Triton and its interpreter run) does
# not change while a process runs, except where a test swaps a row, an implementation or a check, which the stored
# identities catch.
_RESOLVED: dict[tuple[str, str, str], tuple[tuple, Impl]] = {}


def _decided_from(entry: OpEntry) -> tuple:
    return (entry, *entry.impls.values(), *entry.auto.values(), cpp_status, _available, triton_available,
            triton_status, interpreter_active, interpreter_problem)


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
    decided_from = _decided_from(entry)
    if hit is not None and len(hit[0]) == len(decided_from) and all(a is b for a, b in zip(hit[0], decided_from)):
        return hit[1]
    impl = _resolve(name, entry, torch.device(device).type, backend)
    _RESOLVED[key] = (decided_from, impl)
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
        why = f" ({impl.why_not[device_type]})" if device_type in impl.why_not else ""
        raise RuntimeError(f"{ENV_VAR}={backend}: kamim_fast::{name}'s {backend} implementation runs on "
                           f"{'/'.join(impl.devices)} tensors, got {device_type}{why}; set {ENV_VAR}=auto or torch")
    ok, reason = _available(backend, name, device_type)
    if not ok:
        raise RuntimeError(f"{ENV_VAR}={backend} cannot run kamim_fast::{name} on {device_type} tensors: {reason}; "
                           f"set {ENV_VAR}=torch to use the PyTorch reference")
    return impl


def run(name: str, device: torch.device | str, *args):
    """Op ``name`` on ``args`` (the op's own arguments): the op's check, then its resolved implementation.

    Raises:
        TypeError, ValueError: the op's check (the same for every backend); or the resolved implementation
            cannot run these arguments (its ``not_supported`` reasons).
        RuntimeError: see :func:`resolve`.
    """
    entry = TABLE[name]
    entry.check(*args)
    impl = resolve(name, device)
    reasons = impl.not_supported(*args)
    if reasons:
        raise ValueError("; ".join(reasons))
    return impl.kernel(*args)


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
    if device_type == "cpu":
        import numpy
        import triton

        problem = interpreter_problem(triton.__version__, numpy.__version__)
        if problem:
            return False, problem
    return True, ""


def _release(version: str) -> tuple[int, int]:
    major, minor = (version.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def interpreter_problem(triton_version: str, numpy_version: str) -> str | None:
    """Why Triton's CPU interpreter cannot run the kernels with these versions, or None.

    Triton 3.6's interpreter converts a program id (a one-element array) with ``int()``, which NumPy 2.4 refuses
    ("only 0-dimensional arrays can be converted to Python scalars"), so every kernel with a loop over tiles fails;
    Triton 3.8 runs with NumPy 2.4. Versions in between are treated as 3.6 is. Compiled kernels (CUDA) are unaffected.
    """
    if _release(triton_version) < (3, 8) and _release(numpy_version) >= (2, 4):
        return (f"Triton {triton_version}'s CPU interpreter cannot run with NumPy {numpy_version} (it converts "
                "one-element arrays with int(), which NumPy 2.4 refuses): use NumPy < 2.4 or Triton >= 3.8")
    return None


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


def warn_fallback(reason: str) -> None:
    """Says once per reason that ``auto`` runs the PyTorch references on CPU tensors, and why, pointing at the
    user's line."""
    warn_once(("fallback", reason), f"kamim_fast: CPU tensors use the PyTorch references, not the native kernels: "
              f"{reason}", RuntimeWarning)


def backend_table_markdown() -> str:
    """The README's backend table, generated from :data:`TABLE` (``tests/test_backend.py`` keeps them equal): per
    op the devices of each implementation, ``auto``'s choice per device, and what an implementation does not
    run, and why."""
    rows = ["| op | triton | cpp | torch | auto on cpu | auto on cuda | not supported |",
            "|---|---|---|---|---|---|---|"]
    for name, entry in TABLE.items():
        cells = ["/".join(d for d in entry.impls[b].devices if d != "meta") if b in entry.impls else "-"
                 for b in IMPLEMENTATIONS]
        limits = [f"{b} on {d}: {why}" for b, impl in entry.impls.items() for d, why in impl.why_not.items()]
        limits += [f"{b}: {impl.limits}" for b, impl in entry.impls.items() if impl.limits]
        rows.append(f"| `{name}` | " + " | ".join(cells)
                    + f" | {entry.auto.get('cpu', 'torch')} | {entry.auto.get('cuda', 'torch')} | "
                    + ("; ".join(limits) or "-") + " |")
    return "\n".join(rows)
