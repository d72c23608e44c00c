"""RGB -> uint8 gray exactly as OpenCV computes it, as a standalone Triton kernel.

The FAST kernels stage gray through the same helper (``fast_tile.rgb_to_gray``); this kernel serves
``rgb_to_gray_u8`` on its own. Pure bandwidth: 3 channels in, 1 byte out per pixel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fast_tile import rgb_to_gray

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _gray_kernel(src_ptr, out_ptr, HW, W, s_b, s_c, s_h, s_w, m0, m1, m2, sd0, sd1, sd2,
                 IS_FLOAT: tl.constexpr, BGR: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < HW
    y = offs // W
    ptrs = src_ptr + b.to(tl.int64) * s_b + y.to(tl.int64) * s_h + (offs - y * W) * s_w
    gray = rgb_to_gray(ptrs, s_c, inside, IS_FLOAT, BGR, m0, m1, m2, sd0, sd1, sd2)
    tl.store(out_ptr + b.to(tl.int64) * HW + offs, gray.to(tl.uint8), mask=inside)


def rgb_to_gray_u8(
    images: torch.Tensor,
    bgr: bool,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float, any strides -> (B, H, W) uint8. Checked by the caller."""
    B, _, H, W = images.shape
    out = torch.empty((B, H, W), dtype=torch.uint8, device=images.device)
    if out.numel() == 0:
        return out
    _gray_kernel[(triton.cdiv(H * W, BLOCK), B)](
        images, out, H * W, W, *images.stride(), *mean, *std,
        IS_FLOAT=images.is_floating_point(), BGR=bgr, BLOCK=BLOCK,
        num_warps=NUM_WARPS, enable_fp_fusion=False,  # bit-exact un-normalisation: no FMA contraction
    )
    return out


def sm90_specs() -> list[dict]:
    """The shipped configurations, for the H100 compile check (benchmarks/ptxas_report.py)."""
    specs = []
    for src_type in ("*u8", "*fp32", "*fp16", "*bf16"):
        constexprs = dict(IS_FLOAT=src_type != "*u8", BGR=False, BLOCK=BLOCK)
        signature = dict(src_ptr=src_type, out_ptr="*u8",
                         **{k: "i32" for k in ("HW", "W", "s_b", "s_c", "s_h", "s_w")},
                         **{k: "fp32" for k in ("m0", "m1", "m2", "sd0", "sd1", "sd2")},
                         **{k: "constexpr" for k in constexprs})
        specs.append(dict(name=f"gray[{src_type[1:]}]", fn=_gray_kernel, signature=signature,
                          constexprs=constexprs, num_warps=NUM_WARPS))
    return specs


