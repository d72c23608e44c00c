"""Weighted masked L1 (SimMIM's loss with KAMIM's per-cell weights): forward partials and backward.

Forward: each program takes a ``TILE_H x TILE_W`` pixel tile of one image, reads pred and target once
for all channels, looks the mask and the weight up per pixel from their small (B, h, w) grids (no
full-size mask or weight map), and writes two fp32 partials: sum(w * m * |pred - target|) and sum(m).
The host reduces the (B x tiles) partials in a fixed order, so the loss is deterministic (no atomics).
Backward: ``grad = g / (sum(m) + eps) / C * w * m * sign(pred - target)``, written once, for pred
and, when asked, for target. The FAST stage of ``weights="fast"`` is not fused here yet (issue 3).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE_H = 16
TILE_W = 64
NUM_WARPS = 4


@triton.jit
def _cell_lookup(ptr, b, yy, xx, h, w, PATCH: tl.constexpr, mask):
    """Value of a (B, h, w) float32 grid at the cell holding pixel (yy, xx) of image b."""
    return tl.load(ptr + (b.to(tl.int64) * h + yy // PATCH) * w + xx // PATCH, mask=mask, other=0.0)


@triton.jit
def _tile(pred_ptr, target_ptr, mask_ptr, H, W, p_b, p_h, p_w, t_b, t_h, t_w, mh, mw, tiles_w,
          MASK_PATCH: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """This program's tile: (b, yy, xx, inside, channel-0 pointers of pred and target, mask m >= 0)."""
    tile = tl.program_id(0)
    b = tl.program_id(1)
    ty = tile // tiles_w
    yy = ty * TILE_H + tl.arange(0, TILE_H)[:, None]
    xx = (tile - ty * tiles_w) * TILE_W + tl.arange(0, TILE_W)[None, :]
    inside = (yy < H) & (xx < W)
    m = _cell_lookup(mask_ptr, b, yy, xx, mh, mw, MASK_PATCH, inside)
    m = tl.where(m > 0.0, m, 0.0)  # AMT's thrown patches (-1) count as 0
    pred = pred_ptr + b.to(tl.int64) * p_b + yy.to(tl.int64) * p_h + xx * p_w
    target = target_ptr + b.to(tl.int64) * t_b + yy.to(tl.int64) * t_h + xx * t_w
    return b, yy, xx, inside, pred, target, m


@triton.jit
def _forward_kernel(
    pred_ptr, target_ptr, mask_ptr, weight_ptr, num_ptr, den_ptr,
    C, H, W, p_b, p_c, p_h, p_w, t_b, t_c, t_h, t_w, mh, mw, wh, ww, tiles_w,
    MASK_PATCH: tl.constexpr, WEIGHT_PATCH: tl.constexpr, HAS_WEIGHTS: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    b, yy, xx, inside, pred, target, m = _tile(pred_ptr, target_ptr, mask_ptr, H, W, p_b, p_h, p_w, t_b, t_h, t_w,
                                               mh, mw, tiles_w, MASK_PATCH, TILE_H, TILE_W)
    l1 = tl.zeros((TILE_H, TILE_W), dtype=tl.float32)
    for c in range(C):
        p = tl.load(pred + c * p_c, mask=inside, other=0.0).to(tl.float32)
        t = tl.load(target + c * t_c, mask=inside, other=0.0).to(tl.float32)
        l1 += tl.abs(p - t)
    if HAS_WEIGHTS:
        l1 = l1 * _cell_lookup(weight_ptr, b, yy, xx, wh, ww, WEIGHT_PATCH, inside)
    out = b.to(tl.int64) * tl.num_programs(0) + tl.program_id(0)
    tl.store(num_ptr + out, tl.sum(tl.sum(l1 * m, axis=1), axis=0))
    tl.store(den_ptr + out, tl.sum(tl.sum(m, axis=1), axis=0))


@triton.jit
def _backward_kernel(
    scale_ptr, pred_ptr, target_ptr, mask_ptr, weight_ptr, grad_pred_ptr, grad_target_ptr,
    C, H, W, p_b, p_c, p_h, p_w, t_b, t_c, t_h, t_w, mh, mw, wh, ww, tiles_w,
    MASK_PATCH: tl.constexpr, WEIGHT_PATCH: tl.constexpr, HAS_WEIGHTS: tl.constexpr, GRAD_TARGET: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    b, yy, xx, inside, pred, target, m = _tile(pred_ptr, target_ptr, mask_ptr, H, W, p_b, p_h, p_w, t_b, t_h, t_w,
                                               mh, mw, tiles_w, MASK_PATCH, TILE_H, TILE_W)
    coef = m * tl.load(scale_ptr)  # g / (sum(m) + eps) / C
    if HAS_WEIGHTS:
        coef = coef * _cell_lookup(weight_ptr, b, yy, xx, wh, ww, WEIGHT_PATCH, inside)
    grad = b.to(tl.int64) * C * H * W + yy.to(tl.int64) * W + xx  # grads are contiguous (B, C, H, W)
    for c in range(C):
        d = tl.load(pred + c * p_c, mask=inside, other=0.0).to(tl.float32) - tl.load(target + c * t_c, mask=inside, other=0.0).to(tl.float32)
        g = tl.where(d > 0.0, coef, tl.where(d < 0.0, -coef, 0.0))  # d/dd |d| = sign(d), 0 at 0 as torch
        tl.store(grad_pred_ptr + grad + c * H * W, g.to(grad_pred_ptr.dtype.element_ty), mask=inside)
        if GRAD_TARGET:
            tl.store(grad_target_ptr + grad + c * H * W, (-g).to(grad_target_ptr.dtype.element_ty), mask=inside)


def _common_args(pred, target, mask_grid, weights):
    B, C, H, W = pred.shape
    tiles_w = triton.cdiv(W, TILE_W)
    grid = (triton.cdiv(H, TILE_H) * tiles_w, B)
    wh, ww = weights.shape[1:] if weights is not None else (1, 1)
    args = (C, H, W, *pred.stride(), *target.stride(), mask_grid.shape[1], mask_grid.shape[2], wh, ww, tiles_w)
    return grid, args


def weighted_l1_forward(pred, target, mask_grid, weights, mask_patch: int, weight_patch: int):
    """-> (num, den) fp32 partials of shape (B * tiles,). mask_grid, weights: contiguous (B, h, w) fp32."""
    grid, args = _common_args(pred, target, mask_grid, weights)
    num = torch.empty(grid[0] * grid[1], dtype=torch.float32, device=pred.device)
    den = torch.empty_like(num)
    if num.numel():
        _forward_kernel[grid](
            pred, target, mask_grid, weights if weights is not None else mask_grid, num, den, *args,
            MASK_PATCH=mask_patch, WEIGHT_PATCH=weight_patch, HAS_WEIGHTS=weights is not None,
            TILE_H=TILE_H, TILE_W=TILE_W, num_warps=NUM_WARPS,
        )
    return num, den


def weighted_l1_backward(scale, pred, target, mask_grid, weights, mask_patch: int, weight_patch: int, grad_target: bool):
    """-> (grad_pred, grad_target or None), contiguous, in pred's / target's dtype. scale: 0-d fp32."""
    grid, args = _common_args(pred, target, mask_grid, weights)
    grad_pred = torch.empty(pred.shape, dtype=pred.dtype, device=pred.device)
    grad_tgt = torch.empty(target.shape, dtype=target.dtype, device=target.device) if grad_target else None
    if grad_pred.numel():
        _backward_kernel[grid](
            scale, pred, target, mask_grid, weights if weights is not None else mask_grid, grad_pred,
            grad_tgt if grad_tgt is not None else grad_pred, *args,
            MASK_PATCH=mask_patch, WEIGHT_PATCH=weight_patch, HAS_WEIGHTS=weights is not None,
            GRAD_TARGET=grad_target, TILE_H=TILE_H, TILE_W=TILE_W, num_warps=NUM_WARPS,
        )
    return grad_pred, grad_tgt


def sm90_specs() -> list[dict]:
    """The shipped configurations, for the H100 compile check (benchmarks/ptxas_report.py)."""
    ints = ("C", "H", "W", "p_b", "p_c", "p_h", "p_w", "t_b", "t_c", "t_h", "t_w", "mh", "mw", "wh", "ww", "tiles_w")
    specs = []
    for pred_type in ("*fp32", "*bf16"):
        common = dict(MASK_PATCH=16, WEIGHT_PATCH=8, HAS_WEIGHTS=True, TILE_H=TILE_H, TILE_W=TILE_W)
        fwd = dict(pred_ptr=pred_type, target_ptr="*fp32", mask_ptr="*fp32", weight_ptr="*fp32", num_ptr="*fp32",
                   den_ptr="*fp32", **{k: "i32" for k in ints}, **{k: "constexpr" for k in common})
        specs.append(dict(name=f"mim_loss_fwd[{pred_type[1:]}]", fn=_forward_kernel, signature=fwd,
                          constexprs=common, num_warps=NUM_WARPS))
        bwd_const = dict(common, GRAD_TARGET=False)
        bwd = dict(scale_ptr="*fp32", pred_ptr=pred_type, target_ptr="*fp32", mask_ptr="*fp32", weight_ptr="*fp32",
                   grad_pred_ptr=pred_type, grad_target_ptr="*fp32", **{k: "i32" for k in ints},
                   **{k: "constexpr" for k in bwd_const})
        specs.append(dict(name=f"mim_loss_bwd[{pred_type[1:]}]", fn=_backward_kernel, signature=bwd,
                          constexprs=bwd_const, num_warps=NUM_WARPS))
    return specs
