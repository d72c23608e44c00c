"""``@triton.jit`` building blocks for FAST-9/16 on a 2-D tile: OpenCV's rules on the GPU.

The constants are packed from ``kamim_fast._opencv`` (the one place they are written), so the kernels
and the PyTorch references cannot drift apart; the tests tie both to ``cv2``.
"""

import triton
import triton.language as tl

from kamim_fast._opencv import FAST_ARC, FAST_CIRCLE, FAST_NMS_RADIUS, FAST_RADIUS, GRAY_ROUND, GRAY_SHIFT, GRAY_WEIGHTS_RGB

assert len(FAST_CIRCLE) == 16 and FAST_ARC == 9 and FAST_RADIUS == 3, "corner_score is written for FAST-9/16"
assert FAST_NMS_RADIUS == 1, "nms_keep is written for a 3x3 neighbourhood"


def _pack_nibbles(values: list[int]) -> int:
    """Pack small signed ints (-3..3) into one int, 4 bits each, so a static loop can unpack them."""
    return sum((v + FAST_RADIUS) << (4 * i) for i, v in enumerate(values))


_CIRCLE_DX = tl.constexpr(_pack_nibbles([dx for dx, _ in FAST_CIRCLE]))
_CIRCLE_DY = tl.constexpr(_pack_nibbles([dy for _, dy in FAST_CIRCLE]))
_RADIUS = tl.constexpr(FAST_RADIUS)
RADIUS_C = _RADIUS  # the circle's radius (FAST's border) for use inside other modules' kernels
_W_R = tl.constexpr(GRAY_WEIGHTS_RGB[0])
_W_G = tl.constexpr(GRAY_WEIGHTS_RGB[1])
_W_B = tl.constexpr(GRAY_WEIGHTS_RGB[2])
_GRAY_ROUND = tl.constexpr(GRAY_ROUND)
_GRAY_SHIFT = tl.constexpr(GRAY_SHIFT)
# Adding and subtracting 1.5 * 2**23 rounds a float32 in [0, 2**22) to the nearest integer, ties to even,
# exactly as torch.round does; libdevice.rint would too, but Triton's interpreter cannot run it.
_RINT_MAGIC = tl.constexpr(12582912.0)
_RINT_MAGIC_BITS = tl.constexpr(0x4B400000)  # its float32 bit pattern

# What the source tensor holds (a constexpr argument of the kernels).
SRC_GRAY_U8 = 0  # (B, H, W) uint8 gray
SRC_RGB_U8 = 1  # (B, 3, H, W) uint8
SRC_RGB_FLOAT = 2  # (B, 3, H, W) float, normalised: x = (v / 255 - mean) / std
# The same values for use inside @triton.jit code, which only reads constexpr globals.
SRC_GRAY_U8_C = tl.constexpr(SRC_GRAY_U8)
SRC_RGB_FLOAT_C = tl.constexpr(SRC_RGB_FLOAT)


@triton.jit
def _channel_value(x, IS_FLOAT: tl.constexpr, mean, std):
    """One channel as an int32 in [0, 255]: uint8 as is, float un-normalised to round((x*std+mean)*255)."""
    if IS_FLOAT:
        v = (x.to(tl.float32) * std + mean) * 255.0
        v = tl.minimum(tl.where(v > 0.0, v, 0.0), 255.0)  # NaN -> 0, like the reference
        # v + 1.5 * 2**23 holds round(v) in its low mantissa bits: the bits minus the magic's are the
        # integer (no float subtraction, no float-to-int conversion: F2I issues at a quarter rate)
        out = (v + _RINT_MAGIC).to(tl.int32, bitcast=True) - _RINT_MAGIC_BITS
    else:
        out = x.to(tl.int32)
    return out


@triton.jit
def gray_of(c0, c1, c2, mask, IS_FLOAT: tl.constexpr, BGR: tl.constexpr, m0, m1, m2, s0, s1, s2):
    """OpenCV's fixed-point RGB->gray of loaded channel values. int32 in [0, 255]; 0 where masked.

    With ``BGR`` the R weight goes to channel 2 (COLOR_BGR2GRAY on the same array).
    """
    v0 = _channel_value(c0, IS_FLOAT, m0, s0)
    v1 = _channel_value(c1, IS_FLOAT, m1, s1)
    v2 = _channel_value(c2, IS_FLOAT, m2, s2)
    if BGR:
        gray = v2 * _W_R + v1 * _W_G + v0 * _W_B
    else:
        gray = v0 * _W_R + v1 * _W_G + v2 * _W_B
    return tl.where(mask, (gray + _GRAY_ROUND) >> _GRAY_SHIFT, 0)


@triton.jit
def rgb_to_gray(ptrs, stride_c, mask, IS_FLOAT: tl.constexpr, BGR: tl.constexpr, m0, m1, m2, s0, s1, s2):
    """``gray_of`` the pixels at ``ptrs`` (channel 0 of each pixel)."""
    ptrs1 = ptrs + stride_c  # pointer steps, not 2 * stride_c: no int32 overflow past 2^30
    return gray_of(tl.load(ptrs, mask=mask, other=0), tl.load(ptrs1, mask=mask, other=0),
                   tl.load(ptrs1 + stride_c, mask=mask, other=0), mask, IS_FLOAT, BGR, m0, m1, m2, s0, s1, s2)


@triton.jit
def corner_score(ptrs, stride_h, stride_w, mask):
    """OpenCV's FAST-9/16 score of the uint8 gray pixels at ``ptrs`` (int32).

    With d_k = v - x_k over the circle, score = max(max_arcs min_k d_k, -min_arcs max_k d_k) - 1 over
    the 16 arcs of 9 contiguous pixels: the largest threshold at which the pixel is still a corner, so
    it is a corner at threshold t iff score >= t (-1 at most for a pixel that is no corner at t=0).
    Since min_k (v - x_k) = v - max_k x_k, the arcs are taken over the circle's values x_k themselves:
    score = max(v - min_arcs max_k x_k, max_arcs min_k x_k - v) - 1, two subtractions instead of 16.

    The loads are not masked (a masked load costs two more instructions per circle pixel on the GPU):
    the whole circle must be addressable for every lane, ``mask``'s False lanes included (callers clamp
    those lanes' coordinates or pad their scratch); ``mask`` only selects the result, -1 elsewhere.
    """
    v = tl.load(ptrs).to(tl.int32)
    x = ()
    for k in tl.static_range(16):
        dx = ((_CIRCLE_DX >> (4 * k)) & 15) - _RADIUS
        dy = ((_CIRCLE_DY >> (4 * k)) & 15) - _RADIUS
        # the row's pointer, then the column offset (a constant where stride_w is 1, as Triton specialises
        # it): one address per circle row, the loads' immediates after it. int16: values 0..255, and
        # ptxas then takes 16x2 min/max for part of the reductions (10 instructions fewer per 2 pixels)
        x = x + (tl.load((ptrs + dy * stride_h) + dx * stride_w).to(tl.int16),)
    # OpenCV's pairing: for even k, the 8 pixels k+1..k+8 are shared by the arcs k..k+8 and k+1..k+9, so
    #   min_arcs max_k x_k = min_i max(max(x[2i+1 .. 2i+8]), min(x[2i], x[2i+9]))
    # (the centre's darker side; the brighter side mirrors min and max). max(x[2i+1 .. 2i+8]) is built
    # from pairs and quads; the two arcs' end pixels go in one min (max(hi, a) and max(hi, b) have the
    # smaller max(hi, min(a, b))).
    pair_lo = ()
    pair_hi = ()
    for i in tl.static_range(8):
        pair_lo = pair_lo + (tl.minimum(x[2 * i + 1], x[(2 * i + 2) % 16]),)
        pair_hi = pair_hi + (tl.maximum(x[2 * i + 1], x[(2 * i + 2) % 16]),)
    quad_lo = ()
    quad_hi = ()
    for i in tl.static_range(8):
        quad_lo = quad_lo + (tl.minimum(pair_lo[i], pair_lo[(i + 1) % 8]),)
        quad_hi = quad_hi + (tl.maximum(pair_hi[i], pair_hi[(i + 1) % 8]),)
    darker = ()  # per i: the darker of the two arcs that share x[2i+1 .. 2i+8] (its brightest pixel)
    brighter = ()
    for i in tl.static_range(8):
        first = x[2 * i]
        last = x[(2 * i + 9) % 16]
        darker = darker + (tl.maximum(tl.maximum(quad_hi[i], quad_hi[(i + 2) % 8]), tl.minimum(first, last)),)
        brighter = brighter + (tl.minimum(tl.minimum(quad_lo[i], quad_lo[(i + 2) % 8]), tl.maximum(first, last)),)
    darkest = darker[0]  # min over arcs of the arc's max: v - darkest is the dark side's score + 1
    brightest = brighter[0]  # max over arcs of the arc's min: brightest - v is the bright side's
    for i in tl.static_range(1, 8):
        darkest = tl.minimum(darkest, darker[i])
        brightest = tl.maximum(brightest, brighter[i])
    return tl.where(mask, tl.maximum(v - darkest.to(tl.int32), brightest.to(tl.int32) - v) - 1, -1)


@triton.jit
def nms_keep(score_ptrs, stride_h):
    """3x3 non-max suppression over a uint8 score map that holds 0 for non-corners.

    Returns (keep, centre score): a pixel survives iff its score is strictly greater than all 8
    neighbours (ties suppress both). A score of 0 never survives, exactly as in OpenCV. The loads are
    not masked: the 3x3 neighbourhood must be addressable for every lane; store the result masked.
    """
    centre = tl.load(score_ptrs).to(tl.int32)
    up = score_ptrs - stride_h
    down = score_ptrs + stride_h
    # the largest neighbour (scores are >= 0, so centre > it implies centre > 0)
    row_up = tl.maximum(tl.maximum(tl.load(up - 1), tl.load(up)), tl.load(up + 1))
    row_down = tl.maximum(tl.maximum(tl.load(down - 1), tl.load(down)), tl.load(down + 1))
    sides = tl.maximum(tl.load(score_ptrs - 1), tl.load(score_ptrs + 1))
    neighbours = tl.maximum(tl.maximum(row_up, row_down), sides)
    return centre > neighbours.to(tl.int32), centre
