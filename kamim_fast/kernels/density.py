"""The keypoint density per cell, as a Triton kernel: the drawKeypoints ring cover (or the keypoint count) of each
p x p cell, over p * p.

A program takes NR x CELLS adjacent cells and walks them in (NR, RB, CELLS, CB) tiles: RB rows and CB columns of
each cell at a time (powers of two, masked to p), so any cell size runs, and p <= 32 takes one tile per program
on the GPU. A pixel is covered when a keypoint lies under the ring around it: the 48 pixels of
``DRAW_KEYPOINT_RING`` read from the keypoint map (the stencil is symmetric, so the ring around a pixel is the
set of keypoints whose rings cover it), clipped at the image's edge. The covered pixels are counted per cell in
int32 and divided by p * p once, as the reference's average pooling: no float sums, deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kamim_fast._opencv import DRAW_KEYPOINT_RING, DRAW_KEYPOINT_RING_RADIUS

from ._launch import launch

assert all(row == row[::-1] for row in DRAW_KEYPOINT_RING) and DRAW_KEYPOINT_RING == DRAW_KEYPOINT_RING[::-1], \
    "the kernel reads the ring around each pixel: the stencil must be symmetric"
# Bit dx of _ROW_BITS[r], r <= radius: the stencil's pixel (r - radius, dx - radius) is in the ring; rows radius + 1..
# mirror rows radius - 1.. (checked above), so the upper half and the middle row say it all.
_R = tl.constexpr(DRAW_KEYPOINT_RING_RADIUS)
_RING_SIDE = tl.constexpr(len(DRAW_KEYPOINT_RING))
_ROW_BITS = [sum(1 << dx for dx, ch in enumerate(row) if ch == "#")
             for row in DRAW_KEYPOINT_RING[:DRAW_KEYPOINT_RING_RADIUS + 1]]
assert len(_ROW_BITS) == 5, "_ring_row_bits selects among 5 rows"
_B0, _B1, _B2, _B3, _B4 = (tl.constexpr(b) for b in _ROW_BITS)


@triton.jit
def _ring_row_bits(r):
    """The ring's columns (bit dx) in stencil row r of the upper half (0: the top row, radius: the middle)."""
    return tl.where(r == 0, _B0, tl.where(r == 1, _B1, tl.where(r == 2, _B2, tl.where(r == 3, _B3, _B4))))

# Tiles: about 1024 pixels per program step on the GPU (8 per thread at 4 warps); the interpreter pays ~100 us
# per operation whatever the tile, so CPU tensors take larger ones.
GPU_PIXELS = 1024
INTERPRETER_PIXELS = 16384
NUM_WARPS = 4
# PTX .maxnreg (see _launch.FastConfig.maxnreg): without it ptxas 12.9 for sm_89 spilled 8 bytes at p = 32 to meet
# the register target it picks from the block size.
MAXNREG = 168


@triton.jit
def _density_kernel(
    # keypoints (B, H, W) uint8 0/1, contiguous; the output (B, H/P, W/P) float32, contiguous
    kp_ptr, out_ptr, H, W, hc, wc,
    # programs per image: row_blocks of NR cell rows x col_blocks of CELLS cells; the grid is (B * row_blocks *
    # col_blocks,)
    row_blocks, col_blocks,
    # cell side, "ring" or "count", the tile: NR cell rows x RB rows x CELLS cells x CB columns of a cell
    P: tl.constexpr, DENSITY: tl.constexpr, NR: tl.constexpr, RB: tl.constexpr, CELLS: tl.constexpr,
    CB: tl.constexpr,
):
    pid = tl.program_id(0)
    per_image = row_blocks * col_blocks
    b = pid // per_image
    t = pid - b * per_image
    rblock = t // col_blocks
    cy = rblock * NR + tl.arange(0, NR)[:, None, None, None]  # (NR, 1, 1, 1)
    cx = (t - rblock * col_blocks) * CELLS + tl.arange(0, CELLS)[None, None, :, None]  # (1, 1, CELLS, 1)
    ri = tl.arange(0, RB)[None, :, None, None]
    ci = tl.arange(0, CB)[None, None, None, :]
    kp_b = kp_ptr + b.to(tl.int64) * H * W
    count = tl.zeros((NR, RB, CELLS, CB), dtype=tl.int32)
    for r0 in range(0, P, RB):
        for c0 in range(0, P, CB):
            y = cy * P + r0 + ri
            x = cx * P + c0 + ci
            valid = (r0 + ri < P) & (c0 + ci < P) & (cy < hc) & (cx < wc)
            if DENSITY == "ring":
                covered = tl.zeros((NR, RB, CELLS, CB), dtype=tl.uint8)
                # one stencil row per iteration (a loop, not unrolled: the 48 loads of an unrolled ring were all
                # in flight at once, 227-255 registers and spills); its columns unrolled, each load predicated on
                # the row's bit of the ring. (One pointer per row with the columns at constant offsets took 40-61
                # registers instead of 55-96 and kept Triton 3.9's generic build from spilling at p = 16 and 32, but
                # cost Triton 3.6, the GPU machines', 23-33% more SASS per pixel at p = 8 and 16: not taken.)
                for dy in range(_RING_SIDE):
                    yy = y + (dy - _R)
                    row = kp_b + yy.to(tl.int64) * W
                    in_rows = valid & (yy >= 0) & (yy < H)
                    bits = _ring_row_bits(tl.minimum(dy, 2 * _R - dy))
                    for dx in tl.static_range(_RING_SIDE):
                        # a uniform branch on the row's bit, not a scalar in the mask: Triton 3.9's interpreter
                        # rejects a mask that a scalar bool joins ("mask has unsupported dtype")
                        if ((bits >> dx) & 1) != 0:
                            xx = x + (dx - _R)
                            inside = in_rows & (xx >= 0) & (xx < W)
                            covered = covered | tl.load(row + xx, mask=inside, other=0)
            else:
                covered = tl.load(kp_b + y.to(tl.int64) * W + x, mask=valid, other=0)
            count += (covered != 0).to(tl.int32)
    cells = tl.sum(tl.sum(count, axis=3), axis=1)  # (NR, CELLS)
    cy2 = rblock * NR + tl.arange(0, NR)[:, None]
    cx2 = (t - rblock * col_blocks) * CELLS + tl.arange(0, CELLS)[None, :]
    tl.store(out_ptr + (b.to(tl.int64) * hc + cy2) * wc + cx2, cells.to(tl.float32) / (P * P),
             mask=(cy2 < hc) & (cx2 < wc))


def _tile(patch_size: int, hc: int, wc: int, pixels: int) -> tuple[int, int, int, int]:
    """(NR, RB, CELLS, CB): a cell's rows and columns up to the next power of two (capped so that one step holds
    about ``pixels``), then as many cells across and cell rows down as fill the rest."""
    side = triton.next_power_of_2(patch_size)
    cb = min(side, pixels)
    rb = min(side, max(1, pixels // cb))
    budget = max(1, pixels // (rb * cb))
    cells = min(budget, triton.next_power_of_2(max(wc, 1)))
    return min(max(1, budget // cells), triton.next_power_of_2(max(hc, 1))), rb, cells, cb


def _args(keypoints: torch.Tensor, out: torch.Tensor, patch_size: int, density: str, pixels: int) -> dict:
    B, H, W = keypoints.shape
    hc, wc = H // patch_size, W // patch_size
    nr, rb, cells, cb = _tile(patch_size, hc, wc, pixels)
    return dict(kp_ptr=keypoints, out_ptr=out, H=H, W=W, hc=hc, wc=wc, row_blocks=triton.cdiv(hc, nr),
                col_blocks=triton.cdiv(wc, cells), P=patch_size, DENSITY=density, NR=nr, RB=rb, CELLS=cells, CB=cb)


def keypoint_density(keypoints: torch.Tensor, patch_size: int, density: str) -> torch.Tensor:
    """(B, H, W) bool keypoints -> (B, H/p, W/p) float32 density, p = ``patch_size`` dividing H and W, ``density``
    "ring" or "count" (checked at the op boundary)."""
    assert density in ("ring", "count") and keypoints.shape[-1] % patch_size == 0, (density, keypoints.shape)
    B, H, W = keypoints.shape
    out = torch.empty((B, H // patch_size, W // patch_size), dtype=torch.float32, device=keypoints.device)
    if out.numel() == 0:
        return out
    kp = keypoints.contiguous().view(torch.uint8)
    args = _args(kp, out, patch_size, density, GPU_PIXELS if keypoints.is_cuda else INTERPRETER_PIXELS)
    launch(_density_kernel, (B * args["row_blocks"] * args["col_blocks"],), kp, NUM_WARPS, args, MAXNREG)
    return out
