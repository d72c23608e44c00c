"""sample_inputs(op, device, rng): small argument tuples for every op of the implementation table, after
pytorch/extension-cpp's pattern. The conformance suite (test_conformance.py) runs each implementation the
table lists on them; a new op or backend gets that coverage by adding its samples here.

Inputs are real photo crops (scikit-image) and adversarial patterns, small enough for Triton's interpreter.
"""

from __future__ import annotations

import numpy as np
import torch
from images import COLOUR_NAMES, crop, real_image, synthetic

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's, per channel
IDENTITY = ([0.0] * 3, [1.0] * 3)
HALF_QUARTER = ([0.5] * 3, [0.25] * 3)  # statistics other than ImageNet's


def _photo(rng, B, H, W) -> torch.Tensor:
    """(B, 3, H, W) uint8 crops of the bundled colour photographs."""
    names = rng.choice(COLOUR_NAMES, B)
    return torch.from_numpy(np.stack([crop(real_image(n), H, W, rng) for n in names])).permute(0, 3, 1, 2).contiguous()


def _normalised(u8: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (u8.float() / 255 - m) / s


def _gray(rng, B, H, W) -> torch.Tensor:
    kinds = ("noise", "plateaus", "dots")
    return torch.from_numpy(np.stack([synthetic(kinds[b % 3], H, W, rng) for b in range(B)]))


def _loss_tensors(rng, B=2, H=16, W=24, p=8, weight_p=None, dtype=torch.float32):
    """pred (dtype) and target (float32), (B, 3, H, W); a 0/1 mask grid of p-pixel cells; weights of
    weight_p-pixel cells (default p)."""
    weight_p = weight_p or p
    target = _normalised(_photo(rng, B, H, W))
    pred = (target + torch.from_numpy(rng.standard_normal(target.shape)).float() * 0.5).to(dtype)
    grid = torch.from_numpy(rng.integers(0, 2, (B, H // p, W // p))).float()
    weights = torch.from_numpy(rng.uniform(1, 3, (B, H // weight_p, W // weight_p))).float()
    return pred, target, grid, weights


def _sign_codes(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The forward's 2-bit codes of sign(pred - target), four per byte along W."""
    d = pred.float() - target.float()
    code = ((d > 0).to(torch.uint8) + 2 * (d < 0).to(torch.uint8)).unflatten(-1, (-1, 4))
    return (code << torch.tensor([0, 2, 4, 6], dtype=torch.uint8)).sum(-1, dtype=torch.uint8)


def sample_inputs(name: str, device: str, rng: np.random.Generator) -> list[tuple]:
    """Argument tuples for ``torch.ops.kamim_fast.<name>`` on ``device``."""
    to = lambda *ts: [t.to(device) if isinstance(t, torch.Tensor) else t for t in ts]  # noqa: E731
    if name == "rgb_to_gray_u8":
        u8 = _photo(rng, 2, 9, 13)
        return [(*to(u8), False, *IDENTITY), (*to(_normalised(u8)), True, MEAN, STD),
                (*to(u8.contiguous(memory_format=torch.channels_last)), True, *IDENTITY)]
    if name == "fast_corners":
        return [(*to(_gray(rng, 3, 17, 21)), 10, True, False, [], []),
                (*to(_gray(rng, 2, 12, 9)), int(rng.integers(0, 40)), False, False, [], []),
                (*to(_normalised(_photo(rng, 2, 16, 20))), 10, True, True, MEAN, STD),
                (*to(_photo(rng, 1, 7, 7)), 0, True, False, *IDENTITY),
                (*to(_photo(rng, 1, 20, 30)), 0, False, True, [], []),  # colour uint8 without statistics
                (*to(_normalised(_photo(rng, 1, 20, 30), *HALF_QUARTER)), 10, True, False, *HALF_QUARTER)]
    if name == "keypoint_density":
        kp = torch.from_numpy(rng.random((2, 16, 24)) < 0.05)
        return [(*to(kp), 8, "ring"), (*to(kp), 4, "count"), (*to(kp[:, :8, :8]), 8, "ring")]
    if name == "patch_weights":
        return [(*to(_normalised(_photo(rng, 2, 16, 24))), 8, 0.25, 10, "ring", True, MEAN, STD),
                (*to(_photo(rng, 1, 16, 16)), 4, 0.03, 5, "count", False, *IDENTITY)]
    if name == "weighted_mim_loss":
        pred, target, grid, weights = _loss_tensors(rng)
        bf16, t2, g2, _ = _loss_tensors(rng, dtype=torch.bfloat16)
        p48, t48, g48, w48 = _loss_tensors(rng, H=48, W=48, p=16, weight_p=8)  # mask and weight cells differ
        return [(*to(pred, target, grid, weights), 8, 8, 1e-5), (*to(pred, target, grid), None, 8, 1, 1e-5),
                (*to(bf16, t2, g2), None, 8, 1, 1e-5), (*to(p48, t48, g48, w48), 16, 8, 1e-5)]
    if name == "fast_weighted_mim_loss":
        pred, target, grid, _ = _loss_tensors(rng)
        p48, t48, g48, _ = _loss_tensors(rng, H=48, W=48, p=16)
        return [(*to(pred, target, grid), 8, 8, 0.25, 10, "ring", False, MEAN, STD, 1e-5),
                (*to(pred, target, grid), 8, 4, 0.5, 20, "count", True, MEAN, STD, 1e-5),
                # weight cells of 8 with bgr, 16 by count, 12 (the Triton path that does not fuse FAST)
                (*to(p48, t48, g48), 16, 8, 0.25, 10, "ring", True, MEAN, STD, 1e-5),
                (*to(p48, t48, g48), 16, 16, 0.25, 10, "count", False, MEAN, STD, 1e-5),
                (*to(p48, t48, g48), 16, 12, 0.25, 10, "ring", False, MEAN, STD, 1e-5)]
    if name == "weighted_mim_loss_backward":
        pred, target, grid, weights = _loss_tensors(rng)
        signs, grad = _sign_codes(pred, target), torch.tensor(0.75)
        p48, t48, g48, w48 = _loss_tensors(rng, H=48, W=48, p=16, weight_p=8)
        s48 = _sign_codes(p48, t48)
        return [(*to(grad, signs, grid, weights), 8, 8, 1e-5, 24, torch.float32, torch.float32, True),
                (*to(grad, signs, grid), None, 8, 1, 1e-5, 24, torch.bfloat16, torch.float32, False),
                # mask and weight cells differ, bf16 pred, with and without the target's gradient
                (*to(torch.tensor(1.5), s48, g48, w48), 16, 8, 1e-5, 48, torch.bfloat16, torch.float32, True),
                (*to(torch.tensor(1.5), s48, g48, w48), 16, 8, 1e-5, 48, torch.bfloat16, torch.float32, False)]
    B, N, D = 2, 10, 4
    noise = torch.from_numpy(rng.random((B, N))).float() + 0.01
    weights = torch.from_numpy(rng.uniform(0.1, 1, (B, N))).float()
    x = torch.from_numpy(rng.standard_normal((B, N, D))).float()
    ids = torch.stack([torch.from_numpy(rng.permutation(N)[:6]) for _ in range(B)])
    ids_restore = torch.stack([torch.from_numpy(rng.permutation(N)) for _ in range(B)])
    if name == "amt_masking":
        return [(*to(noise, weights), 4, 3, False), (*to(noise), None, 6, 0, True),
                (*to(noise.double()), None, 6, 0, True)]
    if name == "random_masking":
        return [(*to(x, noise), None, 5, 0, True), (*to(x, noise, weights), 3, 2, False)]
    if name == "gather_patches":
        return [tuple(to(x, ids)), tuple(to(x.bfloat16(), ids[:, :2]))]
    if name == "gather_patches_backward":
        return [(*to(x[:, :6], ids), N)]
    if name == "unshuffle_with_mask_token":
        token = torch.from_numpy(rng.standard_normal(D)).float()
        return [(*to(x[:, :5], token, ids_restore), 5, 0, True, False),
                (*to(x[:, :3], token, ids_restore), 4, 3, False, False),
                (*to(x[:, :3], token, ids_restore), 4, 3, False, True)]
    if name == "unshuffle_with_mask_token_backward":
        return [(*to(x, ids_restore), 5, 5, 0, True, False), (*to(x[:, :7], ids_restore), 3, 4, 3, False, False)]
    raise KeyError(f"no sample inputs for {name}: add them to tests/samples.py")
