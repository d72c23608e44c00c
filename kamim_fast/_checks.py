"""The argument checks, each rule written once: the building blocks (a tensor's dtype and rank, an int's type
and range, a choice), the public forms' conversions (``as_int``, ``channel_stats``...), and the rules of the ops'
arguments (``check_colour``, ``check_weight_options``, ``check_loss_tensors``...), which each op's ``check`` (in
its module of ``kamim_fast/ops/``) composes and runs before dispatch, the same for every backend.

Each raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, wrong value) with a message
that names the argument, what was expected and what came. Values are looked at on CPU tensors only (the AMT
weights' rows, ids' ranges): on CUDA tensors that would synchronise with the host.
"""

from __future__ import annotations

import numbers
import operator
import os
import sys
import warnings
from collections.abc import Sequence

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ._constants import CHANNEL_ORDERS, DENSITY_MODES, MAX_PATCH_SIZE
from ._opencv import FAST_MAX_THRESHOLD

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(
    name: str,
    x: object,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    ndims: Sequence[int] | None = None,
    shape_doc: str = "",
) -> torch.Tensor:
    """Check that ``x`` is a tensor with one of ``dtypes`` and one of the ranks ``ndims``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {_dtype_names(dtypes)}, got {str(x.dtype).removeprefix('torch.')}")
    if ndims is not None and x.dim() not in ndims:
        doc = f" {shape_doc}" if shape_doc else ""
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions{doc}, got shape {tuple(x.shape)}")
    return x


def as_int(name: str, value: object, lo: int, hi: int) -> int:
    """``value`` as an int: a Python/NumPy int or a 0-d integer tensor, not a bool (the range is checked by
    :func:`check_range`; it is named here so that the message says what is expected)."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and (value.dim() != 0 or value.is_floating_point())):
        raise TypeError(f"{name} must be an int in [{lo}, {hi}], got {type(value).__name__} {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int in [{lo}, {hi}], got {type(value).__name__} {value!r}") from None


def check_range(name: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    """Check that ``value`` is an integer (a Python/NumPy int or a 0-d integer tensor, not a bool) in [lo, hi]."""
    return check_range(name, as_int(name, value, lo, hi), lo, hi)


def check_size_pair(name: str, size: object) -> tuple[int, int]:
    """An int or a pair (H, W) of ints in [1, 65536], as (H, W)."""
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or a pair (H, W), got {size!r}")
        return check_int(f"{name}[0]", size[0], 1, 1 << 16), check_int(f"{name}[1]", size[1], 1, 1 << 16)
    s = check_int(name, size, 1, 1 << 16)
    return s, s


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def as_str(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` as a str (which of ``choices`` it is, the op checks)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def is_number(value: object) -> bool:
    """A real number of any numeric type: a Python int or float, a NumPy scalar (``np.float32(0.25)``,
    ``np.int64(3)``), or a 0-d integer or float tensor; not a bool (nor ``np.bool_``, nor a bool tensor)."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and value.dtype != torch.bool and not value.is_complex()
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def as_float(name: str, value: object, expected: str = "a float") -> float:
    """``value`` as a float: any real number (see :func:`is_number`; a 0-d CUDA tensor is read to the host)."""
    if not is_number(value):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    return float(value)


# Tensor statistics read to the host, by tensor, with the version counter they were read at: a CUDA tensor is
# copied to the host (a synchronisation) once, not at every call, and again only after an in-place change.
_READ = WeakIdKeyDictionary()  # tensor -> (version, values)


def _host_values(t: torch.Tensor) -> list:
    seen = _READ.get(t)
    if seen is None or seen[0] != t._version:
        seen = _READ[t] = (t._version, t.detach().flatten().tolist())
    return seen[1]


def channel_stats(name: str, value: object, channels: int) -> tuple[float, ...]:
    """A per-channel statistic (mean or std) given as a float, a sequence or a tensor, as a tuple of ``channels``
    floats (its values are checked by :func:`check_stats_values`). A tensor is read to the host once (and again
    after an in-place change), so a CUDA tensor costs one synchronisation, not one per call."""
    if isinstance(value, torch.Tensor):
        value = _host_values(value)[0] if value.dim() == 0 else _host_values(value)
    elif type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # an array or a NumPy scalar
        value = value.tolist()
    if is_number(value):
        value = (value,) * channels
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != channels:
        raise ValueError(f"{name} must be a float or a sequence of {channels} floats, got {value!r}")
    for v in value:
        if not is_number(v):
            raise TypeError(f"{name} must hold floats, got {type(v).__name__} {v!r}")
    return tuple(float(v) for v in value)


def check_stats_values(name: str, values: Sequence[float], *, positive: bool) -> None:
    """Every value finite (and > 0 with ``positive``)."""
    for v in values:
        if v != v or v in (float("inf"), float("-inf")) or (positive and v <= 0):
            raise ValueError(f"{name} must hold {'positive ' if positive else ''}finite floats, got {tuple(values)}")


def check_channel_stats(name: str, value: object, channels: int, *, positive: bool) -> tuple[float, ...]:
    """A per-channel statistic (mean or std) as a tuple of ``channels`` finite floats."""
    out = channel_stats(name, value, channels)
    check_stats_values(name, out, positive=positive)
    return out


def check_divisible(name: str, size: int, what: str, patch: int, patch_name: str) -> None:
    """``name``'s ``what`` (height or width) is a multiple of the cell size ``patch_name``."""
    if size % patch:
        raise ValueError(f"{name}: {what} {size} must be divisible by {patch_name}={patch}")


def check_same_device(name: str, t: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    if t.device != like.device:
        raise ValueError(f"{name} must be on {like_name}'s device {like.device}, got {t.device}")


# --- the rules of the ops' arguments ---------------------------------------------------------------------

COLOUR_DTYPES = (torch.uint8, *FLOAT_DTYPES)
NOISE_DTYPES = (torch.float32, torch.float64)


# --- colour input, FAST, cells ---------------------------------------------------------------------------


def check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    """``mean`` and ``std`` of the un-normalisation ``round((x * std + mean) * 255)``: three finite values each
    (one per channel), std positive; or both empty, the identity (uint8 or gray input)."""
    if len(mean) != len(std) or len(mean) not in (0, 3):
        raise ValueError(f"mean and std must hold 3 values each (one per channel) or none, got {len(mean)} and "
                         f"{len(std)}")
    check_stats_values("mean", mean, positive=False)
    check_stats_values("std", std, positive=True)


def check_colour(name: str, images: torch.Tensor, channel_order: str, mean: Sequence[float],
                 std: Sequence[float]) -> None:
    """A (B, 3, H, W) uint8 or float colour batch called ``name``, its channel order and its statistics."""
    check_tensor(name, images, dtypes=COLOUR_DTYPES, ndims=(4,), shape_doc="(B, 3, H, W)")
    if images.shape[-3] != 3:
        raise ValueError(f"{name} must have 3 channels in dimension -3 (B, 3, H, W), got shape {tuple(images.shape)}")
    check_choice("channel_order", channel_order, CHANNEL_ORDERS)
    check_stats(mean, std)


def check_threshold(threshold: int) -> None:
    """OpenCV's SIMD paths mishandle thresholds outside 0..255: they are rejected."""
    check_range("threshold", threshold, 0, FAST_MAX_THRESHOLD)


def check_cells(name: str, shape: tuple[int, ...], patch: int, patch_name: str) -> None:
    """``patch_name`` (an int in [1, 65536]) divides the height and the width of ``name``, of shape (..., H, W)."""
    check_range(patch_name, patch, 1, MAX_PATCH_SIZE)
    check_divisible(name, shape[-2], "height", patch, patch_name)
    check_divisible(name, shape[-1], "width", patch, patch_name)


# --- KAMIM's weights and loss ---------------------------------------------------------------------------


def check_temperature(temperature: float) -> None:
    if not temperature > 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a positive finite float, got {temperature}")


def check_weight_options(name: str, images, weight_patch_size, temperature, threshold, density, channel_order, mean,
                         std) -> None:
    """KAMIM's weight options for a (B, 3, H, W) colour batch called ``name``: an image's weights are divided by
    their minimum, so an image has cells (H, W > 0)."""
    check_colour(name, images, channel_order, mean, std)
    if images.shape[0] and not (images.shape[2] and images.shape[3]):
        raise ValueError(f"{name} must have a positive height and width, got shape {tuple(images.shape)}")
    check_cells(name, images.shape, weight_patch_size, "weight_patch_size")
    check_temperature(temperature)
    check_threshold(threshold)
    check_choice("density", density, DENSITY_MODES)


def check_grid(name: str, grid: torch.Tensor, shape: tuple[int, ...], device: torch.device, patch: int,
               patch_name: str, of: str = "pred") -> None:
    """A contiguous float32 (B, H/p, W/p) cell grid, p = ``patch_name``, of ``of``'s (B, C, H, W) ``shape`` on
    ``device``."""
    check_cells(of, shape, patch, patch_name)
    B, _, H, W = shape
    want = (B, H // patch, W // patch)
    check_tensor(name, grid, dtypes=(torch.float32,), ndims=(3,), shape_doc=f"(B, H/{patch_name}, W/{patch_name})")
    if tuple(grid.shape) != want:
        raise ValueError(f"{name} must be (B, H/{patch_name}, W/{patch_name}) = {want}, got {tuple(grid.shape)}")
    if not grid.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got strides {grid.stride()}")
    if grid.device != device:
        raise ValueError(f"{name} must be on {of}'s device {device}, got {grid.device}")


def check_cell_values(name: str, t: torch.Tensor, what: str) -> None:
    """Every value of the (B, h, w) cell grid ``t`` finite and >= 0, else ValueError naming the first bad cell.

    Called on CPU tensors only (looking at the values of a CUDA tensor would synchronise with the host); skipped
    while ``torch.compile`` traces (nothing data-dependent is traced). The common case costs one min/max
    reduction; the element-wise search runs only to name a bad value.
    """
    v = t.detach()
    if not v.numel() or torch.compiler.is_compiling():
        return
    low, high = torch.aminmax(v)  # NaN propagates into both
    if low >= 0 and high < float("inf"):
        return
    bad = ~(v.isfinite() & (v >= 0))
    at = tuple(int(i) for i in bad.nonzero()[0])
    x = float(v[at])
    kind = "NaN" if x != x else f"{x:g}"
    raise ValueError(f"{name} must hold finite values >= 0 ({what}), got {kind} at (b, y, x) = {at}")


def check_eps(eps: float) -> None:
    if not eps >= 0 or eps == float("inf"):
        raise ValueError(f"eps must be a float >= 0, got {eps!r}")


def check_loss_tensors(pred, target, mask_grid, patch_size, eps) -> None:
    """pred and target (B, C, H, W) of one shape and device, float; the mask's cell grid; eps."""
    check_tensor("pred", pred, dtypes=FLOAT_DTYPES, ndims=(4,), shape_doc="(B, C, H, W)")
    check_tensor("target", target, dtypes=FLOAT_DTYPES, ndims=(4,), shape_doc="(B, C, H, W)")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    check_same_device("target", target, pred, "pred")
    check_grid("mask_grid", mask_grid, pred.shape, pred.device, patch_size, "patch_size")
    check_eps(eps)


# --- warnings -----------------------------------------------------------------------------------------------

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_WARNED: set = set()  # the causes warned about (warn_once's keys)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the function that calls this point at the first frame
    outside kamim_fast and torch: the user's line (through ``nn.Module.__call__``, the op registry, the
    integrations)."""
    frame, level = sys._getframe(2), 2  # the caller's caller: the first candidate
    while frame is not None and frame.f_code.co_filename.startswith((_PACKAGE_DIR, _TORCH_DIR)):
        frame, level = frame.f_back, level + 1
    return level


def warn_once(key: object, message: str, category: type[Warning]) -> bool:
    """Warn once per distinct ``key`` (a cause: the kind of problem and what it was found with), pointing at the
    user's line (:func:`caller_stacklevel`); a second, different cause warns again. Returns whether it warned."""
    if (category, key) in _WARNED:
        return False
    _WARNED.add((category, key))
    warnings.warn(message, category, stacklevel=caller_stacklevel())
    return True


def forget_warnings(category: type[Warning] | None = None) -> None:
    """Forget the causes warned about (of ``category``, or all), so that they warn again (tests)."""
    for key in [k for k in _WARNED if category is None or k[0] is category]:
        _WARNED.discard(key)


# --- AMT ---------------------------------------------------------------------------------------------------


def check_weight_rows(weights: torch.Tensor) -> None:
    """Raises ValueError for a row of ``weights`` holding NaN, inf or a negative value, or only zeros (the first
    such row, and in it the first bad column).

    Called on CPU tensors only: on CUDA tensors, looking at the values would synchronise with the host; the
    CUDA kernel orders NaN, negative and zero weights alike, after every positive weight (see
    :func:`kamim_fast.amt_masking`).
    """
    w = weights.detach()
    if not w.numel():
        return
    low, high = torch.aminmax(w)  # the common case in two reductions: NaN propagates into both
    if low >= 0 and high < float("inf") and (w.shape[1] == 0 or w.amax(1).amin() > 0):
        return
    bad = w.isnan() | w.isinf() | (w < 0)
    problem = bad.any(1) | ((w <= 0).all(1) if w.shape[1] else torch.zeros_like(bad[:, 0]))
    rows = problem.nonzero().flatten()
    if not rows.numel():
        return
    b = int(rows[0])
    cols = bad[b].nonzero().flatten()
    if not cols.numel():
        raise ValueError(f"weights must have a positive entry in every row; row {b} is all zero")
    n = int(cols[0])
    v = float(w[b, n])
    if v != v:
        raise ValueError(f"weights must not hold NaN; row {b} does (column {n})")
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"weights must be finite; row {b} holds {v:g} (column {n})")
    raise ValueError(f"weights must be >= 0; row {b} holds {v:g} (column {n})")


def check_masking(noise, weights, num_mask, num_throw) -> None:
    """(B, N) float32/float64 noise, optional weights like it (their rows checked on CPU tensors), the counts."""
    check_tensor("noise", noise, ndims=(2,), shape_doc="(B, N)")
    if noise.dtype not in NOISE_DTYPES:
        raise TypeError(f"noise must be float32 or float64, got {noise.dtype}")
    N = noise.shape[1]
    if not (num_mask >= 0 and num_throw >= 0 and num_mask + num_throw <= N):
        raise ValueError(f"num_mask and num_throw must be >= 0 with num_mask + num_throw <= N = {N}, got {num_mask} "
                         f"and {num_throw}")
    if weights is not None:
        check_tensor("weights", weights)
        if weights.shape != noise.shape:
            raise ValueError(f"weights must have noise's shape {tuple(noise.shape)}, got {tuple(weights.shape)}")
        if weights.dtype != noise.dtype:
            raise TypeError(f"weights must have noise's dtype {noise.dtype}, got {weights.dtype}")
        check_same_device("weights", weights, noise, "noise")
        if weights.device.type == "cpu":
            check_weight_rows(weights)
