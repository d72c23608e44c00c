"""KAMIM's weighted masked L1 in one pass: FAST + NMS + drawKeypoints rings + per-cell L1, and its backward.

Forward (``_forward_kernel``), a persistent grid over tiles of ``OUT_H x OUT_W`` output pixels (whole
weight cells) of one image:

- ``FAST_WEIGHTS``: each program recovers OpenCV's uint8 gray from ``target`` over its tile plus an
  8 px halo (ring 4 + NMS 1 + circle 3) into a small per-program scratch, scores FAST, suppresses
  non-maxima, dilates the keypoints by the drawKeypoints ring, and in the same pass reads pred and
  target once and accumulates, per weight cell, the covered pixels and ``S = sum(m * |pred - target|)``.
  Only those (B, H/p, W/p) partials leave the kernel. The per-image min-normalisation of the weights
  is global over an image's cells, so a small epilogue (``fast_weighted_mim_loss_forward``) finishes it:
  ``w = exp(clip(d / T)) / min(...)`` and ``loss = sum(w * S) / (sum(m) + eps) / C``.
- Otherwise the same kernel without the FAST stages: the weight (a tensor, or 1) is looked up per
  pixel and each tile writes one partial.

Both write 2-bit codes of ``sign(pred - target)`` (1 positive, 2 negative, 0 zero or NaN, as
``torch.sign``), four per
byte, so the backward (``_backward_kernel``) reads 0.25 B per element instead of pred and target
(6 B for bf16 + fp32): 8.5 B per element for forward + backward against 14 B with a recompute.
All reductions are per-tile or per-cell partials summed in a fixed order: no atomics, deterministic.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from kamim_fast._opencv import DRAW_KEYPOINT_RING, FAST_NMS_RADIUS, FAST_RADIUS

from ._launch import LossConfig, launch, persistent_programs, pick
from .fast_tile import corner_score, gray_of, nms_keep

# ---------------------------------------------------------------------------------------------------
# The drawKeypoints ring as horizontal runs: each stencil row is one of a few column patterns, so the
# dilation is a horizontal pass (one bit per pattern: any keypoint under it) and a vertical pass (OR of
# the 9 rows' bits): 9 + 9 scratch loads per pixel instead of 48.
_RING_RADIUS = len(DRAW_KEYPOINT_RING) // 2
_PATTERNS = sorted({row for row in DRAW_KEYPOINT_RING if "#" in row})
assert len(_PATTERNS) <= 8, "the pattern bits must fit a uint8 scratch byte"
# Bit dx of pattern j (packed 9 bits per pattern): column offset dx - radius is in the run.
_RING_PATTERN_COLS = tl.constexpr(sum(
    sum(1 << dx for dx, ch in enumerate(row) if ch == "#") << (9 * j) for j, row in enumerate(_PATTERNS)))
_RING_PATTERNS = tl.constexpr(len(_PATTERNS))
# Per stencil row dy (0..8): 1 << pattern index, or 0 for an empty row; 8 bits per row.
_RING_ROW_BITS = tl.constexpr(sum(
    ((1 << _PATTERNS.index(row)) if "#" in row else 0) << (8 * dy) for dy, row in enumerate(DRAW_KEYPOINT_RING)))
_R = tl.constexpr(_RING_RADIUS)

# Halo of gray around the output pixels: the ring's radius, NMS's, the FAST circle's.
FAST_HALO = _RING_RADIUS + FAST_NMS_RADIUS + FAST_RADIUS
# Block rows/columns from the block's edge: scores need the circle inside the block (FAST_RADIUS);
# keypoints (NMS) one more; the ring bits are needed within the ring's radius of the outputs.
_SCORE_LO = tl.constexpr(FAST_RADIUS)
_KP_LO = tl.constexpr(FAST_RADIUS + FAST_NMS_RADIUS)
assert FAST_HALO - _RING_RADIUS == FAST_RADIUS + FAST_NMS_RADIUS

# Shipped configurations. BLOCK_W columns hold OUT_W outputs plus the halo (112 of 128 for p <= 16);
# SUB_H rows per step keep 4 pixels per thread at 4 warps, as the FAST kernel (which fits the circle's
# 16 differences in registers without spills). Tiles of 48 output rows: 75% of the staged rows are outputs.
GPU_CONFIG = LossConfig(BLOCK_W=128, SUB_H=4, READ_H=2, FINAL_H=4, OUT_ROWS=48, num_warps=4)
# The interpreter pays ~100 us per op whatever the tile, so CPU tensors take tall steps.
INTERPRETER_CONFIG = LossConfig(BLOCK_W=128, SUB_H=32, READ_H=32, FINAL_H=32, OUT_ROWS=32, num_warps=4)
# Per (weight cell, density), what differs from GPU_CONFIG with FAST weights (ptxas report, issue 12):
# with 2-row steps of the pass that reads pred and target, 2, 32 and 64 px cells spilled 28-40 bytes on
# sm_80 (Triton 3.6), 64 px cells 4-12 in the generic sm_90a kernel and with 4-row final steps, and
# the count at 8 px 12 in the generic sm_90a kernel (Triton 3.8); 1-row steps (and 2-row final steps for
# 64) do not. Without FAST weights, cell 1 (no weights) spilled 4 bytes on sm_90a and sm_80 (Triton 3.6)
# at 4 warps or 4-row steps; 2-row steps at 8 warps do not.
GPU_CELL_OVERRIDES = {
    **{(c, d): dict(READ_H=1) for c in (2, 32) for d in ("ring", "count")},
    **{(64, d): dict(READ_H=1, FINAL_H=2) for d in ("ring", "count")},
    (8, "count"): dict(READ_H=1),
}
GPU_L1_CELL_OVERRIDES = {1: dict(FINAL_H=2, num_warps=8)}
MAX_FUSED_CELL = 64  # larger or non-power-of-two weight cells take FAST kernel + L1 kernel instead

# Backward: one program per TILE_H x TILE_W pixels of one image, all channels.
TILE_H = 16
TILE_W = 64
BACKWARD_WARPS = 4


@triton.jit
def _cell_lookup(ptr, b, yy, xx, h, w, PATCH: tl.constexpr, mask):
    """Value of a (B, h, w) float32 grid at the cell holding pixel (yy, xx) of image b."""
    return tl.load(ptr + (b.to(tl.int64) * h + yy // PATCH) * w + xx // PATCH, mask=mask, other=0.0)


@triton.jit
def _ring_rows(bits_ptrs, stride_h, mask):
    """Whether the drawKeypoints ring of any keypoint covers each pixel: OR over the 9 stencil rows of
    the horizontal-run bits ``_ring_bits`` left in the scratch."""
    covered = tl.zeros(bits_ptrs.shape, dtype=tl.int32)
    for dy in tl.static_range(2 * _R + 1):
        if ((_RING_ROW_BITS >> (8 * dy)) & 255) != 0:
            bits = tl.load(bits_ptrs + (dy - _R) * stride_h, mask=mask, other=0).to(tl.int32)
            covered = covered | (bits & ((_RING_ROW_BITS >> (8 * dy)) & 255))
    return covered != 0


@triton.jit
def _ring_bits(kp_ptrs, mask):
    """Bit j: a keypoint lies under horizontal pattern j centred on the pixel (uint8 keypoints at kp_ptrs)."""
    kp = ()
    for dx in tl.static_range(2 * _R + 1):
        kp = kp + (tl.load(kp_ptrs + (dx - _R), mask=mask, other=0).to(tl.int32),)
    bits = tl.zeros(kp_ptrs.shape, dtype=tl.int32)
    for j in tl.static_range(_RING_PATTERNS):
        run = tl.zeros(kp_ptrs.shape, dtype=tl.int32)
        for dx in tl.static_range(2 * _R + 1):
            if ((_RING_PATTERN_COLS >> (9 * j + dx)) & 1) != 0:
                run = run | kp[dx]
        bits = bits | (run << j)
    return bits


@triton.jit
def _sign_codes(d, SUB: tl.constexpr, BLOCK_W: tl.constexpr):
    """2-bit codes of sign(d) packed four per byte along the columns: (SUB, BLOCK_W) -> (SUB, BLOCK_W / 4)."""
    shift = (tl.arange(0, BLOCK_W) % 4 * 2)[None, :]
    code = tl.where(d > 0.0, 1, tl.where(d < 0.0, 2, 0))  # NaN: 0, as torch.sign(nan)
    return tl.sum(tl.reshape(code << shift, (SUB, BLOCK_W // 4, 4)), axis=2).to(tl.uint8)


@triton.jit
def _l1_signs(pred, target, p_c, t_c, C, inside, signs, sign_c, SUB: tl.constexpr, BLOCK_W: tl.constexpr,
              sign_mask):
    """sum over channels of |pred - target| (fp32) on a SUB x BLOCK_W tile; stores the 2-bit sign codes.

    ``signs`` points at channel 0 of the tile's packed (SUB, BLOCK_W / 4) bytes, ``sign_c`` is the
    channel stride of the packed codes. The tile's first column must be a multiple of 4.
    """
    l1 = tl.zeros((SUB, BLOCK_W), dtype=tl.float32)
    for c in range(C):  # pointer steps per channel: no c * stride products to overflow int32
        p = tl.load(pred, mask=inside, other=0.0).to(tl.float32)
        t = tl.load(target, mask=inside, other=0.0).to(tl.float32)
        l1 += tl.abs(p - t)
        tl.store(signs, _sign_codes(p - t, SUB, BLOCK_W), mask=sign_mask)
        pred += p_c
        target += t_c
        signs += sign_c
    return l1


@triton.jit
def _store_cells(ptr, acc, b, cy, x0, wh, ww, ok, CELL: tl.constexpr, OUT_W: tl.constexpr, BLOCK_W: tl.constexpr):
    """Sums a (BLOCK_W,) row of column totals per CELL columns into cell row ``cy`` of a (B, wh, ww) grid."""
    cells = tl.arange(0, BLOCK_W // CELL)
    cx = x0 // CELL + cells
    total = tl.sum(tl.reshape(acc, (BLOCK_W // CELL, CELL)), axis=1)
    tl.store(ptr + (b.to(tl.int64) * wh + cy) * ww + cx, total, mask=ok & (cells < OUT_W // CELL) & (cx < ww) & (cy < wh))


@triton.jit
def _masked_l1_rows(pred_b, target_b, mask_ptr, signs_ptr, b, yo, x0, xo, kq, C, H, W, W4,
                    p_c, p_h, p_w, t_c, t_h, t_w, mh, mw,
                    MASK_PATCH: tl.constexpr, OUT_W: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """(inside, m * sum_c |pred - target|) on output rows ``yo`` (ROWS x 1) and columns ``xo`` (1 x BLOCK_W,
    from x0); stores the rows' sign codes."""
    inside = (xo - x0 < OUT_W) & (yo < H) & (xo < W)
    m = _cell_lookup(mask_ptr, b, yo, xo, mh, mw, MASK_PATCH, inside)
    m = tl.where(m > 0.0, m, 0.0)  # AMT's thrown patches (-1) count as 0
    signs = signs_ptr + (b.to(tl.int64) * C * H + yo) * W4 + x0 // 4 + kq
    sign_mask = (kq < OUT_W // 4) & (x0 // 4 + kq < W4) & (yo < H)
    l1 = _l1_signs(pred_b + yo.to(tl.int64) * p_h + xo * p_w, target_b + yo.to(tl.int64) * t_h + xo * t_w,
                   p_c, t_c, C, inside, signs, tl.cast(H, tl.int64) * W4, ROWS, BLOCK_W, sign_mask)
    return inside, l1 * m


@triton.jit
def _forward_kernel(
    # pred and target (B, C, H, W), any strides (elements)
    pred_ptr, p_b, p_c, p_h, p_w, target_ptr, t_b, t_c, t_h, t_w, C, H, W,
    # the mask's (B, mh, mw) and the weights' (B, wh, ww) fp32 cell grids (contiguous); weight_ptr is
    # read only with HAS_WEIGHTS, and with FAST_WEIGHTS (wh, ww) is the grid the partials go to
    mask_ptr, mh, mw, weight_ptr, wh, ww,
    # outputs: 2-bit sign codes (B, C, H, W4) with W4 = ceil(W / 4); the per-cell (FAST) or per-tile
    # partial sums of m * w * |pred - target|; per-cell covered pixels or keypoints (FAST only)
    signs_ptr, W4, l1_out_ptr, cover_out_ptr,
    # the per-program scratch (FAST only, 2 planes of ROWS x BLOCK_W bytes) and the persistent grid's tiles
    scratch_ptr, tiles_w, tiles_per_image, n_tiles,
    # FAST threshold; target's un-normalisation round((x * sd + m) * 255) per channel
    threshold, m0, m1, m2, sd0, sd1, sd2,
    # cell sizes, which weights, the density (ring or count), channel order
    MASK_PATCH: tl.constexpr, CELL: tl.constexpr, FAST_WEIGHTS: tl.constexpr, RING: tl.constexpr,
    HAS_WEIGHTS: tl.constexpr, BGR: tl.constexpr,
    # tile geometry (_geometry): halo, outputs per tile, staged columns, rows per step of each pass
    HALO: tl.constexpr, OUT_H: tl.constexpr, OUT_W: tl.constexpr, BLOCK_W: tl.constexpr, SUB_H: tl.constexpr,
    FINAL_H: tl.constexpr, SH: tl.constexpr,
):
    # Block coordinates (i, j) cover image rows y0 - HALO + i and columns x0 - HALO + j.
    ROWS: tl.constexpr = OUT_H + 2 * HALO
    pid = tl.program_id(0)
    plane_a = scratch_ptr + pid.to(tl.int64) * (2 * ROWS * BLOCK_W)  # gray, then keypoints
    plane_b = plane_a + ROWS * BLOCK_W  # scores, then ring bits
    jj = tl.arange(0, BLOCK_W)[None, :]
    rows = tl.arange(0, SUB_H)[:, None]
    frows = tl.arange(0, FINAL_H)[:, None]
    kq = tl.arange(0, BLOCK_W // 4)[None, :]
    srows = tl.arange(0, SH)[:, None]
    sign_c = tl.cast(H, tl.int64) * W4  # channel stride of the sign codes
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        b = tile // tiles_per_image
        t = tile - b * tiles_per_image
        ty = t // tiles_w
        y0 = ty * OUT_H
        x0 = (t - ty * tiles_w) * OUT_W
        xg = x0 - HALO + jj
        pred_b = pred_ptr + b.to(tl.int64) * p_b
        target_b = target_ptr + b.to(tl.int64) * t_b
        if FAST_WEIGHTS:
            tl.debug_barrier()  # the previous tile's final pass is done with the scratch
            # Pass 1 reads target and pred once: gray of the whole block (halo included) into the scratch,
            # and for the output pixels the masked L1 per cell and the sign codes. Register column j is
            # output column j, except the last HALO, which wrap round to the left halo (-HALO..-1), so
            # cells line up with the tile while every staged column is covered.
            oc = tl.where(jj < BLOCK_W - HALO, jj, jj - BLOCK_W)
            xs = x0 + oc
            col_acc = tl.zeros((BLOCK_W,), dtype=tl.float32)
            for r0 in range(-((HALO + SH - 1) // SH) * SH, OUT_H + HALO, SH):  # chunks never straddle cells
                orow = r0 + srows
                yg = y0 + orow
                staged = (orow >= -HALO) & (orow < OUT_H + HALO)
                inside = staged & (yg >= 0) & (yg < H) & (xs >= 0) & (xs < W)
                out = inside & (orow >= 0) & (orow < OUT_H) & (oc >= 0) & (oc < OUT_W)
                tp0 = target_b + yg.to(tl.int64) * t_h + xs * t_w
                pp0 = pred_b + yg.to(tl.int64) * p_h + xs * p_w
                tp1 = tp0 + t_c  # channel steps on the pointers: no 2 * stride to overflow int32
                pp1 = pp0 + p_c
                t0 = tl.load(tp0, mask=inside, other=0.0)
                t1 = tl.load(tp1, mask=inside, other=0.0)
                t2 = tl.load(tp1 + t_c, mask=inside, other=0.0)
                gray = gray_of(t0, t1, t2, inside, True, BGR, m0, m1, m2, sd0, sd1, sd2)
                tl.store(plane_a + (orow + HALO) * BLOCK_W + oc + HALO, gray.to(tl.uint8), mask=staged)
                signs = signs_ptr + (b.to(tl.int64) * C * H + yg) * W4 + x0 // 4 + kq
                sign_ok = (kq < OUT_W // 4) & (x0 // 4 + kq < W4) & (orow >= 0) & (orow < OUT_H) & (yg < H)
                d0 = tl.where(out, tl.load(pp0, mask=out, other=0.0).to(tl.float32) - t0.to(tl.float32), 0.0)
                d1 = tl.where(out, tl.load(pp1, mask=out, other=0.0).to(tl.float32) - t1.to(tl.float32), 0.0)
                d2 = tl.where(out, tl.load(pp1 + p_c, mask=out, other=0.0).to(tl.float32) - t2.to(tl.float32), 0.0)
                signs1 = signs + sign_c
                tl.store(signs, _sign_codes(d0, SH, BLOCK_W), mask=sign_ok)
                tl.store(signs1, _sign_codes(d1, SH, BLOCK_W), mask=sign_ok)
                tl.store(signs1 + sign_c, _sign_codes(d2, SH, BLOCK_W), mask=sign_ok)
                m = _cell_lookup(mask_ptr, b, yg, xs, mh, mw, MASK_PATCH, out)
                m = tl.where(m > 0.0, m, 0.0)  # AMT's thrown patches (-1) count as 0
                col_acc += tl.sum((tl.abs(d0) + tl.abs(d1) + tl.abs(d2)) * m, axis=0)
                done = (r0 + SH) % CELL == 0  # a cell row is complete
                _store_cells(l1_out_ptr, col_acc, b, (y0 + r0) // CELL, x0, wh, ww, done & (r0 >= 0) & (r0 < OUT_H),
                             CELL, OUT_W, BLOCK_W)
                col_acc = tl.where(done, 0.0, col_acc)
            tl.debug_barrier()
            for r0 in range(_SCORE_LO, ROWS - _SCORE_LO, SUB_H):  # scores within HALO - circle of the outputs
                ii = r0 + rows
                yg = y0 - HALO + ii
                valid = ((ii < ROWS - _SCORE_LO) & (jj >= _SCORE_LO) & (jj < BLOCK_W - _SCORE_LO)
                         & (yg >= _SCORE_LO) & (yg < H - _SCORE_LO) & (xg >= _SCORE_LO) & (xg < W - _SCORE_LO))
                score = corner_score(plane_a + ii * BLOCK_W + jj, BLOCK_W, 1, valid)
                tl.store(plane_b + ii * BLOCK_W + jj, tl.where(score >= threshold, score, 0).to(tl.uint8),
                         mask=ii < ROWS - _SCORE_LO)
            tl.debug_barrier()
            for r0 in range(_KP_LO, ROWS - _KP_LO, SUB_H):  # keypoints within the ring's radius of the outputs
                ii = r0 + rows
                region = (ii < ROWS - _KP_LO) & (jj >= _KP_LO) & (jj < BLOCK_W - _KP_LO)
                keep, _ = nms_keep(plane_b + ii * BLOCK_W + jj, BLOCK_W, region)
                tl.store(plane_a + ii * BLOCK_W + jj, keep.to(tl.uint8), mask=region)
            if RING:
                tl.debug_barrier()
                for r0 in range(_KP_LO, ROWS - _KP_LO, SUB_H):  # horizontal runs at the output columns
                    ii = r0 + rows
                    region = (ii < ROWS - _KP_LO) & (jj >= HALO) & (jj < HALO + OUT_W)
                    bits = _ring_bits(plane_a + ii * BLOCK_W + jj, region)
                    tl.store(plane_b + ii * BLOCK_W + jj, bits.to(tl.uint8), mask=region)
            tl.debug_barrier()
        # The final pass: output pixels only, indexed from the tile's corner (a multiple of CELL and 4).
        xo = x0 + jj
        if FAST_WEIGHTS:  # the last pass: covered pixels (or keypoints) per cell, from the scratch only
            for cell_row in range(0, OUT_H // CELL):
                cover_acc = tl.zeros((FINAL_H, BLOCK_W), dtype=tl.float32)
                for r0 in range(0, CELL, FINAL_H):
                    io = cell_row * CELL + r0 + frows  # output row within the tile
                    inside = (jj < OUT_W) & (y0 + io < H) & (xo < W)
                    ib = (HALO + io) * BLOCK_W + HALO + jj  # the same pixels in the scratch
                    if RING:
                        cover = _ring_rows(plane_b + ib, BLOCK_W, inside)
                    else:
                        cover = tl.load(plane_a + ib, mask=inside, other=0) != 0
                    cover_acc += cover.to(tl.float32)
                _store_cells(cover_out_ptr, tl.sum(cover_acc, axis=0), b, y0 // CELL + cell_row, x0, wh, ww, cell_row >= 0,
                             CELL, OUT_W, BLOCK_W)
        else:
            tile_sum = tl.zeros((FINAL_H, BLOCK_W), dtype=tl.float32)
            for r0 in range(0, OUT_H, FINAL_H):
                yo = y0 + r0 + frows
                inside, l1 = _masked_l1_rows(pred_b, target_b, mask_ptr, signs_ptr, b, yo, x0, xo, kq,
                                             C, H, W, W4, p_c, p_h, p_w, t_c, t_h, t_w, mh, mw,
                                             MASK_PATCH, OUT_W, FINAL_H, BLOCK_W)
                if HAS_WEIGHTS:
                    l1 = l1 * _cell_lookup(weight_ptr, b, yo, xo, wh, ww, CELL, inside)
                tile_sum += l1
            tl.store(l1_out_ptr + tile, tl.sum(tl.sum(tile_sum, axis=1), axis=0))


@triton.jit
def _backward_kernel(
    # 0-d fp32 g / (sum(m) + eps) / C; the forward's 2-bit sign codes (B, C, H, W4)
    scale_ptr, signs_ptr, W4,
    # the mask's (B, mh, mw) and the weights' (B, wh, ww) fp32 cell grids; weights read with HAS_WEIGHTS
    mask_ptr, mh, mw, weight_ptr, wh, ww,
    # outputs, contiguous (B, C, H, W); grad_target written with GRAD_TARGET
    grad_pred_ptr, grad_target_ptr, C, H, W,
    # TILE_H x TILE_W tiles per image row and per image: the grid is (tiles_per_image * B,)
    tiles_w, tiles_per_image,
    MASK_PATCH: tl.constexpr, WEIGHT_PATCH: tl.constexpr, HAS_WEIGHTS: tl.constexpr, GRAD_TARGET: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    """grad = g / (sum(m) + eps) / C * w * m * sign(pred - target), from the forward's sign codes."""
    pid = tl.program_id(0)  # the batch is folded into grid x (no 65,535 cap on grid y)
    b = pid // tiles_per_image
    tile = pid - b * tiles_per_image
    ty = tile // tiles_w
    yy = ty * TILE_H + tl.arange(0, TILE_H)[:, None]
    xx = (tile - ty * tiles_w) * TILE_W + tl.arange(0, TILE_W)[None, :]
    inside = (yy < H) & (xx < W)
    m = _cell_lookup(mask_ptr, b, yy, xx, mh, mw, MASK_PATCH, inside)
    coef = tl.where(m > 0.0, m, 0.0) * tl.load(scale_ptr)
    if HAS_WEIGHTS:
        coef = coef * _cell_lookup(weight_ptr, b, yy, xx, wh, ww, WEIGHT_PATCH, inside)
    signs = signs_ptr + (b.to(tl.int64) * C * H + yy) * W4 + xx // 4  # four lanes share a byte
    shift = xx % 4 * 2
    grad = b.to(tl.int64) * C * H * W + yy.to(tl.int64) * W + xx  # grads are contiguous (B, C, H, W)
    gp = grad_pred_ptr + grad
    gt = grad_target_ptr + grad
    sign_c = tl.cast(H, tl.int64) * W4  # channel strides, int64: pointer steps, no c * H * W products
    grad_c = tl.cast(H, tl.int64) * W
    for c in range(C):
        code = (tl.load(signs, mask=inside, other=0).to(tl.int32) >> shift) & 3
        # d|d|/dd = sign(d), 0 at 0 and at NaN as torch.sign
        g = tl.where(code == 1, coef, tl.where(code == 2, -coef, 0.0))
        tl.store(gp, g.to(grad_pred_ptr.dtype.element_ty), mask=inside)
        if GRAD_TARGET:
            tl.store(gt, (-g).to(grad_target_ptr.dtype.element_ty), mask=inside)
        signs += sign_c
        gp += grad_c
        gt += grad_c


# ---------------------------------------------------------------------------------------------------
# Host launchers. Arguments are checked by the callers (kamim_fast/loss.py, kamim_fast/_ops.py).

def fuses(cell: int) -> bool:
    """Whether FAST weights of ``cell`` px cells are computed inside the loss kernel (powers of two <= 64)."""
    return 1 <= cell <= MAX_FUSED_CELL and cell & (cell - 1) == 0


def packed_width(W: int) -> int:
    """Bytes per row of the 2-bit sign codes: four columns per byte."""
    return (W + 3) // 4


def _tuned(config: LossConfig, cell: int, fast: bool, ring: bool) -> LossConfig:
    """GPU_CONFIG with the per-cell overrides above (other configs as given)."""
    key = (cell, "ring" if ring else "count") if fast else cell
    overrides = GPU_CELL_OVERRIDES if fast else GPU_L1_CELL_OVERRIDES
    return dataclasses.replace(config, **overrides[key]) if config == GPU_CONFIG and key in overrides else config


def _geometry(H: int, W: int, cell: int, fast: bool, config: LossConfig) -> dict:
    """Tile sizes: with FAST, whole cells inside BLOCK_W minus the halo; without, whole BLOCK_W x OUT_ROWS tiles."""
    block_w, final_h = config.BLOCK_W, config.FINAL_H
    if fast:
        halo, out_w, out_h, final_h = FAST_HALO, (block_w - 2 * FAST_HALO) // cell * cell, \
            triton.cdiv(config.OUT_ROWS, cell) * cell, min(final_h, cell)
    else:
        halo, out_w, out_h = 0, block_w, triton.cdiv(config.OUT_ROWS, final_h) * final_h
    # SH: rows per step of the pass that reads pred and target with FAST weights; divides the cell.
    return dict(HALO=halo, OUT_W=out_w, OUT_H=out_h, BLOCK_W=block_w, SUB_H=config.SUB_H, FINAL_H=final_h,
                SH=min(config.READ_H, cell) if fast else 1,
                tiles_w=triton.cdiv(W, out_w), tiles_h=triton.cdiv(H, out_h))


def _forward_args(pred, target, mask_grid, mask_patch, weights, cell, fast, ring, threshold, bgr, mean, std,
                  signs, l1_out, cover_out, scratch, config: LossConfig) -> dict:
    """The forward kernel's arguments, by name (tiles_h rides along for the launcher)."""
    B, C, H, W = pred.shape
    g = _geometry(H, W, cell, fast, _tuned(config, cell, fast, ring))
    tiles_w, tiles_h = g.pop("tiles_w"), g.pop("tiles_h")
    p_b, p_c, p_h, p_w = pred.stride()
    t_b, t_c, t_h, t_w = target.stride()
    wh, ww = (weights.shape[1:] if weights is not None else (H // cell, W // cell))
    return dict(pred_ptr=pred, p_b=p_b, p_c=p_c, p_h=p_h, p_w=p_w, target_ptr=target, t_b=t_b, t_c=t_c, t_h=t_h,
                t_w=t_w, C=C, H=H, W=W,
                mask_ptr=mask_grid, mh=mask_grid.shape[1], mw=mask_grid.shape[2],
                weight_ptr=weights if weights is not None else mask_grid, wh=wh, ww=ww,
                signs_ptr=signs, W4=packed_width(W), l1_out_ptr=l1_out,
                cover_out_ptr=cover_out if cover_out is not None else l1_out,
                scratch_ptr=scratch, tiles_w=tiles_w, tiles_per_image=tiles_h * tiles_w, n_tiles=B * tiles_h * tiles_w,
                threshold=threshold, m0=mean[0], m1=mean[1], m2=mean[2], sd0=std[0], sd1=std[1], sd2=std[2],
                MASK_PATCH=mask_patch, CELL=cell, FAST_WEIGHTS=fast, RING=ring, HAS_WEIGHTS=weights is not None,
                BGR=bgr, **g)


def _launch_forward(pred, target, mask_grid, mask_patch, weights, cell, fast, ring, threshold, bgr, mean, std,
                    l1_out, cover_out, config: LossConfig):
    B, C, H, W = pred.shape
    config = _tuned(config, cell, fast, ring)
    signs = torch.empty((B, C, H, packed_width(W)), dtype=torch.uint8, device=pred.device)
    placeholder = torch.empty(0 if fast else 1, dtype=torch.uint8, device=pred.device)
    args = _forward_args(pred, target, mask_grid, mask_patch, weights, cell, fast, ring, threshold, bgr, mean, std,
                         signs, l1_out, cover_out, placeholder, config)
    n_tiles = args["n_tiles"]
    if n_tiles == 0 or C == 0:
        return signs
    if fast:
        programs = persistent_programs(_forward_kernel, pred, n_tiles, config.num_warps, args)
        rows = args["OUT_H"] + 2 * args["HALO"]
        args["scratch_ptr"] = torch.empty(programs * 2 * rows * args["BLOCK_W"], dtype=torch.uint8, device=pred.device)
    else:
        programs = n_tiles  # one partial per tile: no scratch, an ordinary grid
    launch(_forward_kernel, (programs,), pred, config.num_warps, args)
    return signs


def weighted_mim_loss_forward(pred, target, mask_grid, weights, mask_patch: int, weight_patch: int, config=None):
    """-> (per-tile fp32 partials of sum(w * m * |pred - target|), packed sign codes (B, C, H, ceil(W/4))).

    mask_grid, weights: contiguous (B, h, w) fp32; weights None means 1. Any weight cell size.
    """
    config = pick(pred, config, GPU_CONFIG, INTERPRETER_CONFIG)
    B, _, H, W = pred.shape
    cell = weight_patch if weights is not None else 1
    g = _geometry(H, W, cell, False, _tuned(config, cell, False, False))
    partials = torch.empty(B * g["tiles_h"] * g["tiles_w"], dtype=torch.float32, device=pred.device)
    signs = _launch_forward(pred, target, mask_grid, mask_patch, weights, weight_patch if weights is not None else 1,
                            False, False, 0, False, (0.0,) * 3, (1.0,) * 3, partials, None, config)
    return partials, signs


def fast_weighted_mim_loss_forward(pred, target, mask_grid, mask_patch: int, cell: int, ring: bool, threshold: int,
                             bgr: bool, mean, std, config=None):
    """-> (S, cover, signs): per-cell fp32 sums of m * |pred - target| and of covered pixels (ring) or
    keypoints (count), both (B, H/cell, W/cell), and the packed sign codes. ``cell`` must ``fuses``."""
    assert fuses(cell), cell
    B, _, H, W = pred.shape
    l1 = torch.empty((B, H // cell, W // cell), dtype=torch.float32, device=pred.device)
    cover = torch.empty_like(l1)
    signs = _launch_forward(pred, target, mask_grid, mask_patch, None, cell, True, ring, threshold, bgr, mean, std,
                            l1, cover, pick(pred, config, GPU_CONFIG, INTERPRETER_CONFIG))
    return l1, cover, signs


def _backward_args(scale, signs, mask_grid, weights, mask_patch, weight_patch, grad_pred, grad_tgt) -> dict:
    B, C, H, W = grad_pred.shape
    tiles_w = triton.cdiv(W, TILE_W)
    wh, ww = weights.shape[1:] if weights is not None else (1, 1)
    return dict(scale_ptr=scale, signs_ptr=signs, W4=packed_width(W),
                mask_ptr=mask_grid, mh=mask_grid.shape[1], mw=mask_grid.shape[2],
                weight_ptr=weights if weights is not None else mask_grid, wh=wh, ww=ww,
                grad_pred_ptr=grad_pred, grad_target_ptr=grad_tgt if grad_tgt is not None else grad_pred,
                C=C, H=H, W=W, tiles_w=tiles_w, tiles_per_image=triton.cdiv(H, TILE_H) * tiles_w,
                MASK_PATCH=mask_patch, WEIGHT_PATCH=weight_patch, HAS_WEIGHTS=weights is not None,
                GRAD_TARGET=grad_tgt is not None, TILE_H=TILE_H, TILE_W=TILE_W)


def weighted_mim_loss_backward(scale, signs, mask_grid, weights, mask_patch: int, weight_patch: int, shape,
                         pred_dtype, target_dtype, grad_target: bool):
    """-> (grad_pred, grad_target or None), contiguous (B, C, H, W). scale: 0-d fp32 g / (sum(m) + eps) / C."""
    B, C, H, W = shape
    grad_pred = torch.empty(shape, dtype=pred_dtype, device=signs.device)
    grad_tgt = torch.empty(shape, dtype=target_dtype, device=signs.device) if grad_target else None
    if grad_pred.numel():
        args = _backward_args(scale, signs, mask_grid, weights, mask_patch, weight_patch, grad_pred, grad_tgt)
        launch(_backward_kernel, (args["tiles_per_image"] * B,), signs, BACKWARD_WARPS, args)
    return grad_pred, grad_tgt


# Every weight cell the fused kernel takes (fuses), with both densities: what a user can reach.
FUSED_CELLS = tuple(c for c in range(1, MAX_FUSED_CELL + 1) if fuses(c))
# The rest of what a user can reach (compile_specs(full=True); the rule is in benchmarks/NOTES.md, "Compile
# check"). pred and target: each any of these (float64 takes the PyTorch reference, not the kernels).
LOSS_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Patch sizes, any p the API takes: the mask's cell (MASK_PATCH) and given weights' (CELL, WEIGHT_PATCH) enter
# the kernels only as the divisor of a cell lookup (yy // p), compiled to nothing (p = 1), a shift (a power
# of two) or a multiply-high (any other p): one size per class, the first the default of the names.
MASK_PATCHES = (16, 1, 14)  # ViT/16 and MAE (SimMIM's masks at model-patch resolution), pixel masks, ViT/14
GIVEN_WEIGHT_CELLS = (8, 1, 14)  # the published 8, pixel-level weights, a non-power of two


def _case_size(size: int, *patches: int) -> int:
    """The benchmark's side (192), or the least multiple of 16 and of the patch sizes above it: an aligned case."""
    step = math.lcm(16, *patches)
    return -(-size // step) * step


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _forward_spec(B, H, W, pred_dtype, target_dtype, mask_patch, fast, ring, cell, bgr) -> dict:
    """One forward configuration (cell None: no weights), with an aligned case's launch arguments (meta tensors)."""
    meta = dict(device="meta")
    H, W = (_case_size(s, mask_patch, cell or 1) for s in (H, W))
    pred = torch.empty((B, 3, H, W), dtype=pred_dtype, **meta)
    target = torch.empty((B, 3, H, W), dtype=target_dtype, **meta)
    signs = torch.empty((B, 3, H, packed_width(W)), dtype=torch.uint8, **meta)
    mask = torch.empty((B, H // mask_patch, W // mask_patch), dtype=torch.float32, **meta)
    grid = torch.empty((B, H // (cell or 1), W // (cell or 1)), dtype=torch.float32, **meta)
    weights = None if fast or cell is None else grid
    tuned = _tuned(GPU_CONFIG, cell or 1, fast, ring)
    g = _geometry(H, W, cell or 1, fast, tuned)
    l1_out = grid if fast else torch.empty(B * g["tiles_h"] * g["tiles_w"], dtype=torch.float32, **meta)
    u8 = torch.empty(1, dtype=torch.uint8, **meta)  # the scratch: its size is no part of the signature
    args = _forward_args(pred, target, mask, mask_patch, weights, cell or 1, fast, ring, 10, bgr, (0.0,) * 3,
                         (1.0,) * 3, signs, l1_out, torch.empty_like(grid) if fast else None, u8, GPU_CONFIG)
    kind = ("fast-ring" if ring else "fast-count") if fast else ("weights" if cell else "no-weights")
    extra = (f",target={_dt(target_dtype)}" if target_dtype != torch.float32 else "") + \
        (f",mask={mask_patch}" if mask_patch != MASK_PATCHES[0] else "") + (",bgr=1" if bgr else "")
    return dict(name=f"mim_loss_fwd[{_dt(pred_dtype)},{kind}" + (f",p={cell}" if cell else "") + extra + "]",
                fn=_forward_kernel, args=args, num_warps=tuned.num_warps, items=B * H * W * 3)


def _backward_spec(B, H, W, pred_dtype, target_dtype, mask_patch, weight_patch, grad_target) -> dict:
    """One backward configuration (weight_patch None: no weights, as the API passes it: patch 1)."""
    meta = dict(device="meta")
    H, W = (_case_size(s, mask_patch, weight_patch or 1) for s in (H, W))
    grad = torch.empty((B, 3, H, W), dtype=pred_dtype, **meta)
    signs = torch.empty((B, 3, H, packed_width(W)), dtype=torch.uint8, **meta)
    mask = torch.empty((B, H // mask_patch, W // mask_patch), dtype=torch.float32, **meta)
    weights = None if weight_patch is None else \
        torch.empty((B, H // weight_patch, W // weight_patch), dtype=torch.float32, **meta)
    args = _backward_args(torch.empty((), dtype=torch.float32, **meta), signs, mask, weights, mask_patch,
                          weight_patch or 1, grad, torch.empty_like(grad, dtype=target_dtype) if grad_target else None)
    extra = (f",p={weight_patch}" if weight_patch not in (None, 8) else "") + \
        (f",target={_dt(target_dtype)}" if grad_target and target_dtype != torch.float32 else "") + \
        (f",mask={mask_patch}" if mask_patch != MASK_PATCHES[0] else "")
    return dict(name=f"mim_loss_bwd[{_dt(pred_dtype)},weights={int(weight_patch is not None)},"
                     f"grad_target={int(grad_target)}{extra}]",
                fn=_backward_kernel, args=args, num_warps=BACKWARD_WARPS, items=B * H * W * 3)


def compile_specs(B: int = 256, H: int = 192, W: int = 192, full: bool = False) -> list[dict]:
    """The configurations the compile check builds, with an aligned case's launch arguments (meta tensors):
    with ``full``, every one a user can reach (benchmarks/compile_all.py, the committed report); else the
    subset that CI compiles live and the performance model reads (benchmarks/ptxas_report.py): fp32 pred at
    every fused cell, the other dtypes at p = 8, fp32 target, the mask's default patch (16), RGB."""
    specs = []
    for pred_dtype in LOSS_DTYPES:
        for target_dtype in LOSS_DTYPES if full else (torch.float32,):
            for mask_patch in MASK_PATCHES if full else MASK_PATCHES[:1]:
                cases = [(True, ring, cell, bgr) for ring in (True, False) for cell in FUSED_CELLS
                         for bgr in ((False, True) if full else (False,))]
                cases += [(False, False, cell, False) for cell in (*GIVEN_WEIGHT_CELLS, None)]
                for fast, ring, cell, bgr in cases:
                    if full or _ci_forward(pred_dtype, fast, ring, cell):
                        specs.append(_forward_spec(B, H, W, pred_dtype, target_dtype, mask_patch, fast, ring, cell,
                                                   bgr))
                # the backward's grad_target takes target's dtype; without it target's dtype plays no part
                for weight_patch in (*GIVEN_WEIGHT_CELLS, None):
                    for grad_target in (False, True):
                        if (not grad_target and target_dtype != torch.float32) or not (
                                full or _ci_backward(pred_dtype, weight_patch, grad_target)):
                            continue
                        specs.append(_backward_spec(B, H, W, pred_dtype, target_dtype, mask_patch, weight_patch,
                                                    grad_target))
    return specs


def _ci_forward(pred_dtype, fast, ring, cell) -> bool:
    if pred_dtype == torch.float32:
        return fast or cell in (8, None)
    if pred_dtype == torch.bfloat16:  # the other dtypes only change pred's loads
        return cell in (8, None)
    return fast and ring and cell == 8


def _ci_backward(pred_dtype, weight_patch, grad_target) -> bool:
    if pred_dtype == torch.float32:
        return weight_patch in (8, None) and not (grad_target and weight_patch is None)
    return weight_patch == 8 and not grad_target
