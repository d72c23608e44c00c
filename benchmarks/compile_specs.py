"""The Triton kernel configurations the compile tooling builds: one function per kernel module of the op registry
(``kamim_fast._backend.kernel_modules()``), named after it, each returning that module's configurations with the
launch arguments of the benchmark's case (meta tensors, so nothing is allocated):

- ``full=False``: the representative set that CI compiles live (``tests/test_compile.py`` through
  ``python -m benchmarks.ptxas_report``) and the performance model reads, each held to its SASS budget
  (``benchmarks/sass_budgets.json``);
- ``full=True``: every configuration a user can reach, which ``make compile-all`` compiles before a release or
  after a large kernel change (``benchmarks/compile_all.py``; not a condition for landing).

A spec is a dict: ``name``, ``fn`` (the ``@triton.jit`` kernel), ``args`` (every kernel argument by name),
``num_warps``, ``maxnreg`` (optional), ``items`` (pixels or elements of the case) and, for the model, either
``args["n_tiles"]`` and ``tile_vars`` (persistent kernels: the tiles of the persistent loop) or ``programs`` (the
grid's programs).
"""

from __future__ import annotations

import math

import torch

from kamim_fast import _backend
from kamim_fast._constants import CHANNEL_ORDERS, DENSITY_MODES

B, H, W = 256, 192, 192  # the benchmark's headline case


def specs(full: bool = False) -> list[dict]:
    """Every kernel module's configurations, in the registry's order; each spec names its ``module``."""
    out = []
    for module in _backend.kernel_modules():
        make = globals().get(module)
        if make is None:
            raise LookupError(f"benchmarks/compile_specs.py has no {module}(): the registry's kernel module "
                              f"kamim_fast.kernels.{module} needs its configurations here")
        out += [{**spec, "module": module} for spec in make(full=full)]
    return out


def with_int64_strides(specs: list[dict], full: bool, ci: tuple[str, ...]) -> list[dict]:
    """``specs`` and their configurations for views whose offsets pass int32 (``INT64_STRIDES``): every one with
    ``full`` (all a user can reach), else those named in ``ci`` (the representative set)."""
    from kamim_fast.kernels._launch import register_cap

    wide = [{**s, "name": s["name"][:-1] + ",int64]", "args": {**s["args"], "INT64_STRIDES": True},
             "maxnreg": register_cap(s.get("maxnreg"), {"INT64_STRIDES": True})}
            for s in specs if full or s["name"] in ci]
    assert full or len(wide) == len(ci), (ci, [s["name"] for s in specs])
    return specs + wide


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --- gray ------------------------------------------------------------------------------------------------


def gray(full: bool = False) -> list[dict]:
    """rgb_to_gray_u8 takes uint8 or any float dtype (float64 too), RGB or BGR; CI: RGB, no float64."""
    from kamim_fast.kernels import gray as k

    specs = []
    dtypes = (torch.uint8, torch.float32, torch.float16, torch.bfloat16) + ((torch.float64,) if full else ())
    for dtype in dtypes:
        for order in CHANNEL_ORDERS if full else ("rgb",):
            images = torch.empty((B, 3, H, W), dtype=dtype, device="meta")
            out = torch.empty((B, H, W), dtype=torch.uint8, device="meta")
            specs.append(dict(name=f"gray[{_dt(dtype)}{',bgr=1' if order == 'bgr' else ''}]", fn=k._gray_kernel,
                              args=k._args(images, out, order, (0.0,) * 3, (1.0,) * 3), num_warps=k.NUM_WARPS,
                              items=B * H * W, programs=k.triton.cdiv(H * W, k.BLOCK) * B))
    return with_int64_strides(specs, full, ci=("gray[float32]",))


# --- fast ------------------------------------------------------------------------------------------------

# fast_corners takes uint8 gray; patch_weights and the loss's unfused weight cells take colour, uint8 or any
# float dtype (float64 too), RGB or BGR. The op takes either suppression and channel order for every source.
FAST_COLOUR_DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64)


def fast(full: bool = False) -> list[dict]:
    """Every source (gray, colour of each dtype) x suppression on/off x channel order; CI: RGB, no float64."""
    from kamim_fast.kernels import fast as k
    from kamim_fast.kernels.fast_tile import SRC_GRAY_U8, SRC_RGB_FLOAT, SRC_RGB_U8

    specs = []
    sources = [(SRC_GRAY_U8, torch.uint8)] + [(SRC_RGB_U8 if d == torch.uint8 else SRC_RGB_FLOAT, d)
                                              for d in FAST_COLOUR_DTYPES if full or d != torch.float64]
    for src_kind, dtype in sources:
        for nms in (True, False):
            for order in CHANNEL_ORDERS if full else ("rgb",):
                shape = (B, H, W) if src_kind == SRC_GRAY_U8 else (B, 3, H, W)
                image = torch.empty(shape, dtype=dtype, device="meta")
                kp, sc = (torch.empty((B, H, W), dtype=torch.uint8, device="meta") for _ in range(2))
                scratch = torch.empty(1, dtype=torch.uint8, device="meta")
                config = k._gpu_config(src_kind)
                args = k._args(image, kp, sc, scratch, 10, nms, src_kind, order, (0.0,) * 3, (1.0,) * 3, config)
                h, out_h = args["HALO"], config.ROWS - 2 * args["HALO"]
                tile_vars = [dict(y_org=ty * out_h - h) for ty in range(args["tiles_per_image"] // args["tiles_w"])]
                source = f"{'gray' if src_kind == SRC_GRAY_U8 else 'rgb'}-{_dt(dtype)}"
                name = f"fast[{source},nms={int(nms)}{',bgr=1' if order == 'bgr' else ''}]"
                specs.append(dict(name=name, fn=k._fast_kernel, args=args, num_warps=config.num_warps,
                                  maxnreg=config.maxnreg, items=B * H * W, tile_vars=tile_vars))
    return with_int64_strides(specs, full, ci=("fast[gray-uint8,nms=1]", "fast[rgb-float32,nms=1]"))


# --- mim_loss --------------------------------------------------------------------------------------------

# pred and target: each any of these (float64 takes the PyTorch reference, not the kernels).
LOSS_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Patch sizes, any p the API takes: the mask's cell (PATCH_SIZE) and given weights' (WEIGHT_PATCH_SIZE) enter the
# kernels only as the divisor of a cell lookup (yy // p), compiled to nothing (p = 1), a shift (a power of two)
# or a multiply-high (any other p): one size per class, the first the default of the names.
MASK_PATCHES = (16, 1, 14)  # ViT/16 and MAE (SimMIM's masks at model-patch resolution), pixel masks, ViT/14
GIVEN_WEIGHT_CELLS = (8, 1, 14)  # the published 8, pixel-level weights, a non-power of two


def _case_size(size: int, *patches: int) -> int:
    """The benchmark's side (192), or the least multiple of 16 and of the patch sizes above it: an aligned case."""
    step = math.lcm(16, *patches)
    return -(-size // step) * step


def _forward_spec(pred_dtype, target_dtype, mask_patch, fast_weights, density, cell, channel_order) -> dict:
    """One forward configuration (cell None: no weights), with an aligned case's launch arguments."""
    from kamim_fast.kernels import mim_loss as k

    meta = dict(device="meta")
    h, w = (_case_size(s, mask_patch, cell or 1) for s in (H, W))
    pred = torch.empty((B, 3, h, w), dtype=pred_dtype, **meta)
    target = torch.empty((B, 3, h, w), dtype=target_dtype, **meta)
    signs = torch.empty((B, 3, h, k.packed_width(w)), dtype=torch.uint8, **meta)
    mask = torch.empty((B, h // mask_patch, w // mask_patch), dtype=torch.float32, **meta)
    grid = torch.empty((B, h // (cell or 1), w // (cell or 1)), dtype=torch.float32, **meta)
    weights = None if fast_weights or cell is None else grid
    tuned = k._tuned(k.GPU_CONFIG, cell or 1, fast_weights, density)
    g = k._geometry(h, w, cell or 1, fast_weights, tuned)
    l1_out = grid if fast_weights else torch.empty(B * g["tiles_h"] * g["tiles_w"], dtype=torch.float32, **meta)
    u8 = torch.empty(1, dtype=torch.uint8, **meta)  # the scratch: its size is no part of the signature
    if fast_weights:
        fn = k._fused_forward_kernel
        args = k._fused_args(pred, target, mask, mask_patch, cell, density, 10, channel_order, (0.0,) * 3, (1.0,) * 3,
                             signs, l1_out, torch.empty_like(grid), u8, k.GPU_CONFIG)
    else:
        fn = k._l1_forward_kernel
        args = k._l1_args(pred, target, mask, mask_patch, weights, cell or 1, signs, l1_out, k.GPU_CONFIG)
    kind = f"fast-{density}" if fast_weights else ("weights" if cell else "no-weights")
    extra = (f",target={_dt(target_dtype)}" if target_dtype != torch.float32 else "") + \
        (f",mask={mask_patch}" if mask_patch != MASK_PATCHES[0] else "") + (",bgr=1" if channel_order == "bgr" else "")
    return dict(name=f"mim_loss_fwd[{_dt(pred_dtype)},{kind}" + (f",p={cell}" if cell else "") + extra + "]",
                fn=fn, args=args, num_warps=tuned.num_warps, maxnreg=tuned.maxnreg, items=B * h * w * 3)


def _backward_spec(pred_dtype, target_dtype, mask_patch, weight_patch, grad_target) -> dict:
    """One backward configuration (weight_patch None: no weights, as the API passes it: patch 1)."""
    from kamim_fast.kernels import mim_loss as k

    meta = dict(device="meta")
    h, w = (_case_size(s, mask_patch, weight_patch or 1) for s in (H, W))
    grad = torch.empty((B, 3, h, w), dtype=pred_dtype, **meta)
    signs = torch.empty((B, 3, h, k.packed_width(w)), dtype=torch.uint8, **meta)
    mask = torch.empty((B, h // mask_patch, w // mask_patch), dtype=torch.float32, **meta)
    weights = None if weight_patch is None else \
        torch.empty((B, h // weight_patch, w // weight_patch), dtype=torch.float32, **meta)
    args = k._backward_args(torch.empty((), dtype=torch.float32, **meta), signs, mask, weights, mask_patch,
                            weight_patch or 1, grad, torch.empty_like(grad, dtype=target_dtype) if grad_target else None)
    extra = (f",p={weight_patch}" if weight_patch not in (None, 8) else "") + \
        (f",target={_dt(target_dtype)}" if grad_target and target_dtype != torch.float32 else "") + \
        (f",mask={mask_patch}" if mask_patch != MASK_PATCHES[0] else "")
    return dict(name=f"mim_loss_bwd[{_dt(pred_dtype)},weights={int(weight_patch is not None)},"
                     f"grad_target={int(grad_target)}{extra}]",
                fn=k._backward_kernel, args=args, num_warps=k.BACKWARD_WARPS, maxnreg=k.BACKWARD_MAXNREG,
                items=B * h * w * 3, programs=math.prod(k._backward_grid(B, h, w)))


def mim_loss(full: bool = False) -> list[dict]:
    """Every pred x target dtype x mask patch x (every fused cell x density x channel order, given weight cells, no
    weights), and the backward's; CI: fp32 pred at every fused cell, the other dtypes at p = 8, fp32 target, the
    mask's default patch (16), RGB."""
    from kamim_fast.kernels import mim_loss as k

    fused_cells = tuple(c for c in range(1, k.MAX_FUSED_CELL + 1) if k.fuses(c))
    specs = []
    for pred_dtype in LOSS_DTYPES:
        for target_dtype in LOSS_DTYPES if full else (torch.float32,):
            for mask_patch in MASK_PATCHES if full else MASK_PATCHES[:1]:
                cases = [(True, density, cell, order) for density in DENSITY_MODES for cell in fused_cells
                         for order in (CHANNEL_ORDERS if full else ("rgb",))]
                cases += [(False, "ring", cell, "rgb") for cell in (*GIVEN_WEIGHT_CELLS, None)]
                for fast_weights, density, cell, order in cases:
                    if full or _ci_forward(pred_dtype, fast_weights, density, cell):
                        specs.append(_forward_spec(pred_dtype, target_dtype, mask_patch, fast_weights, density, cell,
                                                   order))
                # the backward's grad_target takes target's dtype; without it target's dtype plays no part
                for weight_patch in (*GIVEN_WEIGHT_CELLS, None):
                    for grad_target in (False, True):
                        if (not grad_target and target_dtype != torch.float32) or not (
                                full or _ci_backward(pred_dtype, weight_patch, grad_target)):
                            continue
                        specs.append(_backward_spec(pred_dtype, target_dtype, mask_patch, weight_patch, grad_target))
    forwards = [s for s in specs if s["fn"] is not k._backward_kernel]
    return with_int64_strides(forwards, full, ci=("mim_loss_fwd[bfloat16,fast-ring,p=8]",
                                                  "mim_loss_fwd[float32,no-weights]")) + \
        [s for s in specs if s["fn"] is k._backward_kernel]


def _ci_forward(pred_dtype, fast_weights, density, cell) -> bool:
    if pred_dtype == torch.float32:
        return fast_weights or cell in (8, None)
    if pred_dtype == torch.bfloat16:  # the other dtypes only change pred's loads
        return cell in (8, None)
    return fast_weights and density == "ring" and cell == 8


def _ci_backward(pred_dtype, weight_patch, grad_target) -> bool:
    if pred_dtype == torch.float32:
        return weight_patch in (8, None) and not (grad_target and weight_patch is None)
    if pred_dtype == torch.bfloat16:
        return weight_patch in (8, None) and not grad_target
    return weight_patch == 8 and not grad_target


# --- density ---------------------------------------------------------------------------------------------


def density(full: bool = False) -> list[dict]:
    """keypoint_density takes any cell size: the published 8, and 16, 32; and 1 (pixel cells) and 14 (a
    non-power of two: masked tiles) with ``full``; both densities."""
    from kamim_fast.kernels import density as k

    specs = []
    for patch_size in (8, 16, 32) + ((1, 2, 4, 14, 64) if full else ()):
        for mode in DENSITY_MODES:
            h, w = (_case_size(s, patch_size) for s in (H, W))
            keypoints = torch.empty((B, h, w), dtype=torch.uint8, device="meta")
            out = torch.empty((B, h // patch_size, w // patch_size), dtype=torch.float32, device="meta")
            args = k._args(keypoints, out, patch_size, mode, k.GPU_PIXELS)
            specs.append(dict(name=f"density[{mode},p={patch_size}]", fn=k._density_kernel, args=args,
                              num_warps=k.NUM_WARPS, maxnreg=k.MAXNREG, items=B * h * w,
                              programs=B * args["row_blocks"] * args["col_blocks"]))
    return specs
