"""RGB -> uint8 gray exactly as OpenCV computes it, as a standalone Triton kernel.

The FAST kernels stage gray through the same helper (``fast_tile.rgb_to_gray``); this kernel serves
``rgb_to_gray_u8`` on its own. Pure bandwidth: 3 channels in, 1 byte out per pixel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import int64_strides, launch
from .fast_tile import rgb_to_gray

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _gray_kernel(
    # (B, 3, H, W) source, any strides (elements); (B, H, W) contiguous uint8 output
    src_ptr, out_ptr, s_b, s_c, s_h, s_w,
    # image size (HW = H * W) and BLOCK-pixel blocks per image: the grid is (blocks_per_image * B,)
    HW, W, blocks_per_image,
    # un-normalisation of float input: round((x * sd + m) * 255) per channel
    m0, m1, m2, sd0, sd1, sd2,
    IS_FLOAT: tl.constexpr, CHANNEL_ORDER: tl.constexpr, BLOCK: tl.constexpr,
    # column offsets in int64: a view whose column offsets can pass int32 (_launch.int64_strides)
    INT64_STRIDES: tl.constexpr,
):
    # The batch is folded into grid x (no 65,535 cap on grid y).
    pid = tl.program_id(0)
    if INT64_STRIDES:
        s_w = tl.cast(s_w, tl.int64)
    b = pid // blocks_per_image
    offs = (pid - b * blocks_per_image) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < HW
    y = offs // W
    ptrs = src_ptr + b.to(tl.int64) * s_b + y.to(tl.int64) * s_h + (offs - y * W) * s_w
    gray = rgb_to_gray(ptrs, s_c, inside, IS_FLOAT, CHANNEL_ORDER == "bgr", m0, m1, m2, sd0, sd1, sd2)
    tl.store(out_ptr + b.to(tl.int64) * HW + offs, gray.to(tl.uint8), mask=inside)


def _args(images: torch.Tensor, out: torch.Tensor, channel_order: str, mean, std) -> dict:
    _, _, H, W = images.shape
    s_b, s_c, s_h, s_w = images.stride()
    return dict(src_ptr=images, out_ptr=out, s_b=s_b, s_c=s_c, s_h=s_h, s_w=s_w,
                HW=H * W, W=W, blocks_per_image=triton.cdiv(H * W, BLOCK),
                m0=mean[0], m1=mean[1], m2=mean[2], sd0=std[0], sd1=std[1], sd2=std[2],
                IS_FLOAT=images.is_floating_point(), CHANNEL_ORDER=channel_order, BLOCK=BLOCK,
                INT64_STRIDES=int64_strides((H, s_h), (W, s_w)))


def rgb_to_gray_u8(
    images: torch.Tensor,
    channel_order: str,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float, any strides -> (B, H, W) uint8; ``channel_order`` "rgb" or "bgr".
    Checked by the caller."""
    B, _, H, W = images.shape
    out = torch.empty((B, H, W), dtype=torch.uint8, device=images.device)
    if out.numel() == 0:
        return out
    args = _args(images, out, channel_order, mean, std)
    launch(_gray_kernel, (args["blocks_per_image"] * B,), images, NUM_WARPS, args)
    return out

