"""Guard bands around every CPU allocation: ``with guarded() as g: ...`` (tests/guard_alloc.cpp).

Inside the block every CPU tensor PyTorch allocates, whoever allocates it (the C++ kernels' ``at::empty``, the
Triton launchers' ``torch.empty``, whose memory the interpreter writes through raw pointers, the PyTorch
references), is carved from a larger block with a sentinel in a 256-byte band on each side, and its data is
filled with 0xFF bytes. :meth:`Guard.check` then says whether any band changed: a write past the end or
before the start of an output, or of any scratch buffer. The library is not changed for it: the allocator
is c10's CPU allocator, swapped for the block's duration (``c10::SetCPUAllocator``).

The shared library is built once per source and torch version with the C++ compiler that builds the
extension, into the temporary folder, and loaded with ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

SOURCE = Path(__file__).with_name("guard_alloc.cpp")


@functools.cache
def _library() -> ctypes.CDLL:
    text = SOURCE.read_bytes()
    torch_dir = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    key = hashlib.sha256(text + f"{torch.__version__}{torch_dir}{abi}".encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"kamim_fast_guard_{os.getuid()}"
    so = folder / f"guard_alloc_{key}.so"
    if not so.exists():
        cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            if os.environ.get("CI"):
                pytest.fail("no C++ compiler in CI: the guard-band tests need one")
            pytest.skip("no C++ compiler: the guard-band tests need one")
        folder.mkdir(exist_ok=True)
        tmp = folder / f"guard_alloc_{key}.{os.getpid()}.so"
        cmd = [cxx, "-O1", "-shared", "-fPIC", "-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               f"-I{torch_dir / 'include'}", str(SOURCE), f"-L{torch_dir / 'lib'}", "-lc10",
               f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(tmp)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"building {SOURCE.name} failed: {' '.join(cmd)}\n{run.stderr[-3000:]}")
        os.replace(tmp, so)  # atomic: another test process may be building it too
    lib = ctypes.CDLL(str(so))
    for name in ("guard_check_live", "guard_damaged", "guard_allocations"):
        getattr(lib, name).restype = ctypes.c_long
    lib.guard_installed.restype = ctypes.c_int
    lib.guard_report.restype = ctypes.c_char_p
    return lib


class Guard:
    """The guarded allocator while installed (see :func:`guarded`)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib

    def check(self) -> None:
        """Raises AssertionError if a guard band changed (blocks freed so far, and those alive now)."""
        damaged = self._lib.guard_check_live()
        if damaged:
            raise AssertionError(f"{damaged} guard band(s) written; first: {self._lib.guard_report().decode()}")

    @property
    def allocations(self) -> int:
        """How many CPU blocks were allocated since the guard was installed."""
        return self._lib.guard_allocations()


@contextlib.contextmanager
def guarded():
    """Every CPU allocation inside is guarded; the bands are checked on the way out (and by ``Guard.check``)."""
    lib = _library()
    lib.guard_reset()
    lib.guard_install()
    if not lib.guard_installed():
        lib.guard_uninstall()
        raise RuntimeError("the guarded allocator did not become c10's CPU allocator")
    guard = Guard(lib)
    try:
        yield guard
        guard.check()
    finally:
        lib.guard_uninstall()


if __name__ == "__main__":  # a smoke test: python tests/guarded.py
    with guarded() as g:
        t = torch.empty(10, dtype=torch.uint8)
        print("filled with", t[:3].tolist(), "allocations", g.allocations)
        raw = ctypes.cast(t.data_ptr(), ctypes.POINTER(ctypes.c_uint8))
        raw[10] = 0  # one byte past the end
        try:
            g.check()
        except AssertionError as exc:
            print("caught:", exc)
        else:
            sys.exit("missed")
        _library().guard_reset()
