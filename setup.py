"""Build script. Metadata lives in pyproject.toml; this file adds what a declarative file cannot: the
extension ``kamim_fast._C`` built from ``csrc/`` against the torch of the build environment.

- The Triton kernels live in ``kamim_fast/kernels/`` (a regular subpackage: no top-level import name of
  the checkout can shadow an installed distribution, such as Hugging Face's ``kernels``).
- The C++/CUDA sources ship inside the package too, as ``kamim_fast/csrc`` (package data), so an
  installed wheel can JIT-build its extension when ``_C`` does not load (``kamim_fast/_ext.py``).
- ``kamim_fast._C`` compiles every ``csrc/*.cpp``, and every ``csrc/*.cu`` when torch is a CUDA build and
  a real CUDA toolkit is found (``nvcc``, ``libcudart``, ``cuda_runtime.h``; torch's guess of
  ``CUDA_HOME`` first, then ``/usr/local/cuda``, ``/usr/local/cuda-*``), for ``TORCH_CUDA_ARCH_LIST`` when
  set, else the visible GPUs plus ``8.0;8.6;8.9;9.0+PTX``. Otherwise it is a CPU-only extension. The policy
  is ``kamim_fast/_build.py``, shared with the JIT build; the build prints one line saying what it built
  and why.
- torch must be importable while building (``pip install --no-build-isolation``: pip's isolated build
  environment would hold a different torch, or none). Without torch, or with ``KAMIM_FAST_NO_EXTENSION=1``,
  the package is built without ``_C`` and JIT-builds it at first use.
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


def extension_modules():
    if os.environ.get("KAMIM_FAST_NO_EXTENSION") == "1":
        _say("KAMIM_FAST_NO_EXTENSION=1: no compiled extension (kamim_fast JIT-builds csrc/ at first use)")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        _say(f"building without the compiled extension: torch is not importable here ({exc}); install with "
             "`pip install --no-build-isolation` into an environment that has torch to get it")
        return [], {}
    cpp, cuda = ([os.path.relpath(f, ROOT) for f in files] for files in BUILD.source_files(ROOT / CSRC))
    include_dirs = [str(ROOT / CSRC)]
    flags = BUILD.compiler_flags()
    os.environ.setdefault("MAX_JOBS", "2")
    home, why = BUILD.choose_cuda_toolkit(torch.version.cuda, cpp_extension.CUDA_HOME)
    if home is None or not cuda:
        _say(f"kamim_fast._C with CPU kernels only: {why if home is None else 'no csrc/*.cu'}")
        ext = cpp_extension.CppExtension("kamim_fast._C", cpp, extra_compile_args={"cxx": flags["cxx"]},
                                         include_dirs=include_dirs, extra_link_args=flags["link"])
        return [ext], {"build_ext": cpp_extension.BuildExtension}
    # torch reads its module-level CUDA_HOME for nvcc, the include and the library folders
    cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"] = home
    archs = BUILD.cuda_arch_list(os.environ, BUILD.visible_gpu_capabilities(), portable=True)
    os.environ[BUILD.ARCH_ENV_VAR] = archs
    _say(f"kamim_fast._C with CPU and CUDA kernels for {archs}: {why}")
    ext = cpp_extension.CUDAExtension(
        "kamim_fast._C", cpp + cuda, include_dirs=include_dirs, extra_link_args=flags["link"],
        extra_compile_args={"cxx": flags["cxx"], "nvcc": flags["nvcc"]},
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = extension_modules()

setup(
    packages=["kamim_fast", "kamim_fast.integrations", "kamim_fast.kernels", "kamim_fast.ops", "kamim_fast.csrc"],
    package_dir={"kamim_fast": "kamim_fast", "kamim_fast.csrc": CSRC},
    package_data={"kamim_fast.csrc": list(BUILD.SOURCE_PATTERNS)},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
