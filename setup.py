"""Build script. Metadata lives in pyproject.toml; this file adds what a declarative file cannot: the
extension ``kamim_fast._C`` built from ``csrc/``.

- The Triton kernels live in ``kamim_fast/kernels/`` (a regular subpackage: no top-level import name of
  the checkout can shadow an installed distribution, such as Hugging Face's ``kernels``).
- The C++/CUDA sources ship inside the package too, as ``kamim_fast/csrc`` (package data), so an
  installed wheel can JIT-build its extension when ``_C`` does not load (``kamim_fast/_ext.py``).
- ``kamim_fast._C`` is on the LibTorch stable ABI and Python's limited API: built once against any torch >= the
  floor (``kamim_fast/_build.py``'s ``TORCH_FLOOR``; torch is in ``build-system.requires``, so pip's isolated
  build has one), it runs with every torch from the floor on and every Python >= 3.10 (an ``abi3`` wheel, one per
  platform and CUDA major version).
- It compiles every ``csrc/*.cpp``; and every ``csrc/*.cu`` when torch is a CUDA build, a real CUDA toolkit is
  found (``nvcc``, ``libcudart``, ``cuda_runtime.h``; torch's guess of ``CUDA_HOME`` first, then
  ``/usr/local/cuda``, ``/usr/local/cuda-*``) and there is something to build for: ``TORCH_CUDA_ARCH_LIST``, or
  a visible GPU (its architecture plus ``8.0;8.6;8.9;9.0+PTX``). A toolkit without a GPU and without
  ``TORCH_CUDA_ARCH_LIST`` builds the CPU kernels only (a CPU machine's ``pip install`` stays within a minute).
  The policy is ``kamim_fast/_build.py``, shared with the JIT build; the build prints one line saying what it
  built and why.
- Without torch (``pip install --no-build-isolation`` into an environment without it), with a torch older than
  the floor, or with ``KAMIM_FAST_NO_EXTENSION=1``, the package is built without ``_C`` and JIT-builds it at first
  use.
"""

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"


def _build_policy():
    """kamim_fast/_build.py, loaded by path: importing kamim_fast would need torch and the built package."""
    spec = importlib.util.spec_from_file_location("_kamim_fast_build", ROOT / "kamim_fast" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_policy()


def _say(line: str) -> None:
    print(f"kamim_fast: {line}", file=sys.stderr, flush=True)


def _build_ext_class(base):
    class BuildExt(base):
        """torch's BuildExtension; after an in-place build (an editable install) it removes the other builds of _C
        (a per-Python ``_C.cpython-*.so`` is imported before ``_C.abi3.so``)."""

        def run(self):
            super().run()
            if self.inplace:
                built = Path(self.get_ext_fullpath("kamim_fast._C"))
                for old in BUILD.stale_extensions(built.parent, built.name):
                    old.unlink()
                    _say(f"removed {old.name}, an earlier build that Python would import before {built.name}")

    return BuildExt


def extension_modules():
    if os.environ.get("KAMIM_FAST_NO_EXTENSION") == "1":
        _say("KAMIM_FAST_NO_EXTENSION=1: no compiled extension (kamim_fast JIT-builds csrc/ at first use)")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        _say(f"building without the compiled extension: torch is not importable here ({exc}); pip's default (isolated) "
             "build has it, `pip install --no-build-isolation` needs it installed first")
        return [], {}
    too_old = BUILD.torch_floor_problem(torch.__version__)
    if too_old:
        _say(f"building without the compiled extension: it needs {too_old}")
        return [], {}
    cpp, cuda = ([os.path.relpath(f, ROOT) for f in files] for files in BUILD.source_files(ROOT / CSRC))
    include_dirs = [str(ROOT / CSRC)]
    flags = BUILD.compiler_flags()
    os.environ.setdefault("MAX_JOBS", str(min(os.cpu_count() or 1, 4)))
    home, archs, why = BUILD.cuda_build(torch.version.cuda, cpp_extension.CUDA_HOME, bool(cuda), os.environ)
    common = {"include_dirs": include_dirs, "extra_link_args": flags["link"], "py_limited_api": True}
    if home is None:
        _say(f"kamim_fast._C with CPU kernels only: {why}")
        ext = cpp_extension.CppExtension("kamim_fast._C", cpp, extra_compile_args={"cxx": flags["cxx"]}, **common)
        return [ext], {"build_ext": _build_ext_class(cpp_extension.BuildExtension)}
    # torch reads its module-level CUDA_HOME for nvcc, the include and the library folders
    cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"] = home
    os.environ[BUILD.ARCH_ENV_VAR] = archs
    _say(f"kamim_fast._C with CPU and CUDA kernels for {archs}: {why}")
    ext = cpp_extension.CUDAExtension("kamim_fast._C", cpp + cuda,
                                      extra_compile_args={"cxx": flags["cxx"], "nvcc": flags["nvcc"]}, **common)
    return [ext], {"build_ext": _build_ext_class(cpp_extension.BuildExtension)}


ext_modules, cmdclass = extension_modules()

setup(
    packages=["kamim_fast", "kamim_fast.integrations", "kamim_fast.kernels", "kamim_fast.ops", "kamim_fast.csrc"],
    package_dir={"kamim_fast": "kamim_fast", "kamim_fast.csrc": CSRC},
    package_data={"kamim_fast.csrc": list(BUILD.SOURCE_PATTERNS)},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # one wheel for every CPython >= 3.10 (the extension uses the limited API only), tagged cp310-abi3
    options={"bdist_wheel": {"py_limited_api": BUILD.PY_LIMITED_API_TAG}} if ext_modules else {},
)
