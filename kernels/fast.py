"""FAST-9/16 corners with OpenCV's score and 3x3 non-max suppression, in one Triton kernel.

Each program walks tiles of one image (a persistent grid): it stages gray into a small per-program
scratch (colour input only), scores a ``ROWS x BLOCK_W`` block with its halo, writes the scores to the
scratch, and suppresses non-maxima from there. Triton cannot shift a register tile by one pixel, so
the scratch is how a program sees its neighbours' scores; it is ``2 * ROWS * BLOCK_W`` bytes per
program (about 4 MB over an H100's 1056 programs) and stays in L2. Only the two outputs reach HBM.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .fast_tile import (
    SRC_GRAY_U8, SRC_GRAY_U8_C, SRC_RGB_FLOAT, SRC_RGB_FLOAT_C, SRC_RGB_U8, corner_score, nms_keep, rgb_to_gray,
)

# Shipped configuration. 8 rows x 64 columns per step and 4 warps keep 4 pixels per thread, which
# holds the 16 circle differences and the arc minima in registers without spills (ptxas report).
GPU_CONFIG = dict(ROWS=32, BLOCK_W=64, SUB_H=8)  # ROWS x BLOCK_W: a tile's block, halo included
NUM_WARPS = 4
PROGRAMS_PER_SM = 8
# Triton's interpreter pays ~100 us of Python per op whatever the block size, so CPU tensors take
# bigger blocks (4x fewer ops per pixel). The tests also run GPU_CONFIG through the interpreter.
INTERPRETER_CONFIG = dict(ROWS=64, BLOCK_W=128, SUB_H=32)
INTERPRETER_PROGRAMS = 3  # fewer programs than tiles, so the persistent loop is exercised in CI


@triton.jit
def _fast_kernel(
    src_ptr, kp_ptr, score_out_ptr, scratch_ptr,
    H, W, s_b, s_c, s_h, s_w,
    tiles_w, tiles_per_image, n_tiles,
    threshold, m0, m1, m2, sd0, sd1, sd2,
    SRC_KIND: tl.constexpr, BGR: tl.constexpr, NMS: tl.constexpr, HALO: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_W: tl.constexpr, SUB_H: tl.constexpr,
):
    OUT_H: tl.constexpr = ROWS - 2 * HALO
    OUT_W: tl.constexpr = BLOCK_W - 2 * HALO
    # Score the NMS halo too; colour input scores only where the staged gray holds the whole circle.
    S_LO: tl.constexpr = HALO - 1 if NMS else HALO
    pid = tl.program_id(0)
    gray_scratch = scratch_ptr + pid.to(tl.int64) * (2 * ROWS * BLOCK_W)
    score_scratch = gray_scratch + ROWS * BLOCK_W
    jj = tl.arange(0, BLOCK_W)[None, :]
    rows = tl.arange(0, SUB_H)[:, None]
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
                                   SRC_KIND == SRC_RGB_FLOAT_C, BGR, m0, m1, m2, sd0, sd1, sd2)
                tl.store(gray_scratch + ii * BLOCK_W + jj, gray.to(tl.uint8), mask=ii < ROWS)
            tl.debug_barrier()
        for r0 in range(S_LO, ROWS - S_LO, SUB_H):
            ii = r0 + rows
            yg = y_org + ii
            valid = ((ii < ROWS - S_LO) & (jj >= S_LO) & (jj < BLOCK_W - S_LO)
                     & (yg >= 3) & (yg < H - 3) & (xg >= 3) & (xg < W - 3))
            if SRC_KIND == SRC_GRAY_U8_C:
                score = corner_score(src + yg.to(tl.int64) * s_h + xg * s_w, s_h, s_w, valid)
            else:
                score = corner_score(gray_scratch + ii * BLOCK_W + jj, BLOCK_W, 1, valid)
            corner = score >= threshold  # masked lanes hold -1 < threshold
            if NMS:
                tl.store(score_scratch + ii * BLOCK_W + jj, tl.where(corner, score, 0).to(tl.uint8), mask=ii < ROWS)
            else:
                out = (ii < HALO + OUT_H) & (jj >= HALO) & (jj < HALO + OUT_W) & (yg < H) & (xg < W)
                offs = out_b + yg.to(tl.int64) * W + xg
                tl.store(kp_ptr + offs, corner.to(tl.uint8), mask=out)
                tl.store(score_out_ptr + offs, tl.where(corner, score, 0).to(tl.uint8), mask=out)
        if NMS:
            tl.debug_barrier()
            for r0 in range(HALO, HALO + OUT_H, SUB_H):
                ii = r0 + rows
                yg = y_org + ii
                out = (ii < HALO + OUT_H) & (jj >= HALO) & (jj < HALO + OUT_W) & (yg < H) & (xg < W)
                keep, centre = nms_keep(score_scratch + ii * BLOCK_W + jj, BLOCK_W, out)
                offs = out_b + yg.to(tl.int64) * W + xg
                tl.store(kp_ptr + offs, keep.to(tl.uint8), mask=out)
                tl.store(score_out_ptr + offs, tl.where(keep, centre, 0).to(tl.uint8), mask=out)


def _halo(src_kind: int, nms: bool) -> int:
    """Pixels a tile's block reaches beyond its outputs: the circle (3) for colour staging, 1 for NMS."""
    return (3 if src_kind != SRC_GRAY_U8 else 0) + (1 if nms else 0)


@functools.cache
def _max_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count * PROGRAMS_PER_SM
    return INTERPRETER_PROGRAMS


def fast_corners(
    image: torch.Tensor,
    threshold: int,
    nonmax_suppression: bool,
    src_kind: int,
    bgr: bool = False,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the FAST kernel. Arguments are checked by the caller (``kamim_fast.fast``).

    Args:
        image: (B, H, W) uint8 gray for ``SRC_GRAY_U8``, else (B, 3, H, W) uint8 or float; any strides.
        config: block sizes (``GPU_CONFIG`` on CUDA, ``INTERPRETER_CONFIG`` on CPU by default).
    Returns:
        keypoints (B, H, W) bool and scores (B, H, W) uint8, contiguous.
    """
    B, H, W = image.shape[0], image.shape[-2], image.shape[-1]
    keypoints = torch.empty((B, H, W), dtype=torch.bool, device=image.device)
    scores = torch.empty((B, H, W), dtype=torch.uint8, device=image.device)
    if keypoints.numel() == 0:
        return keypoints, scores
    if config is None:
        config = GPU_CONFIG if image.is_cuda else INTERPRETER_CONFIG
    rows, block_w = config["ROWS"], config["BLOCK_W"]
    halo = _halo(src_kind, nonmax_suppression)
    tiles_h = triton.cdiv(H, rows - 2 * halo)
    tiles_w = triton.cdiv(W, block_w - 2 * halo)
    n_tiles = B * tiles_h * tiles_w
    programs = min(n_tiles, _max_programs(image.device))
    scratch = torch.empty(programs * 2 * rows * block_w, dtype=torch.uint8, device=image.device)
    if src_kind == SRC_GRAY_U8:
        s_b, s_h, s_w = image.stride()
        s_c = 0
    else:
        s_b, s_c, s_h, s_w = image.stride()
    _fast_kernel[(programs,)](
        image, keypoints.view(torch.uint8), scores, scratch,
        H, W, s_b, s_c, s_h, s_w,
        tiles_w, tiles_h * tiles_w, n_tiles,
        threshold, *mean, *std,
        SRC_KIND=src_kind, BGR=bgr, NMS=nonmax_suppression, HALO=halo, **config,
        num_warps=NUM_WARPS, enable_fp_fusion=False,  # bit-exact un-normalisation: no FMA contraction
    )
    return keypoints, scores


def sm90_specs() -> list[dict]:
    """The shipped configurations, for the H100 compile check (benchmarks/ptxas_report.py)."""
    specs = []
    for src_kind, src_type in ((SRC_GRAY_U8, "*u8"), (SRC_RGB_U8, "*u8"), (SRC_RGB_FLOAT, "*fp32"), (SRC_RGB_FLOAT, "*bf16")):
        for nms in (True, False):
            constexprs = dict(SRC_KIND=src_kind, BGR=False, NMS=nms, HALO=_halo(src_kind, nms), **GPU_CONFIG)
            signature = dict(src_ptr=src_type, kp_ptr="*u8", score_out_ptr="*u8", scratch_ptr="*u8",
                             **{k: "i32" for k in ("H", "W", "s_b", "s_c", "s_h", "s_w", "tiles_w", "tiles_per_image", "n_tiles", "threshold")},
                             **{k: "fp32" for k in ("m0", "m1", "m2", "sd0", "sd1", "sd2")},
                             **{k: "constexpr" for k in constexprs})
            specs.append(dict(name=f"fast[{src_type[1:]},kind={src_kind},nms={int(nms)}]", fn=_fast_kernel,
                              signature=signature, constexprs=constexprs, num_warps=NUM_WARPS))
    return specs
