"""KAMIM's weighted masked L1 in one pass: FAST + NMS + drawKeypoints rings + per-cell L1, and its backward.

Forward (``_forward_kernel``), a persistent grid over tiles of ``OUT_H x OUT_W`` output pixels (whole
weight cells) of one image:

- ``FAST_WEIGHTS``: each program recovers OpenCV's uint8 gray from ``target`` over its tile plus an
  8 px halo (ring 4 + NMS 1 + circle 3) into a small per-program scratch, scores FAST, suppresses
  non-maxima, dilates the keypoints by the drawKeypoints ring, and in the same pass reads pred and
  target once and accumulates, per weight cell, the covered pixels and ``S = sum(m * |pred - target|)``.
  Only those (B, H/p, W/p) partials leave the kernel. The per-image min-normalisation of the weights
  is global over an image's cells, so a small epilogue (``fast_weighted_l1_forward``) finishes it:
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

import functools

import torch
import triton
import triton.language as tl

from kamim_fast._opencv import DRAW_KEYPOINT_RING

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

# Halo of gray around the output pixels: the ring's radius, NMS's 1, the FAST circle's 3.
FAST_HALO = _RING_RADIUS + 1 + 3

# Shipped configurations. BLOCK_W columns hold OUT_W outputs plus the halo (112 of 128 for p <= 16);
# SUB_H rows per step keep 4 pixels per thread at 4 warps, as the FAST kernel (which fits the circle's
# 16 differences in registers without spills). Tiles of 48 output rows: 75% of the staged rows are outputs.
GPU_CONFIG = dict(BLOCK_W=128, SUB_H=4, READ_H=2, FINAL_H=4, OUT_ROWS=48)
NUM_WARPS = 4
PROGRAMS_PER_SM = 8
# The interpreter pays ~100 us per op whatever the tile, so CPU tensors take tall steps.
INTERPRETER_CONFIG = dict(BLOCK_W=128, SUB_H=32, READ_H=32, FINAL_H=32, OUT_ROWS=32)
INTERPRETER_PROGRAMS = 3  # fewer programs than tiles: the persistent loop runs in CI
MAX_FUSED_CELL = 64  # larger or non-power-of-two weight cells take FAST kernel + L1 kernel instead

# Backward: one program per TILE_H x TILE_W pixels of one image, all channels.
TILE_H = 16
TILE_W = 64


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
    for c in range(C):
        p = tl.load(pred + c * p_c, mask=inside, other=0.0).to(tl.float32)
        t = tl.load(target + c * t_c, mask=inside, other=0.0).to(tl.float32)
        l1 += tl.abs(p - t)
        tl.store(signs + c * sign_c, _sign_codes(p - t, SUB, BLOCK_W), mask=sign_mask)
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
                   p_c, t_c, C, inside, signs, H * W4, ROWS, BLOCK_W, sign_mask)
    return inside, l1 * m


@triton.jit
def _forward_kernel(
    pred_ptr, target_ptr, mask_ptr, weight_ptr, signs_ptr, scratch_ptr, l1_out_ptr, cover_out_ptr,
    C, H, W, p_b, p_c, p_h, p_w, t_b, t_c, t_h, t_w, mh, mw, wh, ww, W4,
    tiles_w, tiles_per_image, n_tiles, threshold, m0, m1, m2, sd0, sd1, sd2,
    MASK_PATCH: tl.constexpr, CELL: tl.constexpr, FAST_WEIGHTS: tl.constexpr, RING: tl.constexpr,
    HAS_WEIGHTS: tl.constexpr, BGR: tl.constexpr, HALO: tl.constexpr,
    OUT_H: tl.constexpr, OUT_W: tl.constexpr, BLOCK_W: tl.constexpr, SUB_H: tl.constexpr, FINAL_H: tl.constexpr,
    SH: tl.constexpr,
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
                tp = target_b + yg.to(tl.int64) * t_h + xs * t_w
                pp = pred_b + yg.to(tl.int64) * p_h + xs * p_w
                t0 = tl.load(tp, mask=inside, other=0.0)
                t1 = tl.load(tp + t_c, mask=inside, other=0.0)
                t2 = tl.load(tp + 2 * t_c, mask=inside, other=0.0)
                gray = gray_of(t0, t1, t2, inside, True, BGR, m0, m1, m2, sd0, sd1, sd2)
                tl.store(plane_a + (orow + HALO) * BLOCK_W + oc + HALO, gray.to(tl.uint8), mask=staged)
                signs = signs_ptr + (b.to(tl.int64) * C * H + yg) * W4 + x0 // 4 + kq
                sign_ok = (kq < OUT_W // 4) & (x0 // 4 + kq < W4) & (orow >= 0) & (orow < OUT_H) & (yg < H)
                d0 = tl.where(out, tl.load(pp, mask=out, other=0.0).to(tl.float32) - t0.to(tl.float32), 0.0)
                d1 = tl.where(out, tl.load(pp + p_c, mask=out, other=0.0).to(tl.float32) - t1.to(tl.float32), 0.0)
                d2 = tl.where(out, tl.load(pp + 2 * p_c, mask=out, other=0.0).to(tl.float32) - t2.to(tl.float32), 0.0)
                tl.store(signs, _sign_codes(d0, SH, BLOCK_W), mask=sign_ok)
                tl.store(signs + H * W4, _sign_codes(d1, SH, BLOCK_W), mask=sign_ok)
                tl.store(signs + 2 * H * W4, _sign_codes(d2, SH, BLOCK_W), mask=sign_ok)
                m = _cell_lookup(mask_ptr, b, yg, xs, mh, mw, MASK_PATCH, out)
                m = tl.where(m > 0.0, m, 0.0)  # AMT's thrown patches (-1) count as 0
                col_acc += tl.sum((tl.abs(d0) + tl.abs(d1) + tl.abs(d2)) * m, axis=0)
                done = (r0 + SH) % CELL == 0  # a cell row is complete
                _store_cells(l1_out_ptr, col_acc, b, (y0 + r0) // CELL, x0, wh, ww, done & (r0 >= 0) & (r0 < OUT_H),
                             CELL, OUT_W, BLOCK_W)
                col_acc = tl.where(done, 0.0, col_acc)
            tl.debug_barrier()
            for r0 in range(3, ROWS - 3, SUB_H):  # scores within HALO - 3 of the outputs
                ii = r0 + rows
                yg = y0 - HALO + ii
                valid = ((ii < ROWS - 3) & (jj >= 3) & (jj < BLOCK_W - 3)
                         & (yg >= 3) & (yg < H - 3) & (xg >= 3) & (xg < W - 3))
                score = corner_score(plane_a + ii * BLOCK_W + jj, BLOCK_W, 1, valid)
                tl.store(plane_b + ii * BLOCK_W + jj, tl.where(score >= threshold, score, 0).to(tl.uint8),
                         mask=ii < ROWS - 3)
            tl.debug_barrier()
            for r0 in range(4, ROWS - 4, SUB_H):  # keypoints within the ring's radius of the outputs
                ii = r0 + rows
                region = (ii < ROWS - 4) & (jj >= 4) & (jj < BLOCK_W - 4)
                keep, _ = nms_keep(plane_b + ii * BLOCK_W + jj, BLOCK_W, region)
                tl.store(plane_a + ii * BLOCK_W + jj, keep.to(tl.uint8), mask=region)
            if RING:
                tl.debug_barrier()
                for r0 in range(4, ROWS - 4, SUB_H):  # horizontal runs at the output columns
                    ii = r0 + rows
                    region = (ii < ROWS - 4) & (jj >= HALO) & (jj < HALO + OUT_W)
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
    scale_ptr, signs_ptr, mask_ptr, weight_ptr, grad_pred_ptr, grad_target_ptr,
    C, H, W, W4, mh, mw, wh, ww, tiles_w,
    MASK_PATCH: tl.constexpr, WEIGHT_PATCH: tl.constexpr, HAS_WEIGHTS: tl.constexpr, GRAD_TARGET: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    """grad = g / (sum(m) + eps) / C * w * m * sign(pred - target), from the forward's sign codes."""
    tile = tl.program_id(0)
    b = tl.program_id(1)
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
    for c in range(C):
        code = (tl.load(signs + c * H * W4, mask=inside, other=0).to(tl.int32) >> shift) & 3
        # d|d|/dd = sign(d), 0 at 0 and at NaN as torch.sign
        g = tl.where(code == 1, coef, tl.where(code == 2, -coef, 0.0))
        tl.store(grad_pred_ptr + grad + c * H * W, g.to(grad_pred_ptr.dtype.element_ty), mask=inside)
        if GRAD_TARGET:
            tl.store(grad_target_ptr + grad + c * H * W, (-g).to(grad_target_ptr.dtype.element_ty), mask=inside)


# ---------------------------------------------------------------------------------------------------
# Host launchers. Arguments are checked by the callers (kamim_fast/loss.py, kamim_fast/_ops.py).

def fuses(cell: int) -> bool:
    """Whether FAST weights of ``cell`` px cells are computed inside the loss kernel (powers of two <= 64)."""
    return 1 <= cell <= MAX_FUSED_CELL and cell & (cell - 1) == 0


def packed_width(W: int) -> int:
    """Bytes per row of the 2-bit sign codes: four columns per byte."""
    return (W + 3) // 4


@functools.cache
def _max_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count * PROGRAMS_PER_SM
    return INTERPRETER_PROGRAMS


def _geometry(H: int, W: int, cell: int, fast: bool, config: dict) -> dict:
    """Tile sizes: with FAST, whole cells inside BLOCK_W minus the halo; without, whole BLOCK_W x OUT_ROWS tiles."""
    block_w, final_h = config["BLOCK_W"], config["FINAL_H"]
    if fast:
        halo, out_w, out_h, final_h = FAST_HALO, (block_w - 2 * FAST_HALO) // cell * cell, \
            triton.cdiv(config["OUT_ROWS"], cell) * cell, min(final_h, cell)
    else:
        halo, out_w, out_h = 0, block_w, triton.cdiv(config["OUT_ROWS"], final_h) * final_h
    # SH: rows per step of the pass that reads pred and target with FAST weights; divides the cell.
    return dict(HALO=halo, OUT_W=out_w, OUT_H=out_h, BLOCK_W=block_w, SUB_H=config["SUB_H"], FINAL_H=final_h,
                SH=min(config["READ_H"], cell) if fast else 1,
                tiles_w=triton.cdiv(W, out_w), tiles_h=triton.cdiv(H, out_h))


def _launch_forward(pred, target, mask_grid, mask_patch, weights, cell, fast, ring, threshold, bgr, mean, std,
                    l1_out, cover_out, config):
    B, C, H, W = pred.shape
    g = _geometry(H, W, cell, fast, config)
    tiles_w, tiles_h = g.pop("tiles_w"), g.pop("tiles_h")
    n_tiles = B * tiles_h * tiles_w
    signs = torch.empty((B, C, H, packed_width(W)), dtype=torch.uint8, device=pred.device)
    if n_tiles == 0 or C == 0:
        return signs
    programs = n_tiles if not fast else min(n_tiles, _max_programs(pred.device))
    rows = g["OUT_H"] + 2 * g["HALO"]
    scratch = torch.empty(programs * 2 * rows * g["BLOCK_W"] if fast else 1, dtype=torch.uint8, device=pred.device)
    wh, ww = (weights.shape[1:] if weights is not None else (H // cell, W // cell))
    _forward_kernel[(programs,)](
        pred, target, mask_grid, weights if weights is not None else mask_grid, signs, scratch, l1_out,
        cover_out if cover_out is not None else l1_out,
        C, H, W, *pred.stride(), *target.stride(), mask_grid.shape[1], mask_grid.shape[2], wh, ww, packed_width(W),
        tiles_w, tiles_h * tiles_w, n_tiles, threshold, *mean, *std,
        MASK_PATCH=mask_patch, CELL=cell, FAST_WEIGHTS=fast, RING=ring, HAS_WEIGHTS=weights is not None, BGR=bgr,
        **g, num_warps=NUM_WARPS, enable_fp_fusion=False,  # bit-exact un-normalisation: no FMA contraction
    )
    return signs


def _config(x: torch.Tensor, config: dict | None) -> dict:
    return config if config is not None else GPU_CONFIG if x.is_cuda else INTERPRETER_CONFIG


def weighted_l1_forward(pred, target, mask_grid, weights, mask_patch: int, weight_patch: int, config=None):
    """-> (per-tile fp32 partials of sum(w * m * |pred - target|), packed sign codes (B, C, H, ceil(W/4))).

    mask_grid, weights: contiguous (B, h, w) fp32; weights None means 1. Any weight cell size.
    """
    config = _config(pred, config)
    B, _, H, W = pred.shape
    g = _geometry(H, W, weight_patch if weights is not None else 1, False, config)
    partials = torch.empty(B * g["tiles_h"] * g["tiles_w"], dtype=torch.float32, device=pred.device)
    signs = _launch_forward(pred, target, mask_grid, mask_patch, weights, weight_patch if weights is not None else 1,
                            False, False, 0, False, (0.0,) * 3, (1.0,) * 3, partials, None, config)
    return partials, signs


def fast_weighted_l1_forward(pred, target, mask_grid, mask_patch: int, cell: int, ring: bool, threshold: int,
                             bgr: bool, mean, std, config=None):
    """-> (S, cover, signs): per-cell fp32 sums of m * |pred - target| and of covered pixels (ring) or
    keypoints (count), both (B, H/cell, W/cell), and the packed sign codes. ``cell`` must ``fuses``."""
    assert fuses(cell), cell
    B, _, H, W = pred.shape
    l1 = torch.empty((B, H // cell, W // cell), dtype=torch.float32, device=pred.device)
    cover = torch.empty_like(l1)
    signs = _launch_forward(pred, target, mask_grid, mask_patch, None, cell, True, ring, threshold, bgr, mean, std,
                            l1, cover, _config(pred, config))
    return l1, cover, signs


def weighted_l1_backward(scale, signs, mask_grid, weights, mask_patch: int, weight_patch: int, shape,
                         pred_dtype, target_dtype, grad_target: bool):
    """-> (grad_pred, grad_target or None), contiguous (B, C, H, W). scale: 0-d fp32 g / (sum(m) + eps) / C."""
    B, C, H, W = shape
    grad_pred = torch.empty(shape, dtype=pred_dtype, device=signs.device)
    grad_tgt = torch.empty(shape, dtype=target_dtype, device=signs.device) if grad_target else None
    if grad_pred.numel():
        tiles_w = triton.cdiv(W, TILE_W)
        wh, ww = weights.shape[1:] if weights is not None else (1, 1)
        _backward_kernel[(triton.cdiv(H, TILE_H) * tiles_w, B)](
            scale, signs, mask_grid, weights if weights is not None else mask_grid, grad_pred,
            grad_tgt if grad_tgt is not None else grad_pred,
            C, H, W, packed_width(W), mask_grid.shape[1], mask_grid.shape[2], wh, ww, tiles_w,
            MASK_PATCH=mask_patch, WEIGHT_PATCH=weight_patch, HAS_WEIGHTS=weights is not None,
            GRAD_TARGET=grad_target, TILE_H=TILE_H, TILE_W=TILE_W, num_warps=NUM_WARPS,
        )
    return grad_pred, grad_tgt


def sm90_specs() -> list[dict]:
    """The shipped configurations, for the H100 compile check (benchmarks/ptxas_report.py)."""
    ints = ("C", "H", "W", "p_b", "p_c", "p_h", "p_w", "t_b", "t_c", "t_h", "t_w", "mh", "mw", "wh", "ww", "W4",
            "tiles_w", "tiles_per_image", "n_tiles", "threshold")
    floats = ("m0", "m1", "m2", "sd0", "sd1", "sd2")
    specs = []
    for pred_type in ("*fp32", "*bf16"):
        for fast, ring, cell in ((True, True, 8), (True, False, 16), (False, False, 8)):
            geometry = _geometry(192, 192, cell, fast, GPU_CONFIG)
            geometry.pop("tiles_w"), geometry.pop("tiles_h")
            const = dict(MASK_PATCH=16, CELL=cell, FAST_WEIGHTS=fast, RING=ring, HAS_WEIGHTS=not fast, BGR=False,
                         **geometry)
            sig = dict(pred_ptr=pred_type, target_ptr="*fp32", mask_ptr="*fp32", weight_ptr="*fp32", signs_ptr="*u8",
                       scratch_ptr="*u8", l1_out_ptr="*fp32", cover_out_ptr="*fp32", **{k: "i32" for k in ints},
                       **{k: "fp32" for k in floats}, **{k: "constexpr" for k in const})
            kind = ("fast-ring" if ring else "fast-count") if fast else "weights"
            specs.append(dict(name=f"mim_loss_fwd[{pred_type[1:]},{kind},p={cell}]", fn=_forward_kernel,
                              signature=sig, constexprs=const, num_warps=NUM_WARPS))
        bwd_const = dict(MASK_PATCH=16, WEIGHT_PATCH=8, HAS_WEIGHTS=True, GRAD_TARGET=False, TILE_H=TILE_H,
                         TILE_W=TILE_W)
        bwd = dict(scale_ptr="*fp32", signs_ptr="*u8", mask_ptr="*fp32", weight_ptr="*fp32", grad_pred_ptr=pred_type,
                   grad_target_ptr="*fp32", **{k: "i32" for k in ("C", "H", "W", "W4", "mh", "mw", "wh", "ww", "tiles_w")},
                   **{k: "constexpr" for k in bwd_const})
        specs.append(dict(name=f"mim_loss_bwd[{pred_type[1:]}]", fn=_backward_kernel, signature=bwd,
                          constexprs=bwd_const, num_warps=NUM_WARPS))
    return specs
