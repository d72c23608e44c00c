"""The public forms of the arguments, as the ops take them, and the normalisation warning.

A public function accepts more forms than its ops: mean and std as a float, a sequence or a tensor, and none for
uint8 images; the weight options as Python scalars. These helpers turn them into the ops' arguments (raising
TypeError/ValueError naming the argument for a form the op could not take); the ops check the values. Also the
check that a float target's values fit the ``mean``/``std`` it is un-normalised with
(:class:`NormalizationWarning`), which warns once per cause and never raises.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ._checks import as_float, as_int, as_str, channel_stats, check_tensor, forget_warnings, warn_once
from ._constants import CHANNEL_ORDERS, DENSITY_MODES, MAX_PATCH_SIZE
from ._opencv import FAST_MAX_THRESHOLD
from .ops.rgb_to_gray_u8 import GRID_TOLERANCE, colour_stats_ref

ChannelStats = float | Sequence[float] | torch.Tensor


def image_tensor(name: str, image: object, *, arrays: bool = False) -> object:
    """An image's public forms as a tensor: a PIL image (mode RGB, or L: its gray in all three channels, which
    gives the same gray) -> (3, H, W) uint8; with ``arrays``, an (H, W, 3) uint8 NumPy array -> (3, H, W) uint8
    (a read-only array, such as ``np.asarray(pil_image)``, or a non-contiguous one is copied: torch warns on
    read-only arrays). Anything else is
    returned as it is, for the caller's check."""
    pil = sys.modules.get("PIL.Image")  # a PIL image exists only where PIL was imported
    if pil is not None and isinstance(image, pil.Image):
        if image.mode not in ("RGB", "L"):
            raise ValueError(f"{name} must be an RGB or L (gray) PIL image, got mode {image.mode!r}: convert it "
                             f"first, e.g. image.convert('RGB')")
        a = np.array(image)  # a writable copy
        return torch.from_numpy(np.repeat(a[..., None], 3, -1) if image.mode == "L" else a).permute(2, 0, 1)
    if arrays and isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{name} must be an (H, W, 3) uint8 array, a PIL image or a (3, H, W) tensor, got a "
                             f"{image.dtype} array of shape {image.shape}")
        if not (image.flags.c_contiguous and image.flags.writeable):  # a flipped or strided view, Fortran
            image = np.array(image, order="C")  # order, a read-only array (np.asarray of a PIL image): a copy
        return torch.from_numpy(image).permute(2, 0, 1)
    return image


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
    images = image_tensor(name, images)
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


GRID_FRACTION = 0.5
"""The share of values off the grid above which the statistics are said to be wrong: with wrong statistics the
fractional parts spread evenly, so about 90% of values lie off the grid; with the right ones, none."""
GRID_DTYPES = (torch.float32, torch.float64)  # float16/bfloat16 round normalised values off the grid themselves


class _NormalizationCheck:
    """Warns when a float target does not fit its ``mean``/``std`` (see :func:`check_normalization`), once per
    distinct cause (the problem, the argument's name, the statistics), pointing at the user's line.

    Checks the first ``MAX_CHECKS`` batches of each (name, mean, std): a wrong normalisation is wrong from the
    first step, and later steps then pay nothing. The statistics it reads (per-channel minima and maxima, and
    the number of values off the 1/255 grid: ``colour_stats_ref``) come from the op where it computes them in
    its own pass (the native CPU ``patch_weights``), else from one reduction. CPU tensors are checked at once.
    CUDA tensors are checked without a host synchronisation: the statistics are reduced on the device and
    copied into pinned host memory with ``non_blocking=True`` behind a CUDA event; a later call reads them once
    ``event.query()`` says the copy is done, so the warning comes a step or more late. Skipped while
    ``torch.compile`` traces and during CUDA graph capture (nothing data-dependent is traced).
    """

    MAX_CHECKS = 16

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh: nothing checked, nothing warned (tests)."""
        self.checked = 0  # batches checked in all
        self.budget: dict[tuple, int] = {}  # (name, mean, std) -> batches checked
        self.pending: tuple | None = None
        forget_warnings(NormalizationWarning)

    def wants(self, name: str, images: torch.Tensor, mean: list[float], std: list[float]) -> bool:
        """Whether this call's batch is to be checked (the ops compute the statistics only then)."""
        if torch.compiler.is_compiling() or not images.is_floating_point() or images.numel() == 0:
            return False
        self.poll()
        if self.budget.get((name, tuple(mean), tuple(std)), 0) >= self.MAX_CHECKS:
            return False
        if images.is_cuda:
            with torch.cuda.device(images.device):
                return self.pending is None and not torch.cuda.is_current_stream_capturing()
        return images.device.type == "cpu"

    def __call__(self, name: str, images: torch.Tensor, mean: list[float], std: list[float],
                 stats: torch.Tensor | None = None) -> None:
        if not self.wants(name, images, mean, std):
            return
        key = (name, tuple(mean), tuple(std))
        self.budget[key] = self.budget.get(key, 0) + 1
        if stats is None or not stats.numel():
            stats = colour_stats_ref(images.detach(), mean, std)
        grid = images.dtype in GRID_DTYPES
        count = images.numel()
        if images.device.type == "cpu":
            self.checked += 1
            self.report(stats.tolist(), count, grid, name, mean, std)
        else:
            with torch.cuda.device(images.device):  # the stream that reduces is the stream the event records on
                host = torch.empty(stats.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(stats, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            self.pending = (event, host, count, grid, name, mean, std)

    def poll(self) -> None:
        """Read a finished CUDA check, if any (never waits)."""
        if self.pending is not None and self.pending[0].query():
            _, host, count, grid, name, mean, std = self.pending
            self.pending = None
            self.checked += 1
            self.report(host.tolist(), count, grid, name, mean, std)

    def report(self, stats: list[float], count: int, grid: bool, name: str, mean: list[float],
               std: list[float]) -> None:
        """Warn, once per cause, if ``stats`` (``colour_stats_ref``'s) do not fit mean/std."""
        problem = normalization_problem(stats, name, mean, std, count if grid else 0)
        if problem is not None:
            kind, message = problem
            warn_once((kind, name, tuple(mean), tuple(std)), message, NormalizationWarning)


def normalization_problem(stats: list[float], name: str, mean: list[float], std: list[float],
                          count: int = 0) -> tuple[str, str] | None:
    """(kind, message) of :class:`NormalizationWarning` for ``colour_stats_ref``'s statistics (per-channel
    minima, maxima, and the number of values off the 1/255 grid), or None if they fit.

    Three tests, in uint8 units ``v = (x * std + mean) * 255`` per channel:

    - ``"range"``: some value lies outside what normalising 0..255 can give (v < -2 or v > 257): e.g. a float
      image in 0..255, or other statistics; KAMIM's weights then see clamped pixels;
    - ``"unit"``: every value lies within [0, 1] (and not all are equal) although ``mean`` is positive in every
      channel: an image in [0, 1] that was not normalised (a normalised photo has values below 0 wherever it
      is darker than the mean). Its gray comes out washed out and its weights wrong;
    - ``"grid"`` (``count`` > 0, the number of values checked: float32/float64 input): more than half of the
      values lie more than :data:`GRID_TOLERANCE` from the uint8 value they round to. A uint8 image
      normalised with these statistics un-normalises onto whole numbers; other statistics
      (ViTImageProcessor's 0.5 taken for ImageNet's, whose range is about the same) move almost every
      value off them.
    """
    lo, hi = stats[:3], stats[3:6]
    if any(math.isnan(v) for v in stats[:6]) or any(a > b for a, b in zip(lo, hi)):  # a channel without values
        return None
    stats_s = f"mean={tuple(round(m, 4) for m in mean)}, std={tuple(round(s, 4) for s in std)}"
    v_lo = [(x * s + m) * 255 for x, s, m in zip(lo, std, mean)]
    v_hi = [(x * s + m) * 255 for x, s, m in zip(hi, std, mean)]
    if min(v_lo) < -2 or max(v_hi) > 257:
        ranges = ", ".join(f"[{(0 - m) / s:.3g}, {(1 - m) / s:.3g}]" for m, s in zip(mean, std))
        seen = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi))
        return "range", (
            f"{name} holds values outside the range that normalising 0..255 with {stats_s} can give (per "
            f"channel {ranges}; got {seen}): KAMIM's weights see those pixels clamped. Pass the mean and std "
            f"{name} was normalised with (mean=0, std=1 for images in [0, 1]).")
    constant = max(hi) == min(lo)  # e.g. torch.zeros: a placeholder, not an image
    if not constant and min(lo) >= 0 and max(hi) <= 1 and all(-m / s < -2 / (255 * s) for m, s in zip(mean, std)):
        return "unit", (
            f"{name} holds values that all lie within [0, 1], which looks like an image that was not normalised, "
            f"while {stats_s} say it was: KAMIM's weights would come from a washed-out gray. Pass mean=0, std=1 "
            f"for images in [0, 1], or normalise {name}.")
    if not constant and count and len(stats) > 6 and stats[6] > GRID_FRACTION * count:
        share = 100 * stats[6] / count
        return "grid", (
            f"{name} does not un-normalise onto whole uint8 values with {stats_s}: {share:.0f}% of (x * std + mean) "
            f"* 255 lie more than {GRID_TOLERANCE} from a whole number, where a uint8 image normalised with these "
            f"statistics gives none. {name} was likely normalised with other statistics (Hugging Face's "
            f"ViTImageProcessor uses 0.5, not ImageNet's): pass them (processor=... for hf_mim_loss), or KAMIM's "
            f"weights come from a wrong gray. If {name} was resampled or blended after normalising, its values "
            f"leave the grid with the right statistics too: silence this with warnings.filterwarnings('ignore', "
            f"category=kamim_fast.NormalizationWarning).")
    return None


_NORMALIZATION_CHECK = _NormalizationCheck()


def check_normalization(name: str, images: torch.Tensor, mean: list[float], std: list[float],
                        stats: torch.Tensor | None = None) -> None:
    """Warn (:class:`NormalizationWarning`, once per cause) when float ``images`` cannot have been normalised
    with ``mean``/``std``; cheap, and without a host synchronisation on CUDA (see :class:`_NormalizationCheck`).
    ``stats``: ``colour_stats_ref(images, mean, std)`` where an op computed it already (else it is reduced here)."""
    _NORMALIZATION_CHECK(name, images, mean, std, stats)


def wants_normalization_check(name: str, images: torch.Tensor, mean: list[float], std: list[float]) -> bool:
    """Whether :func:`check_normalization` will check this call's ``images`` (so an op should compute the
    statistics in its own pass)."""
    return _NORMALIZATION_CHECK.wants(name, images, mean, std)
