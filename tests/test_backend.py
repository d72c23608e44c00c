"""The op registry (kamim_fast/_backend.py, filled by kamim_fast/ops/): what resolve() picks for each KAMIM_FAST_BACKEND and
device, that every op is in it, that the README's backend table is the table's, and that the guard which
makes kernel tests prove their kernel ran does catch a reference."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import AMT_OPS, INTERPRETER, KAMIM_OPS, NATIVE, forbid_reference

import kamim_fast  # noqa: F401  (registers the ops)
from kamim_fast import _backend

ROOT = Path(__file__).resolve().parents[1]


def test_every_op_is_in_the_registry_and_registered():
    """Every kamim_fast:: op torch knows is in the registry (no op outside it), with its module, check and samples."""
    registered = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("kamim_fast::")}
    assert registered == set(_backend.TABLE)
    assert set(KAMIM_OPS) | set(AMT_OPS) == set(_backend.TABLE) and not set(KAMIM_OPS) & set(AMT_OPS)
    for name, entry in _backend.TABLE.items():
        assert entry.module.startswith("kamim_fast.ops.") and entry.samples is not None, name
        assert entry.schema.startswith(f"{name}("), entry.schema
        assert hasattr(torch.ops.kamim_fast, name), name
        assert "torch" in entry.impls and set(entry.impls) <= set(_backend.IMPLEMENTATIONS)
        for device in ("cpu", "cuda"):  # the per-device kernels look the table up
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"kamim_fast::{name}", device.upper()), name


def test_native_ops_share_the_public_schema():
    """kamim_fast_cpp::<op> takes exactly the arguments of kamim_fast::<op> (the table calls it with them)."""
    if not NATIVE:
        pytest.skip("the native kernels are not built")
    for name, entry in _backend.TABLE.items():
        if "cpp" not in entry.impls:
            continue
        public = getattr(torch.ops.kamim_fast, name).default._schema
        native = getattr(torch.ops.kamim_fast_cpp, name).default._schema
        assert [a.type for a in public.arguments] == [a.type for a in native.arguments], name
        assert [a.name for a in public.arguments] == [a.name for a in native.arguments], name
        assert len(public.returns) == len(native.returns), name


def test_an_argument_has_one_name_in_every_layer():
    """The public function, the op's schema (and so its C++ twin, above), the Triton launcher and its kernel's
    constexprs (upper case) call the mask's cells patch_size, the weights' cells weight_patch_size, the density
    density ("ring" | "count"), the gray's channel order channel_order ("rgb" | "bgr") and the suppression
    nonmax_suppression; keypoint_density's public function keeps its argument mode (public API)."""
    mim_loss = pytest.importorskip("kamim_fast.kernels.mim_loss")  # imported only: no kernel runs
    fast, gray = (pytest.importorskip(f"kamim_fast.kernels.{m}") for m in ("fast", "gray"))
    public = {"keypoint_density": kamim_fast.keypoint_density, "patch_weights": kamim_fast.patch_weights,
              "rgb_to_gray_u8": kamim_fast.rgb_to_gray_u8, "fast_corners": kamim_fast.fast_corners,
              "weighted_mim_loss": kamim_fast.weighted_mim_loss, "fast_weighted_mim_loss": kamim_fast.weighted_mim_loss}
    launchers = {"rgb_to_gray_u8": gray.rgb_to_gray_u8, "fast_corners": fast.fast_corners,
                 "weighted_mim_loss": mim_loss.weighted_mim_loss_forward,
                 "fast_weighted_mim_loss": mim_loss.fast_weighted_mim_loss_forward,
                 "weighted_mim_loss_backward": mim_loss.weighted_mim_loss_backward}
    kernels = {"rgb_to_gray_u8": gray._gray_kernel, "fast_corners": fast._fast_kernel,
               "weighted_mim_loss": mim_loss._l1_forward_kernel, "fast_weighted_mim_loss": mim_loss._fused_forward_kernel,
               "weighted_mim_loss_backward": mim_loss._backward_kernel}
    named = {"patch_size", "weight_patch_size", "density", "channel_order", "nonmax_suppression"}
    for name in KAMIM_OPS:
        schema = {a.name for a in getattr(torch.ops.kamim_fast, name).default._schema.arguments}
        assert not schema & {"mask_patch", "weight_patch", "cell", "ring", "bgr", "nms"}, (name, schema)
        if name in public:
            shared = schema & ({"patch_size", "weight_patch_size"} if name == "keypoint_density" else
                               {"patch_size", "weight_patch_size", "density", "channel_order", "nonmax_suppression"})
            if name == "fast_corners":  # the public function takes gray; the op's colour input serves patch_weights
                shared -= {"channel_order"}
            assert shared <= set(inspect.signature(public[name]).parameters), name
        if name in launchers:  # the launcher's own extras: the scale and shape of the backward, FAST's source
            # kind (gray or colour, from the tensor), the config
            extras = {"scale", "shape", "src_kind", "config"}
            assert set(inspect.signature(launchers[name]).parameters) - extras <= schema, name
        if name in kernels:
            params = inspect.signature(kernels[name].fn).parameters.values()  # JITFunction or the interpreter's
            constexprs = {p.name for p in params if "constexpr" in str(p.annotation)}
            assert {a.upper() for a in schema & named} <= constexprs, (name, constexprs)
            assert not constexprs & {"MASK_PATCH", "WEIGHT_PATCH", "CELL", "RING", "BGR", "NMS"}, (name, constexprs)
    assert torch.ops.kamim_fast.keypoint_density.default._schema.arguments[2].name == "density"


@pytest.mark.parametrize("requested, device, want", [
    ("torch", "cpu", "torch"), ("torch", "cuda", "torch"), ("auto", "meta", "torch"),
    ("triton", "cpu", "triton"),  # through the interpreter (tests)
])
def test_resolve_kamim(monkeypatch, requested, device, want):
    monkeypatch.setenv(_backend.ENV_VAR, requested)
    if want == "triton" and not INTERPRETER:
        pytest.skip("needs the interpreter")
    for name in KAMIM_OPS:
        if want in _backend.TABLE[name].impls:
            assert _backend.resolve(name, device).backend == want, name


def test_resolve_auto_per_device(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "auto")
    for name in KAMIM_OPS:
        assert _backend.resolve(name, "cpu").backend == ("cpp" if NATIVE else "torch"), name
    for name in AMT_OPS:
        assert _backend.resolve(name, "cpu").backend == "cpp", name
    assert _backend.TABLE["fast_corners"].auto["cuda"] == "triton"
    assert _backend.TABLE["gather_patches"].auto["cuda"] == "cpp"


def test_forced_backend_the_op_lacks_runs_its_default(monkeypatch):
    """triton on an AMT op (no Triton kernel) runs the op's auto choice, the extension."""
    monkeypatch.setenv(_backend.ENV_VAR, "triton")
    assert _backend.resolve("gather_patches", "cpu").backend == "cpp"
    x = torch.randn(2, 5, 3)
    assert torch.equal(kamim_fast.gather_patches(x, torch.tensor([[4, 0], [1, 1]])), x[[[0, 0], [1, 1]], [[4, 0], [1, 1]]])


def test_forced_backend_that_cannot_run_raises(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "cpp")
    with pytest.raises(RuntimeError, match="KAMIM_FAST_BACKEND=cpp: kamim_fast::fast_corners's cpp implementation runs on cpu"):
        _backend.resolve("fast_corners", "cuda")
    monkeypatch.setattr(_backend, "cpp_status", lambda name, device: (False, "no extension here"))
    with pytest.raises(RuntimeError, match="KAMIM_FAST_BACKEND=cpp cannot run kamim_fast::gather_patches on cpu tensors: "
                                           "no extension here; set KAMIM_FAST_BACKEND=torch"):
        kamim_fast.gather_patches(torch.randn(1, 3, 2), torch.tensor([[0]]))


@pytest.mark.parametrize("why", ["no-interpreter", "interpreter-on-cuda", "no-extension", "other-device"])
def test_every_forced_backend_either_runs_itself_or_raises(monkeypatch, why):
    """For every op of the registry and every backend it implements: KAMIM_FAST_BACKEND=<backend> resolves to that
    very implementation where it can run, and raises RuntimeError naming the variable, the op and the device
    where it cannot (Triton on CPU tensors without the interpreter or on CUDA tensors with it, the extension
    missing, a device the implementation does not run on); it never runs another implementation instead."""
    if why == "no-interpreter":
        monkeypatch.setattr(_backend, "interpreter_active", lambda: False)
    elif why == "interpreter-on-cuda":
        monkeypatch.setattr(_backend, "interpreter_active", lambda: True)
    elif why == "no-extension":
        monkeypatch.setattr(_backend, "cpp_status", lambda name, device: (False, "no extension here"))
    else:
        monkeypatch.setattr(_backend, "cpp_status", lambda name, device: (True, ""))
        monkeypatch.setattr(_backend, "triton_available", lambda device: (True, ""))
    blocked = {"no-interpreter": {("triton", "cpu")}, "interpreter-on-cuda": {("triton", "cuda")},
               "no-extension": {("cpp", "cpu"), ("cpp", "cuda")}, "other-device": set()}[why]
    raised = set()
    for name, entry in _backend.TABLE.items():
        for backend, impl in entry.impls.items():
            monkeypatch.setenv(_backend.ENV_VAR, backend)
            for device in ("cpu", "cuda"):
                must_raise = (backend, device) in blocked or device not in impl.devices
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error")  # nor a fallback announced instead
                        got = _backend.resolve(name, device)
                except RuntimeError as exc:
                    assert f"{_backend.ENV_VAR}={backend}" in str(exc) and f"kamim_fast::{name}" in str(exc) \
                        and device in str(exc), str(exc)
                    raised.add((name, backend, device))
                else:
                    assert not must_raise, f"{backend} on {device} resolved kamim_fast::{name} to {got.backend}"
                    assert got is impl, (name, backend, device, got.backend)
                assert (name, backend, device) in raised or not must_raise, (name, backend, device)
    assert {(b, d) for _, b, d in raised} >= blocked, (why, raised)


def test_auto_without_the_extension_warns_once_and_runs_the_reference(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "auto")
    monkeypatch.setattr(_backend, "cpp_status", lambda name, device: (False, "no compiler"))
    monkeypatch.setattr(_backend, "_warned", False)
    with pytest.warns(RuntimeWarning, match="PyTorch references, not the native kernels: no compiler"):
        assert _backend.resolve("fast_corners", "cpu").backend == "torch"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _backend.resolve("patch_weights", "cpu").backend == "torch"


def test_the_fallback_warning_stays_silent_when_nothing_falls_back(monkeypatch):
    """The silent side of the fallback warning: auto with the extension loaded; a forced torch backend (the user
    asked for the reference), with or without the extension; a forced kernel backend that cannot run (it
    raises instead); other devices (meta); and, once it has warned, every later call."""
    monkeypatch.setattr(_backend, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in _backend.TABLE:
            monkeypatch.setenv(_backend.ENV_VAR, "auto")
            if NATIVE:
                assert _backend.resolve(name, "cpu").backend == _backend.TABLE[name].auto["cpu"], name
            assert _backend.resolve(name, "meta").backend == "torch", name
            monkeypatch.setenv(_backend.ENV_VAR, "torch")
            assert _backend.resolve(name, "cpu").backend == "torch", name
        monkeypatch.setattr(_backend, "cpp_status", lambda name, device: (False, "no compiler"))
        for name in _backend.TABLE:
            monkeypatch.setenv(_backend.ENV_VAR, "torch")
            assert _backend.resolve(name, "cpu").backend == "torch", name
            if "cpp" in _backend.TABLE[name].impls:
                monkeypatch.setenv(_backend.ENV_VAR, "cpp")
                with pytest.raises(RuntimeError, match="cannot run"):
                    _backend.resolve(name, "cpu")
    assert not _backend._warned
    monkeypatch.setenv(_backend.ENV_VAR, "auto")
    with pytest.warns(RuntimeWarning, match="PyTorch references"):
        _backend.resolve("gather_patches", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in _backend.TABLE:
            assert _backend.resolve(name, "cpu").backend == "torch", name


def test_the_reference_guard_catches_a_fallback(monkeypatch):
    """forbid_reference (the target fixture's guard) raises when a kernel backend's call reaches the reference."""
    monkeypatch.setenv(_backend.ENV_VAR, "auto")
    forbid_reference(monkeypatch, "cpu", "auto")  # no op has an "auto" implementation: nothing guarded
    monkeypatch.setenv(_backend.ENV_VAR, "cpp")
    forbid_reference(monkeypatch, "cpu", "cpp")
    entry = _backend.TABLE["fast_corners"]
    monkeypatch.setitem(entry.impls, "cpp", entry.impls["torch"])  # a cpp row that quietly runs the reference
    monkeypatch.setattr(_backend, "cpp_status", lambda name, device: (True, ""))
    with pytest.raises(AssertionError, match="a cpp test reached the PyTorch reference of kamim_fast::fast_corners"):
        kamim_fast.fast_corners(torch.zeros(9, 9, dtype=torch.uint8))


def test_readme_backend_table_is_the_table():
    readme = (ROOT / "README.md").read_text()
    table = _backend.backend_table_markdown()
    assert table in readme, "README's backend table differs from _backend.backend_table_markdown():\n" + table


def test_unknown_backend_is_named(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match=re.escape("KAMIM_FAST_BACKEND must be one of ('auto', 'triton', 'cpp', 'torch'), got 'gpu'")):
        _backend.resolve("fast_corners", "cpu")


def test_interpreter_problem_names_the_versions():
    problem = _backend.interpreter_problem("3.6.0", "2.4.6")
    assert "Triton 3.6.0" in problem and "NumPy 2.4.6" in problem and "NumPy < 2.4 or Triton >= 3.8" in problem
    for triton_version, numpy_version in [("3.8.0", "2.4.6"), ("3.6.0", "2.3.5"), ("3.9.0+git1234", "2.5.0rc1")]:
        assert _backend.interpreter_problem(triton_version, numpy_version) is None


_PERSISTENT_LOOP = """
import json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import numpy, torch, triton, triton.language as tl

@triton.jit
def loop(out_ptr, n):
    for t in range(tl.program_id(0), n, tl.num_programs(0)):  # the persistent kernels' loop over tiles
        tl.store(out_ptr + t, t)

out = torch.zeros(10, dtype=torch.int32)
try:
    loop[(4,)](out, 10)
    ran = out.tolist() == list(range(10))
except Exception:
    ran = False
print(json.dumps({"triton": triton.__version__, "numpy": numpy.__version__, "ran": ran}))
"""


@pytest.mark.parametrize("which", ["installed", "gpu-machines"])
def test_interpreter_problem_is_what_the_interpreter_does(which):
    """The verdict of interpreter_problem against Triton's interpreter itself, the installed Triton and the GPU
    machines' (side-installed by the Makefile): the loop fails exactly when a problem is named."""
    import json
    import os
    import subprocess
    import sys

    from conftest import GPU_MACHINES_TRITON

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if which == "gpu-machines":
        if not GPU_MACHINES_TRITON.is_dir():
            pytest.skip(f"no side-installed Triton at {GPU_MACHINES_TRITON}")
        env["PYTHONPATH"] = str(GPU_MACHINES_TRITON)
    out = subprocess.run([sys.executable, "-c", _PERSISTENT_LOOP], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    problem = _backend.interpreter_problem(seen["triton"], seen["numpy"])
    assert seen["ran"] == (problem is None), (seen, problem)
