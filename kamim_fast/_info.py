"""``kamim_fast.backend_info()``: what runs on this machine, and with which versions.

It reads the implementation table and the extension loader; it decides nothing itself. The first call
loads the native extension (or JIT-builds it, as the first op call would) and imports Triton.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass, field

import torch

from . import _backend, _ext

# distribution names whose versions a report shows, beside kamim_fast, Python and torch (None: not installed)
_OPTIONAL = (("triton", ("triton",)), ("numpy", ("numpy",)),
             ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")))


def _distribution_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class BackendInfo:
    """What :func:`backend_info` found. ``print()`` it for a readable report.

    Attributes:
        versions: ``kamim_fast``, ``python``, ``torch``, ``cuda`` (the CUDA version torch was built with,
            None for a CPU build), ``triton``, ``numpy``, ``opencv`` (None when not installed).
        gpu: the first visible CUDA device's name, or None.
        backend: ``KAMIM_FAST_BACKEND`` as it is now (``"auto"`` when unset).
        extension: ``"prebuilt"`` (``kamim_fast._C`` from the install), ``"jit"`` (built from the shipped C++
            sources at first use) or ``"reference"`` (neither loads: CPU tensors run the PyTorch references).
        extension_detail: the library's path, or why neither the prebuilt nor the JIT-built extension loads.
        extension_cuda: whether the loaded extension holds CUDA kernels.
        triton_interpreter: True when ``TRITON_INTERPRET=1`` was set before Triton was imported, so the Triton
            kernels run on CPU tensors (and not on CUDA tensors).
        ops: op name -> device type (``"cpu"``, and ``"cuda"`` when a GPU is visible) -> the implementation
            that runs there now: ``"cpp"``, ``"triton"`` or ``"torch"`` (the PyTorch reference); or
            ``"unavailable: <why>"`` when the requested backend cannot run the op there.
    """

    versions: dict[str, str | None]
    gpu: str | None
    backend: str
    extension: str
    extension_detail: str
    extension_cuda: bool
    triton_interpreter: bool
    ops: dict[str, dict[str, str]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"kamim_fast {self.versions['kamim_fast']}",
                 "versions: " + ", ".join(f"{k} {v if v is not None else '-'}" for k, v in self.versions.items()
                                          if k != "kamim_fast"),
                 f"gpu: {self.gpu or 'none visible'}",
                 f"KAMIM_FAST_BACKEND: {self.backend}"]
        kernels = " (CUDA and CPU kernels)" if self.extension_cuda else " (CPU kernels)"
        lines.append(f"native extension: {self.extension}{kernels if self.extension != 'reference' else ''}: "
                     f"{self.extension_detail}")
        lines.append(f"Triton interpreter: {'on (TRITON_INTERPRET=1)' if self.triton_interpreter else 'off'}")
        devices = list(next(iter(self.ops.values()), {}))
        width = max((len(op) for op in self.ops), default=2)
        lines.append(f"{'op':<{width}}  " + "  ".join(f"{d:<11}" for d in devices).rstrip())
        reasons = {}
        for op, where in self.ops.items():
            cells = []
            for d in devices:
                impl = where[d]
                if impl.startswith("unavailable"):
                    reasons[f"{op} on {d}"] = impl.removeprefix("unavailable: ")
                    impl = "unavailable"
                cells.append(f"{impl:<11}")
            lines.append(f"{op:<{width}}  " + "  ".join(cells).rstrip())
        lines.extend(f"{where}: {why}" for where, why in reasons.items())
        return "\n".join(lines)


def backend_info() -> BackendInfo:
    """Which implementation of each op runs on this machine now, and the versions that matter.

    Call it after ``import kamim_fast``; ``print(kamim_fast.backend_info())`` gives a readable report (put
    it in a bug report). It follows ``KAMIM_FAST_BACKEND`` as it is set when called. The first call loads
    the native extension ``kamim_fast._C`` (JIT-building it from the shipped sources when the prebuilt one
    does not load, as the first op call would) and imports Triton.

    Returns:
        A :class:`BackendInfo`: versions, the GPU, the native extension in use (prebuilt, JIT-built or the
        PyTorch references), whether Triton's CPU interpreter is on, and per op and device type
        (``cpu``; ``cuda`` when a GPU is visible) the implementation that runs: ``cpp``, ``triton`` or
        ``torch``.

    Example:
        >>> import kamim_fast
        >>> info = kamim_fast.backend_info()
        >>> info.versions["kamim_fast"] == kamim_fast.__version__
        True
        >>> info.extension in ("prebuilt", "jit", "reference")
        True
        >>> on_cpu = {op: where.get("cpu") for op, where in info.ops.items()}
        >>> on_cpu["fast_corners"] in ("cpp", "triton", "torch")
        True
    """
    versions: dict[str, str | None] = {
        "kamim_fast": _kamim_fast_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    versions.update({key: _distribution_version(names) for key, names in _OPTIONAL})
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    kind, detail = _ext.loaded()
    try:
        extension_cuda = kind != "reference" and _ext.has_cuda()
    except RuntimeError:  # the loaded library predates the op it is asked about
        extension_cuda = False
    interpreter = _backend.interpreter_active()
    devices = ("cpu", "cuda") if gpu is not None else ("cpu",)
    ops: dict[str, dict[str, str]] = {}
    for name in _backend.TABLE:
        ops[name] = {}
        for device in devices:
            try:
                ops[name][device] = _backend.resolve(name, device).backend
            except (RuntimeError, ValueError) as exc:  # a forced backend that cannot run here, or a bad value
                ops[name][device] = f"unavailable: {exc}"
    backend = os.environ.get(_backend.ENV_VAR, "").strip().lower() or "auto"
    return BackendInfo(versions=versions, gpu=gpu, backend=backend, extension=kind, extension_detail=detail,
                       extension_cuda=bool(extension_cuda), triton_interpreter=interpreter, ops=ops)


def _kamim_fast_version() -> str:
    from ._version import __version__

    return __version__
