"""Build script. The Triton kernels live in the top-level ``kernels/`` folder of the repository and are
installed as the subpackage ``kamim_fast.kernels``; the C++/CUDA extension (csrc/) joins here with the
AMT issue. Metadata lives in pyproject.toml."""

from setuptools import setup

setup(
    packages=["kamim_fast", "kamim_fast.kernels"],
    package_dir={"kamim_fast": "kamim_fast", "kamim_fast.kernels": "kernels"},
)
