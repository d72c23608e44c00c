"""The torch.library ops: torch.compile without graph breaks, and backend selection (opcheck of every op:
tests/test_conformance.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_raises_naming
from images import crop, real_image

import kamim_fast
from kamim_fast import fast_corners, rgb_to_gray_u8


def _samples(rng):
    gray = torch.from_numpy(crop(real_image("camera"), 20, 30, rng))
    rgb = torch.from_numpy(crop(real_image("astronaut"), 20, 30, rng)).permute(2, 0, 1).unsqueeze(0)
    return gray.unsqueeze(0), rgb


def test_compile_fullgraph_matches_eager(target, rng):
    device, _ = target
    gray, rgb = _samples(rng)

    def pipeline(rgb_batch):
        g = rgb_to_gray_u8(rgb_batch)
        keypoints, scores = fast_corners(g, 10)
        open_kp, open_scores = fast_corners(g, 0, False)
        return g, keypoints, scores, open_kp, open_scores

    torch._dynamo.reset()
    compiled = torch.compile(pipeline, fullgraph=True, backend="aot_eager")
    rgb = rgb.clone()
    rgb[0, :, 8, 12], rgb[0, :, 12, 20] = 255, 0  # a white and a black dot: corners in any crop
    outputs = compiled(rgb.to(device))
    assert len(outputs) == 5
    for got, want in zip(outputs, pipeline(rgb.to(device))):  # map for map, bit for bit
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert outputs[1].any() and outputs[3].sum() >= outputs[1].sum()


def test_unknown_backend_is_named(monkeypatch):
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "cuda")
    with pytest.raises(ValueError, match="KAMIM_FAST_BACKEND.*'cuda'"):
        fast_corners(torch.zeros(9, 9, dtype=torch.uint8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine")
def test_forced_triton_without_interpreter_raises():
    """KAMIM_FAST_BACKEND=triton on CPU tensors without the interpreter raises; it never falls back."""
    code = (
        "import torch, kamim_fast\n"
        "try:\n"
        "    kamim_fast.fast_corners(torch.zeros(9, 9, dtype=torch.uint8))\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["KAMIM_FAST_BACKEND"] = "triton"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "RAISED" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stdout + out.stderr


def test_auto_uses_the_native_kernels_on_cpu(monkeypatch, rng):
    """auto: CPU tensors take the native kernels (the reference only without the extension), even when the
    interpreter is on."""
    from conftest import NATIVE

    from kamim_fast._backend import resolve

    monkeypatch.setenv("KAMIM_FAST_BACKEND", "auto")
    assert resolve("fast_corners", "cpu").backend == ("cpp" if NATIVE else "torch")
    gray = torch.from_numpy(crop(real_image("coins"), 30, 40, rng))
    for got, want in zip(fast_corners(gray), kamim_fast.fast_corners_ref(gray.unsqueeze(0))):
        assert torch.equal(got, want[0])


def test_public_names():
    for name in kamim_fast.__all__:
        assert getattr(kamim_fast, name) is not None


def test_every_implementation_names_a_bad_channel_order(target, rng):
    """Called directly (no public function's check in front), every implementation of the ops that take
    ``channel_order`` rejects a value other than "rgb" | "bgr" with a ValueError naming it, before any kernel."""
    device, _ = target
    rgb = torch.from_numpy(crop(real_image("astronaut"), 16, 16, rng)).permute(2, 0, 1).unsqueeze(0).to(device)
    target_f = rgb.float() / 255
    mask = torch.ones(1, 1, 1, device=device)
    ops = torch.ops.kamim_fast
    for call in (lambda: ops.rgb_to_gray_u8(rgb, "RGB", [], []),
                 lambda: ops.fast_corners(rgb, 10, True, "RGB", [], []),
                 lambda: ops.patch_weights(rgb, 8, 0.25, 10, "ring", "RGB", [], []),
                 lambda: ops.fast_weighted_mim_loss(target_f, target_f, mask, 16, 8, 0.25, 10, "ring", "RGB",
                                                    [0.0] * 3, [1.0] * 3, 1e-5)):
        assert_raises_naming(call, ValueError, ["channel_order", "RGB"])
