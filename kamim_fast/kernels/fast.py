"""FAST-9/16 corners with OpenCV's score and 3x3 non-max suppression, in one Triton kernel.

Each program walks tiles of one image (a persistent grid): it stages gray into a small per-program
scratch (colour input only), scores a ``ROWS x BLOCK_W`` block with its halo, writes the scores to the
scratch, and suppresses non-maxima from there. Triton cannot shift a register tile by one pixel, so
the scratch is how a program sees its neighbours' scores; it is ``2 * ROWS * BLOCK_W`` bytes per
program, and the grid holds as many programs as are resident at once (``_launch.persistent_programs``:
about 3-9 per SM), so the scratch is 1-3 MB and stays in L2. Only the two outputs reach HBM.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kamim_fast._opencv import FAST_NMS_RADIUS, FAST_RADIUS

from ._launch import FastConfig, int64_strides, launch, persistent_programs, pick
from .fast_tile import RADIUS_C, SRC_GRAY_U8, SRC_GRAY_U8_C, SRC_RGB_FLOAT_C, corner_score, nms_keep, rgb_to_gray

# Shipped configurations; 4 warps. Gray input: 64 x 32 blocks (62 x 30 outputs): on B x 192 x 192 the
# 32-wide blocks waste 17% of the columns where 64-wide ones wasted 33%; 8-row score steps (2 pixels per
# thread), 4-row NMS steps (1 pixel per thread: the 2-pixel steps loaded scores as pairs but stored the
# outputs one byte per thread, a layout conversion through shared memory: 51 -> 46 SASS instructions per
# pixel). maxnreg: see FastConfig (without it sm_90a spilled 12-88 bytes at 64 registers).
GPU_CONFIG = FastConfig(ROWS=64, BLOCK_W=32, SUB_H=8, NMS_H=4, num_warps=4, maxnreg=96)
# Colour input stages gray with the circle's 3 px halo on each side: wider blocks waste fewer columns;
# 4-row score steps (2 pixels per thread: 8 rows held 4 per thread and needed 110-128 registers).
GPU_COLOUR_CONFIG = FastConfig(ROWS=32, BLOCK_W=64, SUB_H=4, NMS_H=2, num_warps=4, maxnreg=128)
# Triton's interpreter pays ~100 us of Python per op whatever the block size, so CPU tensors take
# bigger blocks (4x fewer ops per pixel). The tests also run GPU_CONFIG through the interpreter.
INTERPRETER_CONFIG = FastConfig(ROWS=64, BLOCK_W=128, SUB_H=32, num_warps=4)


@triton.jit
def _fast_kernel(
    # source: (B, H, W) uint8 gray or (B, 3, H, W) colour, any strides (elements; s_c unused for gray)
    src_ptr, s_b, s_c, s_h, s_w, H, W,
    # outputs, contiguous (B, H, W) uint8: keypoints (0/1) and scores; per-program scratch, 2 planes
    kp_ptr, score_out_ptr, scratch_ptr,
    # the persistent grid's tiles: tiles per image row, per image, in all
    tiles_w, tiles_per_image, n_tiles,
    # FAST threshold; un-normalisation of float colour: round((x * sd + m) * 255)
    threshold, m0, m1, m2, sd0, sd1, sd2,
    # what src holds (fast_tile.SRC_*), channel order, suppression, and the block geometry
    SRC_KIND: tl.constexpr, CHANNEL_ORDER: tl.constexpr, NONMAX_SUPPRESSION: tl.constexpr, HALO: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_W: tl.constexpr, SUB_H: tl.constexpr, NMS_H: tl.constexpr,
    # offsets in int64: a view whose row or column offsets can pass int32 (_launch.int64_strides)
    INT64_STRIDES: tl.constexpr,
):
    OUT_H: tl.constexpr = ROWS - 2 * HALO
    OUT_W: tl.constexpr = BLOCK_W - 2 * HALO
    # Score the NMS halo too; colour input scores only where the staged gray holds the whole circle.
    S_LO: tl.constexpr = HALO - 1 if NONMAX_SUPPRESSION else HALO
    pid = tl.program_id(0)
    if INT64_STRIDES:
        s_h = tl.cast(s_h, tl.int64)
        s_w = tl.cast(s_w, tl.int64)
    # [margin][gray][scores] per program, one more margin at the end: the unmasked circle and NMS loads of
    # lanes outside the block stay inside memory no program writes (scratch_bytes).
    MARGIN: tl.constexpr = ((SUB_H if SUB_H > NMS_H else NMS_H) + 4) * BLOCK_W
    gray_scratch = scratch_ptr + MARGIN + pid.to(tl.int64) * (2 * ROWS * BLOCK_W + MARGIN)
    score_scratch = gray_scratch + ROWS * BLOCK_W
    jj = tl.arange(0, BLOCK_W)[None, :]
    rows = tl.arange(0, SUB_H)[:, None]
    nms_rows = tl.arange(0, NMS_H)[:, None]
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        b = tile // tiles_per_image
        t = tile - b * tiles_per_image
        ty = t // tiles_w
        y_org = ty * OUT_H - HALO  # image row of block row 0
        x_org = (t - ty * tiles_w) * OUT_W - HALO
        xg = x_org + jj
        src = src_ptr + b.to(tl.int64) * s_b
        out_b = b.to(tl.int64) * H * W
        tl.debug_barrier()  # the previous tile's readers are done with the scratch
        if SRC_KIND != SRC_GRAY_U8_C:
            for r0 in range(0, ROWS, SUB_H):
                ii = r0 + rows
                yg = y_org + ii
                inside = (yg >= 0) & (yg < H) & (xg >= 0) & (xg < W)
                gray = rgb_to_gray(src + yg.to(tl.int64) * s_h + xg * s_w, s_c, inside,
                                   SRC_KIND == SRC_RGB_FLOAT_C, CHANNEL_ORDER == "bgr", m0, m1, m2, sd0, sd1, sd2)
                tl.store(gray_scratch + ii * BLOCK_W + jj, gray.to(tl.uint8), mask=ii < ROWS)
            tl.debug_barrier()
        # Row steps below the image are skipped (the bottom tiles); row H is still scored (0) for NMS.
        for r0 in range(S_LO, tl.minimum(ROWS - S_LO, H + 1 - y_org), SUB_H):
            ii = r0 + rows
            yg = y_org + ii
            valid = ((ii < ROWS - S_LO) & (jj >= S_LO) & (jj < BLOCK_W - S_LO)
                     & (yg >= RADIUS_C) & (yg < H - RADIUS_C) & (xg >= RADIUS_C) & (xg < W - RADIUS_C))
            if SRC_KIND == SRC_GRAY_U8_C:
                # Lanes off the valid region read the nearest valid pixel's circle (the loads are unmasked;
                # the launcher keeps images under 7 x 7 away), so every address lies inside the image.
                yc = tl.minimum(tl.maximum(yg, RADIUS_C), H - 1 - RADIUS_C)
                xc = tl.minimum(tl.maximum(xg, RADIUS_C), W - 1 - RADIUS_C)
                score = corner_score(src + yc.to(tl.int64) * s_h + xc * s_w, s_h, s_w, valid)
            else:
                score = corner_score(gray_scratch + ii * BLOCK_W + jj, BLOCK_W, 1, valid)
            corner = score >= threshold  # masked lanes hold -1 < threshold
            if NONMAX_SUPPRESSION:
                tl.store(score_scratch + ii * BLOCK_W + jj, tl.where(corner, score, 0).to(tl.uint8), mask=ii < ROWS)
            else:
                out = (ii < HALO + OUT_H) & (jj >= HALO) & (jj < HALO + OUT_W) & (yg < H) & (xg < W)
                offs = out_b + yg.to(tl.int64) * W + xg
                tl.store(kp_ptr + offs, corner.to(tl.uint8), mask=out)
                tl.store(score_out_ptr + offs, tl.where(corner, score, 0).to(tl.uint8), mask=out)
        if NONMAX_SUPPRESSION:
            tl.debug_barrier()
            for r0 in range(HALO, tl.minimum(HALO + OUT_H, H - y_org), NMS_H):
                ii = r0 + nms_rows
                yg = y_org + ii
                out = (ii < HALO + OUT_H) & (jj >= HALO) & (jj < HALO + OUT_W) & (yg < H) & (xg < W)
                keep, centre = nms_keep(score_scratch + ii * BLOCK_W + jj, BLOCK_W)
                offs = out_b + yg.to(tl.int64) * W + xg
                tl.store(kp_ptr + offs, keep.to(tl.uint8), mask=out)
                tl.store(score_out_ptr + offs, tl.where(keep, centre, 0).to(tl.uint8), mask=out)


MIN_SIDE = 2 * FAST_RADIUS + 1  # smaller images have no corners; the kernel is not launched for them


def scratch_bytes(programs: int, config: FastConfig) -> int:
    """The per-program scratch of ``programs``: a margin, then gray and scores (ROWS x BLOCK_W bytes each)
    per program, and a last margin. A margin is ``max(SUB_H, NMS_H) + 4`` rows: the unmasked loads of a
    row step reach a step's rows past a plane and the circle 3 more (and 3 rows before it), so they never
    reach another program's planes."""
    margin = (max(config.SUB_H, config.NMS_H or 0) + 4) * config.BLOCK_W
    return programs * (2 * config.ROWS * config.BLOCK_W + margin) + margin


def halo(src_kind: int, nonmax_suppression: bool) -> int:
    """Pixels a tile's block reaches beyond its outputs: the circle's radius for colour staging, NMS's."""
    return (FAST_RADIUS if src_kind != SRC_GRAY_U8 else 0) + (FAST_NMS_RADIUS if nonmax_suppression else 0)


def _gpu_config(src_kind: int) -> FastConfig:
    return GPU_CONFIG if src_kind == SRC_GRAY_U8 else GPU_COLOUR_CONFIG


def _args(image, keypoints, scores, scratch, threshold, nonmax_suppression, src_kind, channel_order, mean, std,
          config: FastConfig) -> dict:
    """The kernel's arguments, by name, and the tile counts."""
    B, H, W = image.shape[0], image.shape[-2], image.shape[-1]
    h = halo(src_kind, nonmax_suppression)
    tiles_h = triton.cdiv(H, config.ROWS - 2 * h)
    tiles_w = triton.cdiv(W, config.BLOCK_W - 2 * h)
    if src_kind == SRC_GRAY_U8:
        (s_b, s_h, s_w), s_c = image.stride(), 0
    else:
        s_b, s_c, s_h, s_w = image.stride()
    return dict(src_ptr=image, s_b=s_b, s_c=s_c, s_h=s_h, s_w=s_w, H=H, W=W,
                kp_ptr=keypoints, score_out_ptr=scores, scratch_ptr=scratch,
                tiles_w=tiles_w, tiles_per_image=tiles_h * tiles_w, n_tiles=B * tiles_h * tiles_w,
                threshold=threshold, m0=mean[0], m1=mean[1], m2=mean[2], sd0=std[0], sd1=std[1], sd2=std[2],
                SRC_KIND=src_kind, CHANNEL_ORDER=channel_order,
                NONMAX_SUPPRESSION=nonmax_suppression, HALO=h, ROWS=config.ROWS, BLOCK_W=config.BLOCK_W,
                SUB_H=config.SUB_H, NMS_H=config.NMS_H or config.SUB_H,
                INT64_STRIDES=int64_strides((H, s_h), (W, s_w)))


def fast_corners(
    image: torch.Tensor,
    threshold: int,
    nonmax_suppression: bool,
    src_kind: int,
    channel_order: str = "rgb",
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    config: FastConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the FAST kernel. Arguments are checked by the caller (``kamim_fast.fast``).

    Args:
        image: (B, H, W) uint8 gray for ``SRC_GRAY_U8``, else (B, 3, H, W) uint8 or float; any strides.
        config: block sizes (on CUDA ``GPU_CONFIG`` for gray, ``GPU_COLOUR_CONFIG`` for colour; on CPU
            ``INTERPRETER_CONFIG``, by default).
    Returns:
        keypoints (B, H, W) bool and scores (B, H, W) uint8, contiguous.
    """
    B, H, W = image.shape[0], image.shape[-2], image.shape[-1]
    keypoints = torch.empty((B, H, W), dtype=torch.bool, device=image.device)
    scores = torch.empty((B, H, W), dtype=torch.uint8, device=image.device)
    if keypoints.numel() == 0:
        return keypoints, scores
    config = pick(image, config, _gpu_config(src_kind), INTERPRETER_CONFIG)
    placeholder = torch.empty(0, dtype=torch.uint8, device=image.device)
    args = _args(image, keypoints.view(torch.uint8), scores, placeholder, threshold, nonmax_suppression, src_kind,
                 channel_order, mean, std, config)
    if H < MIN_SIDE or W < MIN_SIDE:
        # No pixel has its whole circle, so no corners; and the kernel's unmasked circle loads need 7 x 7.
        keypoints.zero_()
        scores.zero_()
        return keypoints, scores
    programs = persistent_programs(_fast_kernel, image, args["n_tiles"], config.num_warps, args, config.maxnreg)
    args["scratch_ptr"] = torch.empty(scratch_bytes(programs, config), dtype=torch.uint8, device=image.device)
    launch(_fast_kernel, (programs,), image, config.num_warps, args, config.maxnreg)
    return keypoints, scores

