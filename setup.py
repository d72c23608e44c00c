"""Build script. The Triton kernels live in the top-level ``kernels/`` folder of the repository and are
installed as the subpackage ``kamim_fast.kernels``; the AMT ops' C++/CUDA sources (``csrc/``) build the
extension ``kamim_fast._C``. Metadata lives in pyproject.toml.

The extension is a CUDAExtension when torch is a CUDA build and nvcc is found (``CUDA_HOME``), else a
CppExtension (CPU kernels only). Without a GPU nvcc needs an architecture list: ``TORCH_CUDA_ARCH_LIST``
when set, else ``9.0`` (the H100 of the GPU machines). ``KAMIM_FAST_NO_EXTENSION=1`` skips the
extension altogether (kamim_fast then JIT-builds it at first use, or falls back to the PyTorch reference).
"""

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"


def extension_modules():
    if os.environ.get("KAMIM_FAST_NO_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils import cpp_extension

    cxx = ["-O3", "-DNDEBUG"]
    # at::parallel_for is header-inline OpenMP: without -fopenmp the CPU kernels run on one thread. The
    # extension then shares torch's own libgomp.so.1 (already loaded, same soname).
    link = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx += link
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*.cpp"))  # every CPU kernel file
    use_cuda = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if use_cuda and not (Path(cpp_extension.CUDA_HOME) / "bin" / "nvcc").exists():
        use_cuda = False
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        sources.append(f"{CSRC}/amt_cuda.cu")
        ext = cpp_extension.CUDAExtension(
            "kamim_fast._C", sources, extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-DNDEBUG", "-lineinfo"]},
            include_dirs=[str(ROOT / CSRC)], extra_link_args=link,
        )
    else:
        ext = cpp_extension.CppExtension("kamim_fast._C", sources, extra_compile_args={"cxx": cxx},
                                         include_dirs=[str(ROOT / CSRC)], extra_link_args=link)
    os.environ.setdefault("MAX_JOBS", "2")
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = extension_modules()

setup(
    packages=["kamim_fast", "kamim_fast.integrations", "kamim_fast.kernels"],
    package_dir={"kamim_fast": "kamim_fast", "kamim_fast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
