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


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    """Check that ``value`` is an integer (a Python/NumPy int or a 0-d integer tensor, not a bool) in [lo, hi]."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and (value.dim() != 0 or value.is_floating_point())):
        raise TypeError(f"{name} must be an int in [{lo}, {hi}], got {type(value).__name__} {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int in [{lo}, {hi}], got {type(value).__name__} {value!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# Tensor statistics read to the host, by tensor, with the version counter they were read at: a CUDA tensor is
# copied to the host (a synchronisation) once, not at every call, and again only after an in-place change.
_READ = WeakIdKeyDictionary()  # tensor -> (version, values)


def _host_values(t: torch.Tensor) -> list:
    seen = _READ.get(t)
    if seen is None or seen[0] != t._version:
        seen = _READ[t] = (t._version, t.detach().flatten().tolist())
    return seen[1]


def check_channel_stats(name: str, value: object, channels: int, *, positive: bool) -> tuple[float, ...]:
    """A per-channel statistic (mean or std) as a tuple of ``channels`` finite floats. A tensor is read to the
    host once (and again after an in-place change), so a CUDA tensor costs one synchronisation, not one per
    call."""
    if isinstance(value, torch.Tensor):
        value = _host_values(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * channels
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != channels:
        raise ValueError(f"{name} must be a float or a sequence of {channels} floats, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must hold floats, got {type(v).__name__} {v!r}")
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")) or (positive and v <= 0):
            raise ValueError(f"{name} must hold {'positive ' if positive else ''}finite floats, got {tuple(value)}")
        out.append(v)
    return tuple(out)
