"""Argument checks shared by every public function.

Each raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, wrong value) with a message
that names the argument, what was expected and what came.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch.utils.weak import WeakIdKeyDictionary

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


def as_float(name: str, value: object, expected: str = "a float") -> float:
    """``value`` as a float: a Python int or float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
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
        value = _host_values(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * channels
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != channels:
        raise ValueError(f"{name} must be a float or a sequence of {channels} floats, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
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
