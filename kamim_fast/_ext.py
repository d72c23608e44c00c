"""Loading the compiled extension (``csrc/``): the native kernels of every op.

The extension holds implementations only. Its C++ registers the CPU kernels (and, built with nvcc, the CUDA
kernels) of the ops ``kamim_fast_cpp::<op>`` on the LibTorch stable ABI (``STABLE_TORCH_LIBRARY_IMPL``); this
module defines their schemas when the library loads (:func:`define_schemas`): each is the schema of the public
``kamim_fast::<op>``, defined once in the op's module of the registry (``kamim_fast/ops/``, one module per op),
under the extension's namespace, so a schema is written once, in Python, and the implementation table
(``_backend.py``) calls ``kamim_fast_cpp::<op>`` with the public op's own arguments. The native kernels are
loaded in this order:

1. **prebuilt**: ``import kamim_fast._C``, built by ``pip install`` (torch is a build requirement). One build
   serves every torch from the floor it names (:data:`kamim_fast._build.TORCH_FLOOR`) to the newest and every
   Python >= 3.10 (the stable ABI, and Python's limited API: ``_C.abi3.so``). Its CUDA kernels are built where
   a CUDA toolkit and a GPU (or ``TORCH_CUDA_ARCH_LIST``) are, see ``kamim_fast/_build.py``;
2. **JIT-built**: when ``_C`` is absent or does not load, the C++ sources are built with
   ``torch.utils.cpp_extension.load`` (ninja) at first use: those shipped in the package (``kamim_fast/csrc``,
   in every wheel), else a checkout's ``csrc/``. It says before it starts that it compiles and about how long
   that takes, and builds into a folder named after the sources' hash, the torch version and the Python, so
   a second venv or a second torch does not rebuild over the first. ``KAMIM_FAST_JIT=0`` skips it,
   ``KAMIM_FAST_JIT=cpu`` builds the CPU kernels only, ``KAMIM_FAST_JIT=cuda`` the CUDA kernels too even
   without a visible GPU; by default the CUDA kernels are built when torch is a CUDA build, a CUDA toolkit is
   found and a GPU is visible, for ``TORCH_CUDA_ARCH_LIST`` when set, else the visible GPUs' architectures
   (the policy of ``kamim_fast/_build.py``, shared with setup.py). It warns once, saying how to get the
   prebuilt extension;
3. **reference**: nothing loads: ``KAMIM_FAST_BACKEND=auto`` then runs the PyTorch references on CPU
   tensors (``_backend.warn_fallback`` warns once with ``status()``'s reason, which says how to get the
   prebuilt extension), and a forced ``cpp`` raises.

``loaded()`` says which of the three is in use, and from where.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import warnings
from pathlib import Path

import torch

from . import _build

PACKAGE_DIR = Path(__file__).resolve().parent
JIT_ENV_VAR = "KAMIM_FAST_JIT"
NAMESPACE = "kamim_fast_cpp"  # the extension's ops; the public ops are kamim_fast::<op>
PUBLIC_NAMESPACE = "kamim_fast"
# Ops of the extension that serve no public op (tools and tests read them), with their schemas, written once here.
INTERNAL_SCHEMAS = {"fast_cpu_isa": "fast_cpu_isa() -> str"}  # the vector copy the native CPU kernels run
HOW_TO_PREBUILD = ("for the prebuilt extension, reinstall kamim-fast with pip, which compiles it (torch is a build "
                   "requirement): `pip install --force-reinstall --no-deps kamim-fast`, or `pip install -e .` in a "
                   "checkout (`--no-build-isolation` builds against the torch installed, without downloading one)")

_loaded = {"kind": "", "where": "", "built": ""}  # set by status(): kind "prebuilt" | "jit" | "reference"
_library: torch.library.Library | None = None  # holds the schemas of kamim_fast_cpp::<op>


def sources_dir() -> Path | None:
    """The C++ sources the JIT build compiles: ``kamim_fast/csrc`` (installed), else the checkout's ``csrc/``."""
    return _build.find_sources(PACKAGE_DIR)


CSRC = sources_dir() or PACKAGE_DIR.parent / "csrc"  # where the sources are (for tools such as tests/mutants.py)


# --- the schemas ------------------------------------------------------------------------------------------


def implemented_ops() -> list[str]:
    """The ops ``kamim_fast_cpp::<op>`` the loaded libraries register a kernel of (any device), sorted."""
    prefix = NAMESPACE + "::"
    names = set()
    for key in ("CPU", "CUDA", "CompositeExplicitAutograd"):
        names |= {r[len(prefix):].split(".")[0] for r in torch._C._dispatch_get_registrations_for_dispatch_key(key)
                  if r.startswith(prefix)}
    return sorted(names)


def _has_schema(qualified: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualified, "")
    except RuntimeError:
        return False
    return True


def native_schema(name: str) -> str:
    """The schema of ``kamim_fast_cpp::<name>``: the public op's, renamed (or, for an op of the extension that
    serves no public op, its entry of :data:`INTERNAL_SCHEMAS`). Raises ``RuntimeError`` when there is none."""
    if name in INTERNAL_SCHEMAS:
        return INTERNAL_SCHEMAS[name]
    try:
        public = str(getattr(getattr(torch.ops, PUBLIC_NAMESPACE), name).default._schema)
    except (AttributeError, RuntimeError) as exc:
        raise RuntimeError(f"the extension implements {NAMESPACE}::{name}, but there is no public op "
                           f"{PUBLIC_NAMESPACE}::{name} to take its schema from ({exc})") from exc
    return public.removeprefix(PUBLIC_NAMESPACE + "::")


def define_schemas() -> list[str]:
    """Defines the schema of every op the loaded extension implements and that has none yet; returns their names."""
    global _library
    if _library is None:
        _library = torch.library.Library(NAMESPACE, "FRAGMENT")
    defined = []
    for name in implemented_ops():
        if not _has_schema(f"{NAMESPACE}::{name}"):
            _library.define(native_schema(name))
            defined.append(name)
    return defined


# --- the JIT build ----------------------------------------------------------------------------------------


def jit_folder(csrc: Path, sources: list[str], flags: list[str], kind: str) -> Path:
    """Where the JIT build of ``sources`` goes: below torch's extensions folder (``TORCH_EXTENSIONS_DIR``), one
    folder per build: ``kamim_fast/<kind>-<hash of the sources and flags>-torch<version>-py<major><minor>``."""
    from torch.utils import cpp_extension

    digest = hashlib.sha256()
    for path in sorted(set(sources) | {str(p) for p in csrc.glob("*.h")} | {str(p) for p in csrc.glob("*.cuh")}):
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    digest.update(" ".join(flags).encode())
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    tag = f"{kind}-{digest.hexdigest()[:16]}-torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
    return root / "kamim_fast" / re.sub(r"[^\w.+-]", "_", tag)


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
    archs = ""
    if home is not None:
        archs = _build.cuda_arch_list(os.environ, gpus, portable=False)
        _loaded["built"] = f"CPU and CUDA kernels for {archs} ({why})"
        cuda_flags.append("-DKAMIM_FAST_ARCHS=" + re.sub(r"\W", "_", archs))  # in the build's hash: a new list rebuilds
    sources = cpp + (cuda if home else [])
    name = "kamim_fast_cuda" if home else "kamim_fast_cpu"
    folder = jit_folder(csrc, sources, flags["cxx"] + cuda_flags + flags["link"], "cuda" if home else "cpu")
    if not any(folder.glob(f"{name}*.so")):
        estimate = _build.estimated_build_time(len(_build.arch_entries(archs)) if home else 0)
        print(f"kamim_fast: compiling the native kernels ({_loaded['built']}) into {folder}: {estimate}, once for "
              f"these sources, this torch and this Python", file=sys.stderr, flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    if home is not None:
        cpp_extension.CUDA_HOME = home  # torch's guess may be no toolkit (nvcc outside one)
        os.environ[_build.ARCH_ENV_VAR] = archs
    try:
        return cpp_extension.load(
            name=name, sources=sources, extra_include_paths=[str(csrc)], extra_cflags=flags["cxx"],
            extra_cuda_cflags=cuda_flags, extra_ldflags=flags["link"], with_cuda=home is not None,
            build_directory=str(folder), is_python_module=False, verbose=False,
        )
    finally:
        cpp_extension.CUDA_HOME = saved[0]
        if saved[1] is None:
            os.environ.pop(_build.ARCH_ENV_VAR, None)
        else:
            os.environ[_build.ARCH_ENV_VAR] = saved[1]


# --- loading ----------------------------------------------------------------------------------------------


@functools.cache
def status() -> tuple[bool, str]:
    """(loaded, reason when not). Loads the extension and defines its schemas on first call."""
    too_old = _build.torch_floor_problem(torch.__version__)
    if too_old:
        reason = f"the native kernels need {too_old}; upgrade torch (pip install -U torch)"
        _loaded.update(kind="reference", where=reason)
        return False, reason
    try:
        from . import _C  # registers the kernels of kamim_fast_cpp::*
    except (ImportError, OSError) as exc:  # absent, or a broken build
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
    try:
        define_schemas()
    except RuntimeError as exc:
        reason = f"the extension ({_loaded['where']}) loaded, but its ops could not be defined: {exc}"
        _loaded.update(kind="reference", where=reason)
        return False, reason
    return True, ""


def loaded() -> tuple[str, str]:
    """Which native implementation is in use, loading it first: ("prebuilt", path of kamim_fast._C),
    ("jit", path of the JIT-built library) or ("reference", why the other two are not)."""
    status()
    return _loaded["kind"], _loaded["where"]


def has_cuda() -> bool:
    """Whether the loaded extension holds CUDA kernels (it was built with nvcc)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::amt_masking", "CUDA")
