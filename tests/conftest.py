"""Shared fixtures. Without a GPU, Triton's interpreter runs every kernel on CPU tensors.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, before anything
imports kamim_fast's kernels. On a machine with CUDA the real kernels run on CUDA tensors instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dataclasses  # noqa: E402

import kamim_fast  # noqa: E402,F401  (the op registry)
from kamim_fast import _backend  # noqa: E402


def interpreter_rounds_bf16_like_the_gpu() -> None:
    """Triton's interpreter casts float32 to bfloat16 by truncation (its ``_convert_float`` without a rounding
    mode; its "rtne" mode loses the carry into the exponent), where the compiled kernels round to nearest even
    (Triton's default float downcast, ``cvt.rn.bf16.f32``), as torch does. Through the interpreter a kernel's
    bfloat16 outputs would then sit up to an ulp below the GPU's, and a test could not tell a value rounded
    once from one rounded twice. This makes the interpreter's cast round as the GPU does (tested in
    tests/test_kernels_ran.py)."""
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.cast_impl, "rounds_bf16", False):
        return
    truncating = builder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            x = np.asarray(src.data, dtype=np.float32)
            bits = x.view(np.uint32)
            out = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
            out = np.where(np.isnan(x), (bits >> np.uint32(16)) | np.uint32(0x40), out).astype(np.uint16)
            return interpreter.TensorHandle(out.reshape(x.shape), dst_type.scalar)
        return truncating(self, src, dst_type)

    cast_impl.rounds_bf16 = True
    builder.cast_impl = cast_impl


if INTERPRETER:
    interpreter_rounds_bf16_like_the_gpu()

# The native CPU kernels are part of the build: CI must have them (tests/test_native_*.py say why not).
NATIVE = _backend.cpp_status("fast_corners", "cpu")[0]
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])

# The ops of the registry by family, read from it: the AMT ops run the extension on CUDA too, the KAMIM ops do not.
AMT_OPS = tuple(name for name, entry in _backend.TABLE.items() if "cuda" in getattr(entry.impls.get("cpp"), "devices", ()))
KAMIM_OPS = tuple(name for name in _backend.TABLE if name not in AMT_OPS)


def runnable(backend: str, device: str) -> bool:
    """Whether this machine runs ``backend``'s kernels on ``device`` tensors: Triton on CUDA, or on the CPU
    through the interpreter; the extension on the CPU when built, and on CUDA always (CI's extension must
    hold the CUDA kernels: tests/test_amt.py::test_installed_extension_holds_the_cuda_kernels)."""
    if backend == "triton":
        return INTERPRETER if device == "cpu" else not INTERPRETER
    if backend == "cpp":
        return NATIVE or device == "cuda"
    return True


def targets(ops: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (device, backend) pairs a test of ``ops`` runs on: per device the reference, and each kernel backend
    that one of the ops implements there (read from the implementation table) and this machine runs."""
    pairs = []
    for device in DEVICES:
        pairs.append((device, "torch"))
        for backend in ("cpp", "triton"):
            impls = [_backend.TABLE[op].impls.get(backend) for op in ops]
            if runnable(backend, device) and any(impl and device in impl.devices for impl in impls):
                pairs.append((device, backend))
    return pairs


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cuda: runs CUDA tensors where a GPU is present (benchmarks/gpu_session.sh "
                            "runs `pytest -m cuda`)")


def pytest_collection_modifyitems(config, items) -> None:
    """Marks ``cuda`` every test parametrised on the cuda device (an id part ``cuda``); tests that pick CUDA
    themselves when it is there carry the mark explicitly."""
    for item in items:
        params = item.nodeid.partition("[")[2]
        if "cuda" in re.split(r"[-\]]", params):
            item.add_marker(pytest.mark.cuda)


def pytest_generate_tests(metafunc) -> None:
    """Parametrizes the ``target`` fixture with :func:`targets` of the module's ``TARGET_OPS`` (default: the
    KAMIM ops), so that every module runs on the one list, cut to the backends its ops have."""
    if "target" in metafunc.fixturenames:
        pairs = targets(getattr(metafunc.module, "TARGET_OPS", KAMIM_OPS))
        metafunc.parametrize("target", pairs, indirect=True, ids=[f"{d}-{b}" for d, b in pairs])


@pytest.fixture
def target(request, monkeypatch) -> tuple[str, str]:
    """Runs the test once per (device, backend) of :func:`targets`; the backend is selected through
    KAMIM_FAST_BACKEND.

    Under a kernel backend the ops that have that backend cannot reach their PyTorch reference: a test
    labelled triton or cpp proves the kernel ran (see :func:`forbid_reference`).
    """
    device, backend = request.param
    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    if backend != "torch":
        forbid_reference(monkeypatch, device, backend)
    return device, backend


def forbid_reference(monkeypatch, device: str, backend: str) -> None:
    """Replaces, in the implementation table, the torch implementation of every op that has ``backend`` on
    ``device`` by one that raises while ``KAMIM_FAST_BACKEND`` still asks for ``backend`` (a test may switch
    to ``torch`` itself to compute its expectation)."""
    for name, entry in list(_backend.TABLE.items()):
        impl = entry.impls.get(backend)
        if impl is None or device not in impl.devices:
            continue
        reference = entry.impls["torch"].kernel

        def guarded(*args, _name=name, _reference=reference):
            if _backend.requested_backend() == backend:
                raise AssertionError(f"a {backend} test reached the PyTorch reference of kamim_fast::{_name}")
            return _reference(*args)

        impls = {**entry.impls, "torch": dataclasses.replace(entry.impls["torch"], kernel=guarded)}
        monkeypatch.setitem(_backend.TABLE, name, dataclasses.replace(entry, impls=impls))


@contextlib.contextmanager
def reference_backend():
    """KAMIM_FAST_BACKEND=torch inside: for the CPU references a test compares a target with. Under the
    ("cuda", "triton") target a CPU tensor given to an op would raise (no interpreter on a GPU machine);
    tests/test_gpu_readiness.py checks that target tests call ops on CPU tensors only in here."""
    old = os.environ.get("KAMIM_FAST_BACKEND")
    os.environ["KAMIM_FAST_BACKEND"] = "torch"
    try:
        yield
    finally:
        if old is None:
            del os.environ["KAMIM_FAST_BACKEND"]
        else:
            os.environ["KAMIM_FAST_BACKEND"] = old


GPU_MACHINES_TRITON = Path(__file__).resolve().parents[1] / ".venv" / "triton-gpu"  # side-installed by the Makefile


def triton_env(which: str) -> dict:
    """The environment of a child process that compiles kernels (no interpreter) with the installed Triton
    (``which="installed"``) or the GPU machines' (``"gpu-machines"``); that one missing fails CI, skips elsewhere."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if which == "gpu-machines":
        if not GPU_MACHINES_TRITON.exists():
            if os.environ.get("CI"):
                pytest.fail(f"{GPU_MACHINES_TRITON} is missing in CI: `make test` installs it")
            pytest.skip(f"{GPU_MACHINES_TRITON} is missing (`make test` installs it)")
        env["PYTHONPATH"] = os.pathsep.join([str(GPU_MACHINES_TRITON), env.get("PYTHONPATH", "")])
    return env


def draw_seed() -> int:
    """A fresh seed, or KAMIM_FAST_TEST_SEED's to replay a failure."""
    return int(os.environ.get("KAMIM_FAST_TEST_SEED") or secrets.randbits(32))


@pytest.fixture(autouse=True)
def _seed(request) -> int:
    """Every test draws one seed, prints it (shown on failure) and seeds torch's and numpy's global
    generators with it, so ``torch.randn(...)`` without a generator replays too."""
    seed = draw_seed()
    print(f"KAMIM_FAST_TEST_SEED={seed}")
    torch.manual_seed(seed)
    np.random.seed(seed)
    return seed


@pytest.fixture
def rng(_seed) -> np.random.Generator:
    """Fresh random data on every run; the seed is printed on failure and KAMIM_FAST_TEST_SEED replays it."""
    return np.random.default_rng(_seed)


@pytest.fixture
def strict_from_numpy(monkeypatch) -> list[np.ndarray]:
    """``torch.from_numpy`` refuses read-only arrays while the test runs (and records every array it is given).
    PyTorch warns about a read-only array once per process (TORCH_WARN_ONCE), so a test that only watches for
    the warning misses it whenever an earlier test in the process fired it."""
    seen: list[np.ndarray] = []
    original = torch.from_numpy

    def from_numpy(a):
        if isinstance(a, np.ndarray) and not a.flags.writeable and a.size:
            raise AssertionError(f"torch.from_numpy of a read-only array {a.shape} {a.dtype}: PyTorch warns (once) "
                                 f"and writing to the tensor would be undefined; copy it first")
        seen.append(a)
        return original(a)

    monkeypatch.setattr(torch, "from_numpy", from_numpy)
    return seen


def assert_raises_naming(make, exc: type[Exception], words: list[str]) -> None:
    """``make()`` raises ``exc`` whose message holds every word (the argument, what was expected, what came)."""
    with pytest.raises(exc) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
