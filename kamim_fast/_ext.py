"""Loading the compiled extension ``kamim_fast._C`` (``csrc/``): the native kernels of every op.

The extension registers its kernels in C++ as ``kamim_fast_cpp::<op>`` (``TORCH_LIBRARY_FRAGMENT`` in each
``csrc/*.cpp``; CPU, and CUDA for the AMT ops in ``csrc/amt_cuda.cu``), with the schemas of the public
``kamim_fast::<op>`` ops of the op registry (``kamim_fast/ops/``, one module per op); the registry
(``_backend.py``) calls them. This module loads them, in this order:

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
3. **reference**: nothing loads: ``KAMIM_FAST_BACKEND=auto`` then runs the PyTorch references on CPU
   tensors (``_backend.warn_fallback`` warns once with ``status()``'s reason, which says how to get the
   prebuilt extension), and a forced ``cpp`` raises.

``loaded()`` says which of the three is in use, and from where.
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
HOW_TO_PREBUILD = ("for the prebuilt extension, build kamim-fast against this torch: `pip install "
                   "--no-build-isolation --no-binary kamim-fast --force-reinstall --no-deps kamim-fast` "
                   "(in a checkout: `pip install --no-build-isolation -e .`)")

_loaded = {"kind": "", "where": "", "built": ""}  # set by status(): kind "prebuilt" | "jit" | "reference"


def sources_dir() -> Path | None:
    """The C++ sources the JIT build compiles: ``kamim_fast/csrc`` (installed), else the checkout's ``csrc/``."""
    return _build.find_sources(PACKAGE_DIR)


CSRC = sources_dir() or PACKAGE_DIR.parent / "csrc"  # where the sources are (for tools such as tests/mutants.py)


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
    """(loaded, reason when not). Loads the extension on first call."""
    try:
        from . import _C  # registers the ops torch.ops.kamim_fast_cpp.*
    except (ImportError, OSError) as exc:  # absent, or built against another torch
        try:
            path = _jit_build()
        except Exception as jit_exc:  # noqa: BLE001 - any build failure means: no extension
            lines = str(jit_exc).strip().splitlines() or [""]
            reason = (f"kamim_fast._C did not load ({exc}) and the JIT build of the C++ sources failed "
                      f"({type(jit_exc).__name__}: {lines[-1]}); {HOW_TO_PREBUILD}")
            _loaded.update(kind="reference", where=reason)
            return False, reason
        _loaded.update(kind="jit", where=str(path))
        warnings.warn(f"kamim_fast: the native kernels are a JIT build of the C++ sources ({path}; {_loaded['built']}) "
                      f"because the prebuilt kamim_fast._C did not load ({exc}); {HOW_TO_PREBUILD}",
                      RuntimeWarning, stacklevel=4)
    else:
        _loaded.update(kind="prebuilt", where=str(getattr(_C, "__file__", "")))
    return True, ""


def loaded() -> tuple[str, str]:
    """Which native implementation is in use, loading it first: ("prebuilt", path of kamim_fast._C),
    ("jit", path of the JIT-built library) or ("reference", why the other two are not)."""
    status()
    return _loaded["kind"], _loaded["where"]


def has_cuda() -> bool:
    """Whether the loaded extension holds CUDA kernels (it was built with nvcc)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("kamim_fast_cpp::amt_masking", "CUDA")
