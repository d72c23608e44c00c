"""What a GPU user would hit first, checked without a GPU (issue 12): the launch device, grids sized from
the SM's limits, batches past grid y's cap, int64 channel offsets, and tests that hold on a GPU machine."""

from __future__ import annotations

import ast
import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CUDA, INTERPRETER

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if CUDA else "cpu"
needs_kernels = pytest.mark.skipif(not (CUDA or INTERPRETER), reason="needs a GPU or Triton's interpreter")
pytestmark = pytest.mark.cuda  # the launch path and its limits: what a GPU machine must run


# --- launches under the tensors' device -------------------------------------------------------------

class _FakeCudaTensor:
    device = torch.device("cuda", 1)


def test_on_device_enters_the_tensors_cuda_device(monkeypatch):
    from kamim_fast.kernels import _launch

    entered = []

    @contextlib.contextmanager
    def fake_device(device):
        entered.append(device)
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    with _launch.on_device(_FakeCudaTensor()):
        assert entered == [torch.device("cuda", 1)]
    with _launch.on_device(torch.zeros(1)):  # CPU tensors: nothing to switch
        pass
    assert entered == [torch.device("cuda", 1)]


def test_launch_runs_the_kernel_inside_on_device(monkeypatch):
    """_launch.launch calls the kernel while the tensor's device is current, with keyword arguments only."""
    from kamim_fast.kernels import _launch

    events = []

    @contextlib.contextmanager
    def fake_device(device):
        events.append(("enter", device))
        yield
        events.append(("exit", device))

    class Kernel:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                assert not args
                events.append(("run", grid, sorted(kwargs)))
            return run

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    _launch.launch(Kernel(), (7,), _FakeCudaTensor(), 4, {"x_ptr": 1})
    dev = torch.device("cuda", 1)
    assert events == [("enter", dev), ("run", (7,), ["enable_fp_fusion", "num_warps", "x_ptr"]), ("exit", dev)]


def _launch_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of the form ``something[grid](...)``: a Triton launch."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Subscript)]


def test_every_launcher_goes_through_the_launch_helper():
    """No kernel module launches a kernel itself: every ``kernel[grid](...)`` is in kamim_fast/kernels/_launch.py,
    and each kernel module calls _launch.launch."""
    for path in sorted((ROOT / "kamim_fast" / "kernels").glob("*.py")):
        tree = ast.parse(path.read_text())
        if path.name == "_launch.py":
            assert len(_launch_calls(tree)) == 1
            continue
        assert not _launch_calls(tree), f"{path.name} launches a kernel outside kamim_fast/kernels/_launch.py"
        jitted = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.endswith("_kernel")]
        if jitted:
            called = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
            assert "launch" in called, f"{path.name} has kernels {jitted} but never calls launch"


@needs_kernels
def test_launchers_launch_on_the_tensors_device(monkeypatch, rng):
    """Each launcher enters on_device with its tensors (every kernel of gray, fast and mim_loss)."""
    from kamim_fast.kernels import _launch, fast, fast_tile, gray, mim_loss

    seen = []
    real = _launch.on_device

    @contextlib.contextmanager
    def recording(tensor):
        seen.append(tensor.device)
        with real(tensor):
            yield

    monkeypatch.setattr(_launch, "on_device", recording)
    rgb = torch.from_numpy(rng.integers(0, 256, (2, 3, 20, 24), dtype=np.uint8)).to(DEVICE)
    gray.rgb_to_gray_u8(rgb, "rgb")
    fast.fast_corners(rgb, 10, True, fast_tile.SRC_RGB_U8)
    pred = torch.randn(2, 3, 16, 16, device=DEVICE)
    target = torch.randn(2, 3, 16, 16, device=DEVICE)
    grid = torch.ones(2, 2, 2, device=DEVICE)
    _, signs = mim_loss.weighted_mim_loss_forward(pred, target, grid, None, 8, 1)
    mim_loss.fast_weighted_mim_loss_forward(pred, target, grid, 8, 8, "ring", 10, "rgb", (0.0,) * 3, (1.0,) * 3)
    mim_loss.weighted_mim_loss_backward(torch.tensor(1.0, device=DEVICE), signs, grid, None, 8, 1, pred.shape,
                                  torch.float32, torch.float32, True)
    expected = torch.device(DEVICE, 0) if DEVICE == "cuda" else torch.device("cpu")
    assert len(seen) >= 5 and all(d == expected for d in seen), seen


# --- grids from the compiled kernel ------------------------------------------------------------------

def test_resident_blocks_on_h100_a100_l4():
    """The occupancy calculator's numbers for 4-warp blocks on H100 SXM (sm_90), A100 (sm_80), L4 (sm_89)."""
    from kamim_fast.kernels._launch import A100, H100_SXM, L4, resident_blocks

    # registers: ceil(regs * 32 / 256) * 256 per warp; warps per SM floored to a multiple of 4
    assert resident_blocks(80, 2048, 4, H100_SXM) == 6  # 2560 per warp: 25 -> 24 warps
    assert resident_blocks(157, 512, 4, H100_SXM) == 3  # 5120 per warp: 12 warps
    assert resident_blocks(96, 0, 4, A100) == 5  # 3072: 21 -> 20 warps
    assert resident_blocks(255, 0, 4, A100) == 2  # 8192: 8 warps
    assert resident_blocks(32, 0, 4, H100_SXM) == 16  # threads: 2048 / 128
    assert resident_blocks(32, 0, 4, L4) == 12  # 1536 threads per SM on sm_89
    assert resident_blocks(16, 0, 1, L4) == 24  # L4's 24 blocks per SM
    assert resident_blocks(16, 0, 1, H100_SXM) == 32
    # shared memory: 1 KB reserved per block
    assert resident_blocks(32, 48 * 1024, 4, H100_SXM) == 4  # 228 KB / 49 KB
    assert resident_blocks(32, 48 * 1024, 4, A100) == 3  # 164 KB / 49 KB
    assert resident_blocks(32, 48 * 1024, 4, L4) == 2  # 100 KB / 49 KB
    assert resident_blocks(32, 200 * 1024, 4, L4) == 0  # does not fit


class _MockKernel:
    """A ``@triton.jit`` kernel as the CUDA launch path sees it: parameters (one constexpr, one pointer, one int)
    and ``warmup``, which returns a compiled kernel of 157 registers and 512 bytes of shared memory."""

    arg_names = ("BLOCK", "x_ptr", "n")
    params = tuple(type("P", (), {"is_constexpr": c})() for c in (True, False, False))

    def __init__(self):
        self.warmups = []

    def warmup(self, grid, num_warps, enable_fp_fusion, maxnreg=None, **args):
        assert grid == (1,) and num_warps == 4 and not enable_fp_fusion and set(args) == set(self.arg_names)
        self.warmups.append(args)

        class Compiled:
            n_regs = 157
            metadata = type("M", (), {"shared": 512})()

            def _init_handles(self):
                pass

        return Compiled()


class _H100Props:
    multi_processor_count, regs_per_multiprocessor, max_threads_per_multi_processor = 132, 65536, 2048
    shared_memory_per_multiprocessor, major, minor = 233472, 9, 0


class _FakeCudaBuffer(_FakeCudaTensor):
    """A CUDA tensor argument: dtype and address are all the specialisation reads."""

    def __init__(self, address: int, dtype=torch.float32):
        self.address, self.dtype = address, dtype

    def data_ptr(self):
        return self.address


def test_persistent_grid_is_sized_from_the_compiled_kernel_once_per_specialisation(monkeypatch):
    """On CUDA: SMs x resident blocks of the compiled kernel (its n_regs and shared memory). Triton's warmup
    (its whole binder) runs once per kernel, device and specialisation, not at every launch."""
    from kamim_fast.kernels import _launch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: _H100Props())
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(_launch, "_PROGRAMS", {})
    kernel, like = _MockKernel(), _FakeCudaTensor()
    args = {"BLOCK": 64, "x_ptr": _FakeCudaBuffer(4096), "n": 1000}
    assert _launch.persistent_programs(kernel, like, 10**6, 4, args) == 132 * 3
    assert _launch.persistent_programs(kernel, like, 100, 4, {**args, "x_ptr": _FakeCudaBuffer(8192), "n": 7}) == 100
    assert len(kernel.warmups) == 1  # same specialisation: cached
    for change in ({"BLOCK": 128}, {"x_ptr": _FakeCudaBuffer(4100)}, {"x_ptr": _FakeCudaBuffer(4096, torch.bfloat16)},
                   {"n": 1}, {"n": 1024}, {"n": 2**31 + 3}):
        _launch.persistent_programs(kernel, like, 10**6, 4, {**args, **change})
    assert len(kernel.warmups) == 7, "each change of specialisation compiles (and sizes) its own kernel"
    _launch.persistent_programs(kernel, like, 10**6, 4, args, maxnreg=128)
    assert len(kernel.warmups) == 8
    assert _launch.persistent_programs(kernel, torch.zeros(1), 10**6, 4, args) == _launch.INTERPRETER_PROGRAMS


# --- limits: batches past 65,535 and int64 offsets ---------------------------------------------------

def test_batch_is_folded_into_grid_x(monkeypatch):
    """B = 70,000 images: the batch is on grid x (no 65,535 cap): the gray grid is one-dimensional, the
    backward's is (B, tiles down, tiles across)."""
    from kamim_fast.kernels import _launch, gray, mim_loss

    grids = []
    for module in (gray, mim_loss):
        monkeypatch.setattr(module, "launch", lambda kernel, grid, like, num_warps, args, *maxnreg: grids.append(grid))
    B = 70_000
    gray.rgb_to_gray_u8(torch.empty(B, 3, 2, 2, dtype=torch.uint8, device="meta"), "rgb")
    signs = torch.empty(B, 3, 2, 1, dtype=torch.uint8, device="meta")
    grid = torch.empty(B, 1, 1, device="meta")
    mim_loss.weighted_mim_loss_backward(torch.empty((), device="meta"), signs, grid, None, 2, 1, (B, 3, 2, 2),
                                  torch.float32, torch.float32, False)
    assert grids == [(B,), (B, 1, 1)], grids
    assert _launch  # the real launcher is untouched


@needs_kernels
def test_many_tiny_images_through_the_folded_grids(monkeypatch, rng):
    """Many 3x5 images: gray and the loss backward index the batch from grid x correctly."""
    from kamim_fast import gray as gray_ref
    from kamim_fast import weighted_mim_loss

    monkeypatch.setenv("KAMIM_FAST_BACKEND", "triton")
    B = 48
    rgb = torch.from_numpy(rng.integers(0, 256, (B, 3, 3, 5), dtype=np.uint8)).to(DEVICE)
    got = gray_ref.rgb_to_gray_u8(rgb)
    assert torch.equal(got.cpu(), gray_ref.rgb_to_gray_u8_ref(rgb.cpu(), False, (0.0,) * 3, (1.0,) * 3))
    pred = torch.from_numpy(rng.normal(0, 1, (B, 3, 4, 4))).float()
    tgt = torch.from_numpy(rng.normal(0, 1, (B, 3, 4, 4))).float()
    mask = torch.from_numpy(rng.random((B, 1, 1)) < 0.7)
    p1 = pred.clone().to(DEVICE).requires_grad_()
    weighted_mim_loss(p1, tgt.to(DEVICE), mask.to(DEVICE), patch_size=4).backward()
    p2 = pred.clone().double().requires_grad_()
    weighted_mim_loss(p2, tgt.double(), mask, patch_size=4).backward()
    torch.testing.assert_close(p1.grad.cpu(), p2.grad.float(), rtol=1e-6, atol=0)


@needs_kernels
def test_channel_strides_past_two_to_the_30(monkeypatch, rng):
    """A channel stride of 2^30 + 64 bytes: 2 * stride overflows int32, so channel offsets step pointers. On the
    CPU (the interpreter) only the touched pages of the 2 GB storage are ever backed; a GPU allocates it."""
    from kamim_fast import fast_corners, rgb_to_gray_u8

    monkeypatch.setenv("KAMIM_FAST_BACKEND", "triton")
    stride = (1 << 30) + 64
    H, W = 20, 24
    rgb = torch.from_numpy(rng.integers(0, 256, (1, 3, H, W), dtype=np.uint8)).to(DEVICE)
    big = torch.empty(2 * stride + H * W, dtype=torch.uint8, device=DEVICE)
    far = big.as_strided((1, 3, H, W), (3 * stride, stride, W, 1))
    far.copy_(rgb)
    assert torch.equal(rgb_to_gray_u8(far), rgb_to_gray_u8(rgb))
    for got, want in zip(fast_corners(rgb_to_gray_u8(far)), fast_corners(rgb_to_gray_u8(rgb))):
        assert torch.equal(got, want)


# --- tests that hold on a GPU machine ----------------------------------------------------------------

def _public_functions() -> set[str]:
    """The public functions that call ops: kamim_fast's and its integrations' (their names, as a test calls them)."""
    import inspect

    import kamim_fast
    from kamim_fast.integrations import hf

    found = {name for name in kamim_fast.__all__ if inspect.isfunction(getattr(kamim_fast, name))}
    found |= {name for name, obj in vars(hf).items() if inspect.isfunction(obj) and obj.__module__ == hf.__name__}
    return {name for name in found if not name.startswith("_") and not name.endswith("_ref")}


PUBLIC_OPS = _public_functions()


def _device_names(fn: ast.FunctionDef) -> set[str]:
    """Names bound, directly or through other such names, from expressions that mention ``device``."""
    names, changed = {"device"}, True
    while changed:
        changed = False
        for node in ast.walk(fn):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                sources, targets = node.value, node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, (ast.For, ast.comprehension)):
                sources, targets = node.iter, [node.target]
            else:
                continue
            if {n.id for n in ast.walk(sources) if isinstance(n, ast.Name)} & names:
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name) and n.id not in names:
                            names.add(n.id)
                            changed = True
    return names


def cpu_op_calls_in_target_tests(source: str) -> list[str]:
    """Calls of a public op in a test that takes the ``target`` fixture, none of whose arguments comes
    from the target's device, outside ``with reference_backend():``. Under ("cuda", "triton") such a
    call gets CPU tensors with KAMIM_FAST_BACKEND=triton and no interpreter: it raises on a GPU machine."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")
                and "target" in [a.arg for a in fn.args.args]):
            continue
        on_device = _device_names(fn)
        exempt = set()
        for node in ast.walk(fn):
            guarded = isinstance(node, ast.With) and any("reference_backend" in ast.unparse(i.context_expr)
                                                         for i in node.items)
            nested = isinstance(node, (ast.FunctionDef, ast.Lambda)) and node is not fn  # called with device tensors
            if guarded or nested:
                exempt |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call) or id(node) in exempt or not node.args:
                continue
            func = ast.unparse(node.func)
            if func.split(".")[-1] in PUBLIC_OPS or func.startswith(("torch.ops.kamim_fast", "ops.")):
                if not any({n.id for n in ast.walk(a) if isinstance(n, ast.Name)} & on_device
                           for a in [*node.args, *(k.value for k in node.keywords)]):
                    found.append(f"{fn.name}, line {node.lineno}: {ast.unparse(node)[:90]}")
    return found


def test_the_audit_finds_a_cpu_reference_under_the_forced_backend():
    bad = ("def test_x(target):\n    device, _ = target\n    x = make().to(device)\n"
           "    assert patch_weights(x).cpu() == patch_weights(make())\n")
    good = bad.replace("    assert", "    with reference_backend():\n        want = patch_weights(make())\n    assert") \
              .replace("== patch_weights(make())", "== want")
    assert [s.split(",")[0] for s in cpu_op_calls_in_target_tests(bad)] == ["test_x"]
    assert cpu_op_calls_in_target_tests(good) == []


def test_no_target_test_calls_an_op_on_cpu_tensors_under_the_forced_backend():
    """Every target test is valid on a GPU machine: its CPU references run under reference_backend()."""
    found = {p.name: cpu_op_calls_in_target_tests(p.read_text()) for p in sorted((ROOT / "tests").glob("test_*.py"))}
    found = {k: v for k, v in found.items() if v}
    assert not found, found


def test_interpreter_only_tests_are_marked():
    """Tests that call kamim_fast/kernels/ launchers on CPU tensors skip where the interpreter is off (a GPU machine)."""
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")):
            text = ast.unparse(fn)
            if "from kamim_fast.kernels import" not in text or path.name == Path(__file__).name:
                continue
            marks = " ".join(ast.unparse(d) for d in fn.decorator_list)
            assert "INTERPRETER" in marks or "CUDA" in text, f"{path.name}::{fn.name} needs a skip without the interpreter"


def test_env_is_restored_by_reference_backend(monkeypatch):
    from conftest import reference_backend

    monkeypatch.setenv("KAMIM_FAST_BACKEND", "triton")
    with reference_backend():
        assert os.environ["KAMIM_FAST_BACKEND"] == "torch"
    assert os.environ["KAMIM_FAST_BACKEND"] == "triton"
