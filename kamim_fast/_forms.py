"""The public forms of the arguments, as the ops take them, and the normalisation warning.

A public function accepts more forms than its ops: mean and std as a float, a sequence or a tensor, and none for
uint8 images; the weight options as Python scalars. These helpers turn them into the ops' arguments (raising
TypeError/ValueError naming the argument for a form the op could not take); the ops check the values. Also the
check that a float target's values fit the ``mean``/``std`` it is un-normalised with
(:class:`NormalizationWarning`), which warns, once, and never raises.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ._checks import as_float, as_int, as_str, channel_stats, check_tensor
from ._constants import CHANNEL_ORDERS, DENSITY_MODES, MAX_PATCH_SIZE
from ._opencv import FAST_MAX_THRESHOLD

ChannelStats = float | Sequence[float] | torch.Tensor


def colour_args(
    name: str,
    images: object,
    mean: ChannelStats | None,
    std: ChannelStats | None,
) -> tuple[torch.Tensor, list[float], list[float]]:
    """A colour batch's public forms as the ops take them: (images, mean, std).

    uint8 images take no mean/std (the ops get none). Float images are un-normalised as
    ``round((x*std + mean)*255)``; without mean/std they are taken to lie in [0, 1]. A statistic is a float,
    a sequence or a tensor; the ops check the values (``kamim_fast.ops._checks.check_colour``).
    """
    check_tensor(name, images, ndims=(3, 4), shape_doc="(B, 3, H, W) or (3, H, W)")
    if images.dtype == torch.uint8:
        if mean is not None or std is not None:
            raise ValueError(f"mean and std apply to float {name}; got uint8 {name} with mean={mean!r}, std={std!r}")
        return images, [], []
    mean_t = channel_stats("mean", 0.0 if mean is None else mean, 3)
    std_t = channel_stats("std", 1.0 if std is None else std, 3)
    return images, list(mean_t), list(std_t)


class WeightOptions(NamedTuple):
    """KAMIM's weight options as the ops take them (``patch_weights``'s arguments after the images)."""

    weight_patch_size: int
    temperature: float
    threshold: int
    density: str
    channel_order: str
    mean: list[float]
    std: list[float]


def weight_options(name, images, weight_patch_size, temperature, threshold, density, mean, std,
                   channel_order) -> tuple[torch.Tensor, WeightOptions]:
    """The weight options' public forms as the ops take them, for a colour batch called ``name`` (the ops check
    their values: ``kamim_fast.ops._checks.check_weight_options``)."""
    images, mean_l, std_l = colour_args(name, images, mean, std)
    return images, WeightOptions(
        as_int("weight_patch_size", weight_patch_size, 1, MAX_PATCH_SIZE),
        as_float("temperature", temperature, "a positive float"),
        as_int("threshold", threshold, 0, FAST_MAX_THRESHOLD), as_str("density", density, DENSITY_MODES),
        as_str("channel_order", channel_order, CHANNEL_ORDERS), mean_l, std_l)


class NormalizationWarning(UserWarning):
    """A float target's values cannot come from normalising uint8 images with the ``mean``/``std`` given."""


class _NormalizationCheck:
    """Warns once per process when a float target does not fit its ``mean``/``std`` (see :func:`check_normalization`).

    Checks the first ``MAX_CHECKS`` batches only: a wrong normalisation is wrong from the first step, and
    later steps then pay nothing. CPU tensors are checked at once. CUDA tensors are checked without a
    host synchronisation: the per-channel minima and maxima are reduced on the device and copied into
    pinned host memory with ``non_blocking=True`` behind a CUDA event; a later call reads them once
    ``event.query()`` says the copy is done, so the warning comes a step or more late. Skipped while
    ``torch.compile`` traces and during CUDA graph capture (nothing data-dependent is traced).
    """

    MAX_CHECKS = 16

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.checked = 0
        self.warned = False
        self.pending: tuple | None = None

    def __call__(self, name: str, images: torch.Tensor, mean: list[float], std: list[float]) -> None:
        if torch.compiler.is_compiling() or self.warned:
            return
        self.poll()
        if self.warned or self.checked >= self.MAX_CHECKS or images.numel() == 0:
            return
        if images.device.type == "cpu":
            self.checked += 1
            self.report(_minmax(images.detach()).tolist(), name, mean, std, stacklevel=5)
        elif images.is_cuda and self.pending is None:
            with torch.cuda.device(images.device):  # the stream that reduces is the stream the event records on
                if torch.cuda.is_current_stream_capturing():
                    return
                host = torch.empty(6, dtype=torch.float32, pin_memory=True)
                host.copy_(_minmax(images.detach()), non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            self.pending = (event, host, name, mean, std)

    def poll(self, stacklevel: int = 6) -> None:
        """Read a finished CUDA check, if any (never waits)."""
        if self.pending is not None and self.pending[0].query():
            _, host, name, mean, std = self.pending
            self.pending = None
            self.checked += 1
            self.report(host.tolist(), name, mean, std, stacklevel=stacklevel)

    def report(self, minmax: list[float], name: str, mean: list[float], std: list[float], stacklevel: int) -> None:
        """Warn (pointing at the caller of the public function) if ``minmax`` does not fit mean/std."""
        message = normalization_problem(minmax, name, mean, std)
        if message is not None:
            self.warned = True
            warnings.warn(message, NormalizationWarning, stacklevel=stacklevel)


def _minmax(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (6,) float32: the per-channel minima, then maxima (NaN propagates)."""
    lo, hi = torch.aminmax(images.transpose(0, 1).reshape(3, -1), dim=1)
    return torch.cat([lo, hi]).to(torch.float32)


def normalization_problem(minmax: list[float], name: str, mean: list[float], std: list[float]) -> str | None:
    """The message of :class:`NormalizationWarning` for per-channel minima and maxima, or None if they fit.

    Two tests, in uint8 units ``v = (x * std + mean) * 255`` per channel:

    - some value lies outside what normalising 0..255 can give (v < -2 or v > 257): e.g. a float image in
      0..255, or other statistics; KAMIM's weights then see clamped pixels;
    - every value lies within [0, 1] (and not all are equal) although ``mean`` is positive in every
      channel: an image in [0, 1] that was not normalised (a normalised photo has values below 0
      wherever it is darker than the mean). Its gray comes out washed out and its weights wrong.
    """
    lo, hi = minmax[:3], minmax[3:]
    if any(math.isnan(v) for v in minmax):
        return None
    stats = f"mean={tuple(round(m, 4) for m in mean)}, std={tuple(round(s, 4) for s in std)}"
    v_lo = [(x * s + m) * 255 for x, s, m in zip(lo, std, mean)]
    v_hi = [(x * s + m) * 255 for x, s, m in zip(hi, std, mean)]
    if min(v_lo) < -2 or max(v_hi) > 257:
        ranges = ", ".join(f"[{(0 - m) / s:.3g}, {(1 - m) / s:.3g}]" for m, s in zip(mean, std))
        seen = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi))
        return (f"{name} holds values outside the range that normalising 0..255 with {stats} can give (per "
                f"channel {ranges}; got {seen}): KAMIM's weights see those pixels clamped. Pass the mean and std "
                f"{name} was normalised with (mean=0, std=1 for images in [0, 1]). Warned once.")
    constant = max(hi) == min(lo)  # e.g. torch.zeros: a placeholder, not an image
    if not constant and min(lo) >= 0 and max(hi) <= 1 and all(-m / s < -2 / (255 * s) for m, s in zip(mean, std)):
        return (f"{name} holds values that all lie within [0, 1], which looks like an image that was not normalised, "
                f"while {stats} say it was: KAMIM's weights would come from a washed-out gray. Pass mean=0, std=1 "
                f"for images in [0, 1], or normalise {name}. Warned once.")
    return None


_NORMALIZATION_CHECK = _NormalizationCheck()


def check_normalization(name: str, images: torch.Tensor, mean: list[float], std: list[float]) -> None:
    """Warn once (:class:`NormalizationWarning`) when float ``images`` cannot have been normalised with
    ``mean``/``std``; cheap, and without a host synchronisation on CUDA (see :class:`_NormalizationCheck`)."""
    _NORMALIZATION_CHECK(name, images, mean, std)
