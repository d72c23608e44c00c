"""KAMIM's weighted masked L1 in one pass: FAST + NMS + drawKeypoints rings + per-cell L1, and its backward.

Two forward kernels, each over tiles of ``OUT_H x OUT_W`` output pixels of one image:

- ``_fused_forward_kernel`` (FAST weights), a persistent grid: each program recovers OpenCV's uint8 gray from
  ``target`` over its tile plus an 8 px halo (ring 4 + NMS 1 + circle 3) into a small per-program scratch, scores
  FAST, suppresses non-maxima, dilates the keypoints by the drawKeypoints ring, and in the same pass reads pred
  and target once and accumulates, per weight cell, the covered pixels and ``S = sum(m * |pred - target|)``.
  Only those (B, H/p, W/p) partials leave the kernel. The per-image min-normalisation of the weights is global
  over an image's cells, so a small epilogue (the op's) finishes it: ``w = exp(clip(d / T)) / min(...)`` and
  ``loss = sum(w * S) / (sum(m) + eps) / C``.
- ``_l1_forward_kernel`` (given weights or none), a tile per program: the weight (a tensor, or 1) is looked up
  per pixel and each tile writes one partial.

An edit to one recompiles only its own configurations. Both write 2-bit codes of ``sign(pred - target)``
(1 positive, 2 negative, 0 zero or NaN, as ``torch.sign``), four per byte, so the backward
(``_backward_kernel``) reads 0.25 B per element instead of pred and target (6 B for bf16 + fp32): 8.5 B per
element for forward + backward against 14 B with a recompute. All reductions are per-tile or per-cell partials
summed in a fixed order: no atomics, deterministic.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from kamim_fast._opencv import DRAW_KEYPOINT_RING, FAST_NMS_RADIUS, FAST_RADIUS

from ._launch import LossConfig, int64_strides, launch, persistent_programs, pick
from .fast_tile import corner_score, gray_of, nms_keep

# ---------------------------------------------------------------------------------------------------
# The drawKeypoints ring as horizontal runs: each stencil row is one of a few column patterns, so the
# dilation is a horizontal pass (one bit per pattern: any keypoint under it) and a vertical pass (OR of
# the 9 rows' bits): 9 + 9 scratch loads per pixel instead of 48.
_RING_RADIUS = len(DRAW_KEYPOINT_RING) // 2
_PATTERNS = sorted({row for row in DRAW_KEYPOINT_RING if "#" in row})
assert len(_PATTERNS) <= 8, "the pattern bits must fit a uint8 scratch byte"
assert len(DRAW_KEYPOINT_RING) // 2 == 4, "_ring_bits shifts words by up to 4 bytes: radius 4"
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
GPU_CONFIG = LossConfig(BLOCK_W=128, SUB_H=4, READ_H=4, FINAL_H=4, OUT_ROWS=48, num_warps=4, maxnreg=168)
# The interpreter pays ~100 us per op whatever the tile, so CPU tensors take tall steps.
INTERPRETER_CONFIG = LossConfig(BLOCK_W=128, SUB_H=32, READ_H=32, FINAL_H=32, OUT_ROWS=32, num_warps=4)
# Per (weight cell, density), what differs from GPU_CONFIG with FAST weights (ptxas report, issue 12):
# 32 px cells spilled 12-32 bytes at 168 registers with 4-row steps of the pass that reads pred and target
# (sm_80 and the generic sm_90a kernel, Triton 3.8); 2-row steps do not. (Without FAST weights see
# GPU_L1_OVERRIDES.) maxnreg: see FastConfig.maxnreg; 168 leaves every loss kernel without spills on
# sm_80, sm_89 and sm_90a (Triton 3.6 and 3.8).
GPU_CELL_OVERRIDES = {(32, d): dict(READ_H=2) for d in ("ring", "count")}
# Without FAST weights the kernel is one pass of FINAL_H x BLOCK_W steps: 4 x 128 at 4 warps puts 4 adjacent
# pixels in each thread, the same layout for every tensor of the step (a 16-byte load of fp32 target, an
# 8-byte one of bf16 pred; the 4 sign codes are the thread's byte), so no layout conversion sits between
# loads, arithmetic and stores. The 2 x 128 steps at 8 warps it replaced held 1 pixel per thread, and
# packing the codes then took warp shuffles and a shared-memory round trip (71.7 -> 21.3 SASS per
# element, bf16). 8 x 128 steps: about 2 instructions fewer per element, but 64-157 registers (64-88
# here) and a layout conversion of pred (8 bf16 per 16-byte vector against 4 fp32 of target).
GPU_L1_OVERRIDES = dict(FINAL_H=4, num_warps=4)
MAX_FUSED_CELL = 64  # larger or non-power-of-two weight cells take FAST kernel + L1 kernel instead

# Backward: one program per TILE_H x TILE_W pixels of one image, all channels.
TILE_H = 16
TILE_W = 64
BACKWARD_WARPS = 4
BACKWARD_MAXNREG = 168  # see FastConfig.maxnreg (Triton 3.6's generic sm_90a backward spilled at 64 without it)


@triton.jit
def _cell_lookup(ptr, b, yy, xx, h, w, PATCH: tl.constexpr, mask):
    """Value of a (B, h, w) float32 grid at the cell holding pixel (yy, xx) of image b."""
    return tl.load(ptr + (b.to(tl.int64) * h + yy // PATCH) * w + xx // PATCH, mask=mask, other=0.0)


@triton.jit
def _ring_rows(bits_ptrs, stride_h, REP: tl.constexpr):
    """Whether the drawKeypoints ring of any keypoint covers each pixel: OR over the 9 stencil rows of
    the horizontal-run bits ``_ring_bits`` left in the scratch (non-zero: covered). With ``REP`` 0x01010101
    the pointers are uint32 words of 4 pixels (a byte each) and the row masks are repeated in every byte.
    Unmasked loads (two instructions fewer per row than masked ones): all 9 rows must be addressable."""
    covered = tl.zeros(bits_ptrs.shape, dtype=bits_ptrs.dtype.element_ty)
    for dy in tl.static_range(2 * _R + 1):
        if ((_RING_ROW_BITS >> (8 * dy)) & 255) != 0:
            covered = covered | (tl.load(bits_ptrs + (dy - _R) * stride_h) & (((_RING_ROW_BITS >> (8 * dy)) & 255) * REP))
    return covered


@triton.jit
def _ring_bits(kp_words):
    """Bit j of each byte: a keypoint lies under horizontal pattern j centred on that byte's pixel. SWAR on
    4 pixels at once: ``kp_words`` are uint32 words of 4 adjacent keypoints (0/1 bytes, byte k pixel
    4q + k); the words either side must be addressable. The keypoint o columns away (|o| <= 4) is the
    word shifted by o bytes, filled from the neighbour word: 3 loads and ~25 shifts and ORs per 4 pixels,
    where one pixel at a time took 9 loads and ~20 ORs per pixel."""
    cur = tl.load(kp_words)
    prev = tl.load(kp_words - 1)
    nxt = tl.load(kp_words + 1)
    kp = ()
    for dx in tl.static_range(2 * _R + 1):
        if dx == 0:
            kp = kp + (prev,)
        elif dx < _R:  # o = dx - R < 0: byte k takes byte k + o of cur, or byte k + o + 4 of prev
            kp = kp + ((cur << (8 * (_R - dx))) | (prev >> (32 - 8 * (_R - dx))),)
        elif dx == _R:
            kp = kp + (cur,)
        elif dx < 2 * _R:  # o > 0: byte k + o of cur, or byte k + o - 4 of nxt
            kp = kp + ((cur >> (8 * (dx - _R))) | (nxt << (32 - 8 * (dx - _R))),)
        else:
            kp = kp + (nxt,)
    bits = tl.zeros(cur.shape, dtype=cur.dtype)
    for j in tl.static_range(_RING_PATTERNS):
        run = tl.zeros(cur.shape, dtype=cur.dtype)
        for dx in tl.static_range(2 * _R + 1):
            if ((_RING_PATTERN_COLS >> (9 * j + dx)) & 1) != 0:
                run = run | kp[dx]
        bits = bits | (run << j)
    return bits


@triton.jit
def _nonzero_bytes(x):
    """How many of a uint32 word's 4 bytes are non-zero (SWAR: a byte's top bit after adding 0x7F to its
    low 7 bits, or its own top bit)."""
    t = ((x & 0x7F7F7F7F) + 0x7F7F7F7F) | x
    return (((t >> 7) & 0x01010101) * 0x01010101) >> 24


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
    for c in tl.static_range(C):  # pointer steps per channel: no c * stride products to overflow int32
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
    # the row's bound folds into the columns' (a scalar comparison inside a mask is int32, not a mask, in
    # Triton 3.9's interpreter)
    tl.store(ptr + (b.to(tl.int64) * wh + cy) * ww + cx, total,
             mask=ok & (cells < OUT_W // CELL) & (cx < tl.where(cy < wh, ww, 0)))


@triton.jit
def _masked_l1_rows(pred_b, target_b, mask_ptr, signs_ptr, b, yo, x0, xo, kq, C, H, W, W4,
                    p_c, p_h, p_w, t_c, t_h, t_w, mh, mw,
                    PATCH_SIZE: tl.constexpr, OUT_W: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """(inside, m * sum_c |pred - target|) on output rows ``yo`` (ROWS x 1) and columns ``xo`` (1 x BLOCK_W,
    from x0); stores the rows' sign codes."""
    inside = (xo - x0 < OUT_W) & (yo < H) & (xo < W)
    m = _cell_lookup(mask_ptr, b, yo, xo, mh, mw, PATCH_SIZE, inside)
    m = tl.where(m > 0.0, m, 0.0)  # AMT's thrown patches (-1) count as 0
    signs = signs_ptr + (b.to(tl.int64) * C * H + yo) * W4 + x0 // 4 + kq
    sign_mask = (kq < OUT_W // 4) & (x0 // 4 + kq < W4) & (yo < H)
    l1 = _l1_signs(pred_b + yo.to(tl.int64) * p_h + xo * p_w, target_b + yo.to(tl.int64) * t_h + xo * t_w,
                   p_c, t_c, C, inside, signs, tl.cast(H, tl.int64) * W4, ROWS, BLOCK_W, sign_mask)
    return inside, l1 * m


@triton.jit
def _fused_forward_kernel(
    # pred and target (B, C, H, W), any strides (elements); C is a constexpr (one compile per channel count:
    # the channels unroll, so their loads are in flight together; LLVM unrolled a runtime loop 4x with a
    # remainder loop, which the SASS model cannot weight)
    pred_ptr, p_b, p_c, p_h, p_w, target_ptr, t_b, t_c, t_h, t_w, C: tl.constexpr, H, W,
    # the mask's (B, mh, mw) fp32 cell grid (contiguous); (wh, ww): the weight cells' grid the partials go to
    mask_ptr, mh, mw, wh, ww,
    # outputs: 2-bit sign codes (B, C, H, W4) with W4 = ceil(W / 4); the per-cell partial sums of
    # m * |pred - target| and the per-cell covered pixels (ring) or keypoints (count)
    signs_ptr, W4, l1_out_ptr, cover_out_ptr,
    # the per-program scratch (2 planes of ROWS x BLOCK_W bytes) and the persistent grid's tiles
    scratch_ptr, tiles_w, tiles_per_image, n_tiles,
    # FAST threshold; target's un-normalisation round((x * sd + m) * 255) per channel
    threshold, m0, m1, m2, sd0, sd1, sd2,
    # cell sizes, the density (ring or count), channel order
    PATCH_SIZE: tl.constexpr, WEIGHT_PATCH_SIZE: tl.constexpr, DENSITY: tl.constexpr, CHANNEL_ORDER: tl.constexpr,
    # tile geometry (_geometry): halo, outputs per tile, staged columns, rows per step of each pass
    HALO: tl.constexpr, OUT_H: tl.constexpr, OUT_W: tl.constexpr, BLOCK_W: tl.constexpr, SUB_H: tl.constexpr,
    FINAL_H: tl.constexpr, SH: tl.constexpr,
    # offsets in int64: pred or target views whose row or column offsets can pass int32 (_launch.int64_strides)
    INT64_STRIDES: tl.constexpr,
):
    # Block coordinates (i, j) cover image rows y0 - HALO + i and columns x0 - HALO + j.
    ROWS: tl.constexpr = OUT_H + 2 * HALO
    pid = tl.program_id(0)
    if INT64_STRIDES:
        p_h = tl.cast(p_h, tl.int64)
        p_w = tl.cast(p_w, tl.int64)
        t_h = tl.cast(t_h, tl.int64)
        t_w = tl.cast(t_w, tl.int64)
    # [margin][plane a][plane b] per program and a last margin (the launcher allocates it): the unmasked
    # circle and NMS loads of lanes outside the block stay in memory that no program writes.
    MARGIN: tl.constexpr = (SUB_H + 4) * BLOCK_W
    plane_a = scratch_ptr + MARGIN + pid.to(tl.int64) * (2 * ROWS * BLOCK_W + MARGIN)  # gray, then keypoints
    plane_b = plane_a + ROWS * BLOCK_W  # scores, then ring bits
    words_a = plane_a.to(tl.pointer_type(tl.uint32))  # the planes as uint32 words of 4 pixels
    words_b = plane_b.to(tl.pointer_type(tl.uint32))
    wq = tl.arange(0, BLOCK_W // 4)[None, :]
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
        tl.debug_barrier()  # the previous tile's final pass is done with the scratch
        # Pass 1 reads target and pred once: gray of the whole block (halo included) into the scratch,
        # and for the output pixels the masked L1 per cell and the sign codes. Register column j is
        # output column j, except the last HALO, which wrap round to the left halo (-HALO..-1), so
        # cells line up with the tile while every staged column is covered. The wrap falls on a
        # multiple of 4, so each aligned group of 4 columns is contiguous (the hints say so): 4 adjacent
        # pixels per thread, vector loads and stores, and a thread's 4 sign codes are one byte.
        oc = tl.where(jj < BLOCK_W - HALO, jj, jj - BLOCK_W)
        xs = tl.max_contiguous(tl.multiple_of(x0 + oc, [1, 4]), [1, 4])
        gray_cols = tl.max_contiguous(tl.multiple_of(oc + HALO, [1, 4]), [1, 4])  # in the scratch
        col_in = (xs >= 0) & (xs < W)
        col_out = col_in & (oc >= 0) & (oc < OUT_W)
        # the halo rows above and below the outputs: gray only
        for r0 in range(0, 2 * HALO, SUB_H):
            hrow = r0 + rows
            orow = tl.where(hrow < HALO, hrow - HALO, OUT_H - HALO + hrow)
            yg = y0 + orow
            inside = (hrow < 2 * HALO) & (yg >= 0) & (yg < H) & col_in
            tp0 = target_b + yg.to(tl.int64) * t_h + xs * t_w
            tp1 = tp0 + t_c  # channel steps on the pointers: no 2 * stride to overflow int32
            gray = gray_of(tl.load(tp0, mask=inside, other=0.0), tl.load(tp1, mask=inside, other=0.0),
                           tl.load(tp1 + t_c, mask=inside, other=0.0), inside, True, CHANNEL_ORDER == "bgr",
                           m0, m1, m2, sd0, sd1, sd2)
            tl.store(plane_a + (orow + HALO) * BLOCK_W + gray_cols, gray.to(tl.uint8), mask=hrow < 2 * HALO)
        # the output rows, a cell row at a time: L1 summed per thread over the cell row, then per cell
        for cell_row in range(0, OUT_H // WEIGHT_PATCH_SIZE):
            acc = tl.zeros((SH, BLOCK_W), dtype=tl.float32)
            for r0 in range(0, WEIGHT_PATCH_SIZE, SH):
                orow = cell_row * WEIGHT_PATCH_SIZE + r0 + srows
                yg = y0 + orow
                inside = (yg < H) & col_in
                out = inside & col_out
                tp0 = target_b + yg.to(tl.int64) * t_h + xs * t_w
                pp0 = pred_b + yg.to(tl.int64) * p_h + xs * p_w
                tp1 = tp0 + t_c
                pp1 = pp0 + p_c
                t0 = tl.load(tp0, mask=inside, other=0.0)
                t1 = tl.load(tp1, mask=inside, other=0.0)
                t2 = tl.load(tp1 + t_c, mask=inside, other=0.0)
                gray = gray_of(t0, t1, t2, inside, True, CHANNEL_ORDER == "bgr", m0, m1, m2, sd0, sd1, sd2)
                tl.store(plane_a + (orow + HALO) * BLOCK_W + gray_cols, gray.to(tl.uint8))
                signs = signs_ptr + (b.to(tl.int64) * C * H + yg) * W4 + x0 // 4 + kq
                sign_ok = (kq < OUT_W // 4) & (x0 // 4 + kq < W4) & (yg < H)
                d0 = tl.load(pp0, mask=out, other=0.0).to(tl.float32) - t0.to(tl.float32)
                d1 = tl.load(pp1, mask=out, other=0.0).to(tl.float32) - t1.to(tl.float32)
                d2 = tl.load(pp1 + p_c, mask=out, other=0.0).to(tl.float32) - t2.to(tl.float32)
                signs1 = signs + sign_c
                tl.store(signs, _sign_codes(d0, SH, BLOCK_W), mask=sign_ok)
                tl.store(signs1, _sign_codes(d1, SH, BLOCK_W), mask=sign_ok)
                tl.store(signs1 + sign_c, _sign_codes(d2, SH, BLOCK_W), mask=sign_ok)
                m = _cell_lookup(mask_ptr, b, yg, xs, mh, mw, PATCH_SIZE, out)
                m = tl.where(m > 0.0, m, 0.0)  # AMT's thrown patches (-1) count as 0
                # where(out): the halo columns' differences (pred 0 there) must not reach the sums
                acc += tl.where(out, (tl.abs(d0) + tl.abs(d1) + tl.abs(d2)) * m, 0.0)
            _store_cells(l1_out_ptr, tl.sum(acc, axis=0), b, y0 // WEIGHT_PATCH_SIZE + cell_row, x0, wh, ww,
                         cell_row >= 0, WEIGHT_PATCH_SIZE, OUT_W, BLOCK_W)
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
            keep, _ = nms_keep(plane_b + ii * BLOCK_W + jj, BLOCK_W)
            tl.store(plane_a + ii * BLOCK_W + jj, keep.to(tl.uint8), mask=region)
        if DENSITY == "ring":
            tl.debug_barrier()
            for r0 in range(_KP_LO, ROWS - _KP_LO, SUB_H):  # horizontal runs at the output columns
                ii = r0 + rows
                region = (ii < ROWS - _KP_LO) & (wq >= HALO // 4) & (wq < (HALO + OUT_W) // 4)
                bits = _ring_bits(words_a + ii * (BLOCK_W // 4) + wq)
                tl.store(words_b + ii * (BLOCK_W // 4) + wq, bits, mask=region)
        tl.debug_barrier()
        # The final pass: output pixels only, indexed from the tile's corner (a multiple of WEIGHT_PATCH_SIZE and 4).
        xo = x0 + jj
        if WEIGHT_PATCH_SIZE >= 4:
            # The last pass, 4 pixels (a uint32 word of the scratch) at a time: covered pixels (or
            # keypoints) per cell. Bytes past the image's right edge are masked off the word.
            n_in = tl.minimum(tl.maximum(W - (x0 + 4 * wq), 0), 4)
            n_in = tl.where(wq < OUT_W // 4, n_in, 0)
            all_bytes = tl.full(wq.shape, 0xFFFFFFFF, tl.uint32)
            in_bytes = tl.where(n_in > 0, all_bytes >> (32 - 8 * n_in).to(tl.uint32), 0)
            for cell_row in range(0, OUT_H // WEIGHT_PATCH_SIZE):
                count = tl.zeros((FINAL_H, BLOCK_W // 4), dtype=tl.int32)
                for r0 in range(0, WEIGHT_PATCH_SIZE, FINAL_H):
                    io = cell_row * WEIGHT_PATCH_SIZE + r0 + frows  # output row within the tile
                    iw = (HALO + io) * (BLOCK_W // 4) + HALO // 4 + wq  # its words in the scratch
                    if DENSITY == "ring":
                        cover = _ring_rows(words_b + iw, BLOCK_W // 4, 0x01010101)
                    else:
                        cover = tl.load(words_a + iw)
                    cover = cover & tl.where(y0 + io < H, in_bytes, 0)
                    count += _nonzero_bytes(cover).to(tl.int32)
                per_word = tl.sum(count, axis=0).to(tl.float32)
                total = tl.sum(tl.reshape(per_word, (BLOCK_W // WEIGHT_PATCH_SIZE, WEIGHT_PATCH_SIZE // 4)), axis=1)
                cells = tl.arange(0, BLOCK_W // WEIGHT_PATCH_SIZE)
                cx = x0 // WEIGHT_PATCH_SIZE + cells
                cy = y0 // WEIGHT_PATCH_SIZE + cell_row
                tl.store(cover_out_ptr + (b.to(tl.int64) * wh + cy) * ww + cx, total,
                         mask=(cells < OUT_W // WEIGHT_PATCH_SIZE) & (cx < tl.where(cy < wh, ww, 0)))
        else:  # the last pass for 1 and 2 px cells, a pixel at a time
            for cell_row in range(0, OUT_H // WEIGHT_PATCH_SIZE):
                cover_acc = tl.zeros((FINAL_H, BLOCK_W), dtype=tl.float32)
                for r0 in range(0, WEIGHT_PATCH_SIZE, FINAL_H):
                    io = cell_row * WEIGHT_PATCH_SIZE + r0 + frows  # output row within the tile
                    inside = (jj < OUT_W) & (y0 + io < H) & (xo < W)
                    ib = (HALO + io) * BLOCK_W + HALO + jj  # the same pixels in the scratch
                    if DENSITY == "ring":
                        cover = (_ring_rows(plane_b + ib, BLOCK_W, 1) != 0) & inside
                    else:
                        cover = tl.load(plane_a + ib, mask=inside, other=0) != 0
                    cover_acc += cover.to(tl.float32)
                _store_cells(cover_out_ptr, tl.sum(cover_acc, axis=0), b, y0 // WEIGHT_PATCH_SIZE + cell_row, x0, wh, ww,
                             cell_row >= 0,
                             WEIGHT_PATCH_SIZE, OUT_W, BLOCK_W)


@triton.jit
def _l1_forward_kernel(
    # pred and target (B, C, H, W), any strides (elements); C is a constexpr (the channels unroll)
    pred_ptr, p_b, p_c, p_h, p_w, target_ptr, t_b, t_c, t_h, t_w, C: tl.constexpr, H, W,
    # the mask's (B, mh, mw) and the weights' (B, wh, ww) fp32 cell grids (contiguous); weight_ptr is read only
    # with HAS_WEIGHTS
    mask_ptr, mh, mw, weight_ptr, wh, ww,
    # outputs: 2-bit sign codes (B, C, H, W4) with W4 = ceil(W / 4); one partial sum of m * w * |pred - target|
    # per tile
    signs_ptr, W4, l1_out_ptr,
    # the tiles (one per program)
    tiles_w, tiles_per_image, n_tiles,
    # cell sizes, whether weights are given
    PATCH_SIZE: tl.constexpr, WEIGHT_PATCH_SIZE: tl.constexpr, HAS_WEIGHTS: tl.constexpr,
    # tile geometry (_geometry): OUT_H x OUT_W outputs per tile (OUT_W = BLOCK_W), FINAL_H rows per step
    OUT_H: tl.constexpr, OUT_W: tl.constexpr, BLOCK_W: tl.constexpr, FINAL_H: tl.constexpr,
    # offsets in int64: pred or target views whose row or column offsets can pass int32 (_launch.int64_strides)
    INT64_STRIDES: tl.constexpr,
):
    pid = tl.program_id(0)
    if INT64_STRIDES:
        p_h = tl.cast(p_h, tl.int64)
        p_w = tl.cast(p_w, tl.int64)
        t_h = tl.cast(t_h, tl.int64)
        t_w = tl.cast(t_w, tl.int64)
    jj = tl.arange(0, BLOCK_W)[None, :]
    frows = tl.arange(0, FINAL_H)[:, None]
    kq = tl.arange(0, BLOCK_W // 4)[None, :]
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        b = tile // tiles_per_image
        t = tile - b * tiles_per_image
        ty = t // tiles_w
        y0 = ty * OUT_H
        x0 = (t - ty * tiles_w) * OUT_W
        pred_b = pred_ptr + b.to(tl.int64) * p_b
        target_b = target_ptr + b.to(tl.int64) * t_b
        xo = x0 + jj
        tile_sum = tl.zeros((FINAL_H, BLOCK_W), dtype=tl.float32)
        for r0 in range(0, OUT_H, FINAL_H):
            yo = y0 + r0 + frows
            inside, l1 = _masked_l1_rows(pred_b, target_b, mask_ptr, signs_ptr, b, yo, x0, xo, kq,
                                         C, H, W, W4, p_c, p_h, p_w, t_c, t_h, t_w, mh, mw,
                                         PATCH_SIZE, OUT_W, FINAL_H, BLOCK_W)
            if HAS_WEIGHTS:
                l1 = l1 * _cell_lookup(weight_ptr, b, yo, xo, wh, ww, WEIGHT_PATCH_SIZE, inside)
            tile_sum += l1
        tl.store(l1_out_ptr + tile, tl.sum(tl.sum(tile_sum, axis=1), axis=0))


@triton.jit
def _backward_kernel(
    # 0-d fp32 g / (sum(m) + eps) / C; the forward's 2-bit sign codes (B, C, H, W4)
    scale_ptr, signs_ptr, W4,
    # the mask's (B, mh, mw) and the weights' (B, wh, ww) fp32 cell grids; weights read with HAS_WEIGHTS
    mask_ptr, mh, mw, weight_ptr, wh, ww,
    # outputs, contiguous (B, C, H, W); grad_target written with GRAD_TARGET
    grad_pred_ptr, grad_target_ptr, C: tl.constexpr, H, W,
    # the grid is (B, tiles down, tiles across) of TILE_H x TILE_W pixels: the batch on grid x (no 65,535
    # cap), and no integer divisions to find a program's tile
    PATCH_SIZE: tl.constexpr, WEIGHT_PATCH_SIZE: tl.constexpr, HAS_WEIGHTS: tl.constexpr, GRAD_TARGET: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    """grad = g / (sum(m) + eps) / C * w * m * sign(pred - target), from the forward's sign codes."""
    b = tl.program_id(0)
    yy = tl.program_id(1) * TILE_H + tl.arange(0, TILE_H)[:, None]
    x0 = tl.program_id(2) * TILE_W
    xx = x0 + tl.arange(0, TILE_W)[None, :]
    inside = (yy < H) & (xx < W)
    m = _cell_lookup(mask_ptr, b, yy, xx, mh, mw, PATCH_SIZE, inside)
    coef = tl.where(m > 0.0, m, 0.0) * tl.load(scale_ptr)
    if HAS_WEIGHTS:
        coef = coef * _cell_lookup(weight_ptr, b, yy, xx, wh, ww, WEIGHT_PATCH_SIZE, inside)
    # The sign codes of a row's 4 * Q pixels are Q packed bytes, loaded once per byte and unpacked in
    # registers: code k of byte q is pixel 4q + k (join(join(c0, c2), join(c1, c3)) orders them so).
    kq = x0 // 4 + tl.arange(0, TILE_W // 4)[None, :]
    signs = signs_ptr + (b.to(tl.int64) * C * H + yy) * W4 + kq
    packed_in = (yy < H) & (kq < W4)
    # the gradient's two non-zero values, in the output dtypes once (a cast of the same value as before)
    pos_p = coef.to(grad_pred_ptr.dtype.element_ty)
    neg_p = (-coef).to(grad_pred_ptr.dtype.element_ty)
    pos_t = (-coef).to(grad_target_ptr.dtype.element_ty)
    neg_t = coef.to(grad_target_ptr.dtype.element_ty)
    grad = b.to(tl.int64) * C * H * W + yy.to(tl.int64) * W + xx  # grads are contiguous (B, C, H, W)
    gp = grad_pred_ptr + grad
    gt = grad_target_ptr + grad
    sign_c = tl.cast(H, tl.int64) * W4  # channel strides, int64: pointer steps, no c * H * W products
    grad_c = tl.cast(H, tl.int64) * W
    for c in tl.static_range(C):
        packed = tl.load(signs, mask=packed_in, other=0).to(tl.int32)
        # code 1 (positive) is bit 2k of byte q, code 2 (negative) bit 2k + 1: one bit test each
        positive = tl.reshape(tl.join(tl.join(packed & 1, packed & 16), tl.join(packed & 4, packed & 64)),
                              (TILE_H, TILE_W)) != 0
        negative = tl.reshape(tl.join(tl.join(packed & 2, packed & 32), tl.join(packed & 8, packed & 128)),
                              (TILE_H, TILE_W)) != 0
        # d|d|/dd = sign(d), 0 at 0 and at NaN as torch.sign
        tl.store(gp, tl.where(positive, pos_p, tl.where(negative, neg_p, 0.0)), mask=inside)
        if GRAD_TARGET:
            tl.store(gt, tl.where(positive, pos_t, tl.where(negative, neg_t, 0.0)), mask=inside)
        signs += sign_c
        gp += grad_c
        gt += grad_c


# ---------------------------------------------------------------------------------------------------
# Host launchers. Arguments are checked at the op boundary (kamim_fast/ops/); the launchers assert only what it
# guarantees.

def fuses(weight_patch_size: int) -> bool:
    """Whether FAST weights of ``weight_patch_size`` px cells are computed inside the loss kernel (powers of
    two <= 64)."""
    return 1 <= weight_patch_size <= MAX_FUSED_CELL and weight_patch_size & (weight_patch_size - 1) == 0


def packed_width(W: int) -> int:
    """Bytes per row of the 2-bit sign codes: four columns per byte."""
    return (W + 3) // 4


def _tuned(config: LossConfig, weight_patch_size: int, fast: bool, density: str) -> LossConfig:
    """GPU_CONFIG with the per-cell overrides above (other configs as given)."""
    if config != GPU_CONFIG:
        return config
    if not fast:
        return dataclasses.replace(config, **GPU_L1_OVERRIDES)
    return dataclasses.replace(config, **GPU_CELL_OVERRIDES.get((weight_patch_size, density), {}))


def _geometry(H: int, W: int, weight_patch_size: int, fast: bool, config: LossConfig) -> dict:
    """Tile sizes: with FAST, whole cells inside BLOCK_W minus the halo; without, whole BLOCK_W x OUT_ROWS tiles."""
    block_w, final_h = config.BLOCK_W, config.FINAL_H
    if fast:
        cell = weight_patch_size
        halo, out_w, out_h, final_h = FAST_HALO, (block_w - 2 * FAST_HALO) // cell * cell, \
            triton.cdiv(config.OUT_ROWS, cell) * cell, min(final_h, cell)
    else:
        halo, out_w, out_h = 0, block_w, triton.cdiv(config.OUT_ROWS, final_h) * final_h
    # SH: rows per step of the pass that reads pred and target with FAST weights; divides the cell.
    return dict(HALO=halo, OUT_W=out_w, OUT_H=out_h, BLOCK_W=block_w, SUB_H=config.SUB_H, FINAL_H=final_h,
                SH=min(config.READ_H, weight_patch_size) if fast else 1,
                tiles_w=triton.cdiv(W, out_w), tiles_h=triton.cdiv(H, out_h))


def _strides(pred, target) -> dict:
    p_b, p_c, p_h, p_w = pred.stride()
    t_b, t_c, t_h, t_w = target.stride()
    H, W = pred.shape[-2:]
    return dict(pred_ptr=pred, p_b=p_b, p_c=p_c, p_h=p_h, p_w=p_w, target_ptr=target, t_b=t_b, t_c=t_c, t_h=t_h,
                t_w=t_w, INT64_STRIDES=int64_strides((H, p_h), (W, p_w), (H, t_h), (W, t_w)))


def _fused_args(pred, target, mask_grid, patch_size, weight_patch_size, density, threshold, channel_order, mean, std,
                signs, l1_out, cover_out, scratch, config: LossConfig) -> dict:
    """The fused forward kernel's arguments, by name (its config tuned per cell and density)."""
    B, C, H, W = pred.shape
    g = _geometry(H, W, weight_patch_size, True, _tuned(config, weight_patch_size, True, density))
    tiles_w, tiles_h = g.pop("tiles_w"), g.pop("tiles_h")
    return dict(**_strides(pred, target), C=C, H=H, W=W,
                mask_ptr=mask_grid, mh=mask_grid.shape[1], mw=mask_grid.shape[2],
                wh=H // weight_patch_size, ww=W // weight_patch_size,
                signs_ptr=signs, W4=packed_width(W), l1_out_ptr=l1_out, cover_out_ptr=cover_out,
                scratch_ptr=scratch, tiles_w=tiles_w, tiles_per_image=tiles_h * tiles_w, n_tiles=B * tiles_h * tiles_w,
                threshold=threshold, m0=mean[0], m1=mean[1], m2=mean[2], sd0=std[0], sd1=std[1], sd2=std[2],
                PATCH_SIZE=patch_size, WEIGHT_PATCH_SIZE=weight_patch_size, DENSITY=density,
                CHANNEL_ORDER=channel_order, **g)


def _l1_args(pred, target, mask_grid, patch_size, weights, weight_patch_size, signs, l1_out,
             config: LossConfig) -> dict:
    """The L1 forward kernel's arguments, by name: weights None (1) or (B, H/p, W/p) of p = weight_patch_size."""
    B, C, H, W = pred.shape
    g = _geometry(H, W, weight_patch_size, False, _tuned(config, weight_patch_size, False, "ring"))
    tiles_w, tiles_h = g["tiles_w"], g["tiles_h"]
    wh, ww = weights.shape[1:] if weights is not None else (H // weight_patch_size, W // weight_patch_size)
    return dict(**_strides(pred, target), C=C, H=H, W=W,
                mask_ptr=mask_grid, mh=mask_grid.shape[1], mw=mask_grid.shape[2],
                weight_ptr=weights if weights is not None else mask_grid, wh=wh, ww=ww,
                signs_ptr=signs, W4=packed_width(W), l1_out_ptr=l1_out,
                tiles_w=tiles_w, tiles_per_image=tiles_h * tiles_w, n_tiles=B * tiles_h * tiles_w,
                PATCH_SIZE=patch_size, WEIGHT_PATCH_SIZE=weight_patch_size, HAS_WEIGHTS=weights is not None,
                OUT_H=g["OUT_H"], OUT_W=g["OUT_W"], BLOCK_W=g["BLOCK_W"], FINAL_H=g["FINAL_H"])


def _signs(pred: torch.Tensor) -> torch.Tensor:
    B, C, H, W = pred.shape
    return torch.empty((B, C, H, packed_width(W)), dtype=torch.uint8, device=pred.device)


def weighted_mim_loss_forward(pred, target, mask_grid, weights, patch_size: int, weight_patch_size: int, config=None):
    """-> (per-tile fp32 partials of sum(w * m * |pred - target|), packed sign codes (B, C, H, ceil(W/4))).

    mask_grid, weights: contiguous (B, h, w) fp32; weights None means 1. Any weight cell size.
    """
    weight_patch_size = weight_patch_size if weights is not None else 1
    config = _tuned(pick(pred, config, GPU_CONFIG, INTERPRETER_CONFIG), weight_patch_size, False, "ring")
    B, C, H, W = pred.shape
    g = _geometry(H, W, weight_patch_size, False, config)
    partials = torch.empty(B * g["tiles_h"] * g["tiles_w"], dtype=torch.float32, device=pred.device)
    signs = _signs(pred)
    if partials.numel() and C:  # one partial per tile, one tile per program
        args = _l1_args(pred, target, mask_grid, patch_size, weights, weight_patch_size, signs, partials, config)
        launch(_l1_forward_kernel, (args["n_tiles"],), pred, config.num_warps, args, config.maxnreg)
    return partials, signs


def fast_weighted_mim_loss_forward(pred, target, mask_grid, patch_size: int, weight_patch_size: int, density: str,
                                   threshold: int, channel_order: str, mean, std, config=None):
    """-> (S, cover, signs): per-cell fp32 sums of m * |pred - target| and of covered pixels (density "ring")
    or keypoints ("count"), both (B, H/p, W/p) for p = ``weight_patch_size``, and the packed sign codes.
    ``weight_patch_size`` must ``fuses``."""
    assert fuses(weight_patch_size) and density in ("ring", "count") and channel_order in ("rgb", "bgr"), \
        (weight_patch_size, density, channel_order)
    cell = weight_patch_size
    B, C, H, W = pred.shape
    config = _tuned(pick(pred, config, GPU_CONFIG, INTERPRETER_CONFIG), cell, True, density)
    l1 = torch.empty((B, H // cell, W // cell), dtype=torch.float32, device=pred.device)
    cover = torch.empty_like(l1)
    signs = _signs(pred)
    placeholder = torch.empty(0, dtype=torch.uint8, device=pred.device)
    args = _fused_args(pred, target, mask_grid, patch_size, cell, density, threshold, channel_order, mean, std, signs,
                       l1, cover, placeholder, config)
    n_tiles = args["n_tiles"]
    if n_tiles == 0 or C == 0:
        return l1, cover, signs
    programs = persistent_programs(_fused_forward_kernel, pred, n_tiles, config.num_warps, args, config.maxnreg)
    rows = args["OUT_H"] + 2 * args["HALO"]
    margin = (args["SUB_H"] + 4) * args["BLOCK_W"]  # the kernel's MARGIN
    args["scratch_ptr"] = torch.empty(programs * (2 * rows * args["BLOCK_W"] + margin) + margin, dtype=torch.uint8,
                                      device=pred.device)
    launch(_fused_forward_kernel, (programs,), pred, config.num_warps, args, config.maxnreg)
    return l1, cover, signs


def _backward_args(scale, signs, mask_grid, weights, patch_size, weight_patch_size, grad_pred, grad_tgt) -> dict:
    B, C, H, W = grad_pred.shape
    wh, ww = weights.shape[1:] if weights is not None else (1, 1)
    return dict(scale_ptr=scale, signs_ptr=signs, W4=packed_width(W),
                mask_ptr=mask_grid, mh=mask_grid.shape[1], mw=mask_grid.shape[2],
                weight_ptr=weights if weights is not None else mask_grid, wh=wh, ww=ww,
                grad_pred_ptr=grad_pred, grad_target_ptr=grad_tgt if grad_tgt is not None else grad_pred,
                C=C, H=H, W=W,
                PATCH_SIZE=patch_size, WEIGHT_PATCH_SIZE=weight_patch_size, HAS_WEIGHTS=weights is not None,
                GRAD_TARGET=grad_tgt is not None, TILE_H=TILE_H, TILE_W=TILE_W)


def _backward_grid(B: int, H: int, W: int) -> tuple[int, int, int]:
    """(B, tiles down, tiles across): y and z stay far under their 65,535 cap (a million rows or columns)."""
    return B, triton.cdiv(H, TILE_H), triton.cdiv(W, TILE_W)


def weighted_mim_loss_backward(scale, signs, mask_grid, weights, patch_size: int, weight_patch_size: int, shape,
                         pred_dtype, target_dtype, grad_target: bool):
    """-> (grad_pred, grad_target or None), contiguous (B, C, H, W). scale: 0-d fp32 g / (sum(m) + eps) / C."""
    B, C, H, W = shape
    grad_pred = torch.empty(shape, dtype=pred_dtype, device=signs.device)
    grad_tgt = torch.empty(shape, dtype=target_dtype, device=signs.device) if grad_target else None
    if grad_pred.numel():
        args = _backward_args(scale, signs, mask_grid, weights, patch_size, weight_patch_size, grad_pred, grad_tgt)
        launch(_backward_kernel, _backward_grid(B, H, W), signs, BACKWARD_WARPS, args, BACKWARD_MAXNREG)
    return grad_pred, grad_tgt

