"""KAMIM's per-patch weights from keypoint density (REFERENCE.md sections 3 and 7).

Also the one place where the weight options' defaults live (:data:`KAMIM_DEFAULTS`, :data:`KAMIM_PAPER`),
and the data-loader transform :class:`KamimWeights`. The check that a float target's values fit the ``mean``/``std``
it is un-normalised with (:class:`NormalizationWarning`) is ``kamim_fast/_forms.py``'s.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import as_float, check_choice
from ._checks import check_temperature as check_temperature_value
from ._constants import (  # noqa: F401  (public here)
    CHANNEL_ORDER, CHANNEL_ORDERS, DENSITY, DENSITY_MODES, DETECTOR, IMAGENET_MEAN, IMAGENET_STD, TEMPERATURE,
    WEIGHT_LOG_CLIP, WEIGHT_PATCH_SIZE,
)
from ._forms import (  # noqa: F401  (public here)
    _NORMALIZATION_CHECK, ChannelStats, NormalizationWarning, WeightOptions, check_normalization,
    normalization_problem, weight_options,
)
from ._opencv import FAST_DEFAULT_THRESHOLD
from .density import keypoint_density, keypoint_density_ref, ring_stencil  # noqa: F401  (public here)
from .detectors import DETECTORS
from .ops import patch_weights as _op
from .ops.patch_weights import density_to_weights, weights_from_keypoints  # noqa: F401  (public here)

KAMIM_DEFAULTS = MappingProxyType(dict(
    weight_patch_size=WEIGHT_PATCH_SIZE, temperature=TEMPERATURE, threshold=FAST_DEFAULT_THRESHOLD, density=DENSITY,
    channel_order=CHANNEL_ORDER,
))
"""The defaults of KAMIM's weight options, the same at every entry point: :func:`patch_weights`,
:class:`KamimWeights`, :func:`weighted_mim_loss` and :class:`WeightedMIMLoss` (``weights="fast"``), the
integrations (``SimMIM``, ``HFMaskedImageModeling``, ``hf_mim_loss``, ``simmim_vit``) and ``kamim-fast show``.
They are the published values (8 px cells, T = 0.25, FAST at OpenCV's threshold 10, drawKeypoints rings)
except ``channel_order``, which is ``"rgb"`` (OpenCV's COLOR_RGB2GRAY of an RGB image, the gray one
means). :data:`KAMIM_PAPER` is the published configuration, ``"bgr"`` included. Also shared: ``mean`` and
``std`` of float images default to ImageNet's, and ``detector`` (where taken) to ``"fast"``. A read-only
mapping; ``{**KAMIM_DEFAULTS, ...}`` makes a dict."""

KAMIM_PAPER: dict = {**KAMIM_DEFAULTS, "channel_order": "bgr"}
"""The published KAMIM configuration (ViT-B checkpoints): 8 px cells, T = 0.25, FAST at OpenCV's default
threshold 10, drawKeypoints rings, and ``channel_order="bgr"``: the published dataloader hands RGB arrays
to OpenCV, which converts them with COLOR_BGR2GRAY, so the R and B weights of the gray are swapped. It
differs from :data:`KAMIM_DEFAULTS` in that one option. Use ``weighted_mim_loss(pred, target, mask,
"fast", **KAMIM_PAPER)``, ``patch_weights(images, detector=..., **KAMIM_PAPER)`` or
``KamimWeights(detector=..., **KAMIM_PAPER)`` to reproduce the published weights exactly.

What the swap changes, measured on 192x192 crops of scikit-image's colour photographs (astronaut, coffee,
chelsea, rocket; 16 random crops each, ImageNet-normalised): the two grays give different FAST keypoints
(31% of the union of both sets differs; 25% to 41% per photo), so 34% of the 8 px cells get a different
weight, by 20% of the weight on average over all cells. The loss of a blurred reconstruction (5x5 box
filter, SimMIM's 60% masks) moves by 2.1% on average (0.2% to 6% per batch of 16). The trend is the same
(keypoint-dense cells weigh more) but the values differ, so a reproduction must use ``"bgr"``."""


def check_temperature(temperature: object) -> float:
    """``temperature`` as a float, checked as the weight options' op checks it (for the constructors)."""
    temperature = as_float("temperature", temperature, "a positive float")
    check_temperature_value(temperature)
    return temperature


def patch_weights(
    images: torch.Tensor,
    *,
    weight_patch_size: int = WEIGHT_PATCH_SIZE,
    temperature: float = TEMPERATURE,
    threshold: int = FAST_DEFAULT_THRESHOLD,
    density: str = DENSITY,
    mean: ChannelStats | None = IMAGENET_MEAN,
    std: ChannelStats | None = IMAGENET_STD,
    channel_order: str = CHANNEL_ORDER,
    detector: str = DETECTOR,
) -> torch.Tensor:
    """KAMIM's per-cell loss weights, computed from the images.

    gray (OpenCV's formula, after un-normalising float input) -> keypoints (FAST with non-max
    suppression, on the images' device; or OpenCV's ORB or SIFT) -> keypoint density per cell ->
    ``exp(clip(d/T, -20, 20))`` / its minimum over the image. Defaults: :data:`KAMIM_DEFAULTS`; pass
    ``**KAMIM_PAPER`` for the published configuration.

    Args:
        images: uint8 images, or float images normalised with ``mean``/``std`` (the SimMIM target).
        weight_patch_size: cell size p of the weights (published: 8; sweeps used 16 and 32).
        temperature: T > 0 (published: 0.25; sweeps used 0.1 to 2.5).
        threshold: FAST threshold, 0..255 (OpenCV's default 10).
        density: ``"ring"`` (published) or ``"count"``, as in :func:`keypoint_density`.
        mean: normalisation mean of float images (ImageNet's by default); ignored for uint8.
        std: normalisation std of float images (ImageNet's by default); ignored for uint8.
        channel_order: ``"rgb"`` (COLOR_RGB2GRAY), or ``"bgr"``: COLOR_BGR2GRAY's weights, the gray the
            published code got by handing RGB arrays to OpenCV (``KAMIM_PAPER``). It matters: on 192x192
            crops of scikit-image's colour photos, 31% of the FAST keypoints differ between the two grays,
            34% of the 8 px cells get another weight (by 20% on average), and the loss of a blurred
            reconstruction moves by 2.1% on average (0.2% to 6% per batch).
        detector: ``"fast"`` (KAMIM's, on the device), or ``"orb"`` / ``"sift"``: ``cv2.ORB_create()`` /
            ``cv2.SIFT_create()`` with default settings on the gray, rings drawn by ``cv2.drawKeypoints``
            (sub-pixel centres), as the published code's ``--detector orb|sift``. These two need OpenCV
            (``pip install kamim-fast[opencv]``), run on the CPU one image at a time (CUDA images are
            copied to the host and back: a synchronisation), and take no ``threshold``.

    Returns:
        float32 weights >= 1, the smallest of each image exactly 1, on the images' device.

    Raises:
        ImportError: ``detector="orb"`` or ``"sift"`` without OpenCV; the message names the extra.

    Shape:
        - images: (B, 3, H, W), H and W divisible by ``weight_patch_size``.
        - output: (B, H/p, W/p).

    Example:
        >>> images = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
        >>> images[0, :, 4, 4] = 255  # one bright dot: a FAST corner
        >>> patch_weights(images, temperature=0.25)  # exp((d - d_min) / T)
        tensor([[[13.8046,  1.2062],
                 [ 1.2062,  1.0000]]])
    """
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        mean = std = None  # the defaults are for float targets
    images, opts = weight_options("images", images, weight_patch_size, temperature, threshold, density, mean, std,
                                  channel_order)
    check_choice("detector", detector, DETECTORS)
    if detector != "fast" and opts.threshold != FAST_DEFAULT_THRESHOLD:
        raise ValueError(f"threshold={opts.threshold} applies to detector='fast' only; ORB and SIFT run with OpenCV's "
                         f"default settings, as published")
    if detector == "fast":
        weights = torch.ops.kamim_fast.patch_weights(images, *opts)
    else:
        from .detectors import keypoint_maps

        _op.check(images, *opts)  # the op's check: these detectors run without it
        gray = torch.ops.kamim_fast.rgb_to_gray_u8(images, opts.channel_order, opts.mean, opts.std)
        maps = keypoint_maps(gray, detector, opts.density)  # (B, H, W) 0/1 on the CPU: the published feat
        density_map = F.avg_pool2d(maps.unsqueeze(1), opts.weight_patch_size).squeeze(1)
        weights = density_to_weights(density_map, opts.temperature).to(images.device)
    if images.is_floating_point():
        check_normalization("images", images, opts.mean, opts.std)
    return weights


class KamimWeights:
    """KAMIM's weights of one image, as a transform for data-loader workers (the published structure).

    The published dataset (``KAMIM_Dataset(..., return_FAST=True)``) runs the keypoint detector and
    drawKeypoints per image in the workers and yields the ring map; its training loop pools it into
    weights. ``KamimWeights`` yields the weights themselves: call it on the augmented image in
    ``__getitem__`` and pass the batch of weights to ``weighted_mim_loss(pred, target, mask, weights)``.
    It calls :func:`patch_weights` on a batch of one, so it equals it exactly (and uses the native CPU
    kernels where they are built). Picklable: its state is its options.

    Args:
        detector: ``"fast"``, ``"orb"`` or ``"sift"`` (see :func:`patch_weights`; the last two need OpenCV,
            checked here, at construction).
        weight_patch_size, temperature, threshold, density, channel_order: as :func:`patch_weights`;
            defaults :data:`KAMIM_DEFAULTS`; ``**KAMIM_PAPER`` for the published configuration.
        mean, std: the normalisation of float images (ImageNet's by default); unused for uint8 images.

    Shape:
        - image: (H, W, 3) uint8 numpy array (the published ``img.permute(1, 2, 0).numpy()``), or a
          (3, H, W) uint8 or normalised float tensor; H and W divisible by ``weight_patch_size``.
        - output: (H/p, W/p) float32 CPU tensor (on the image's device for a tensor input).

    Example:
        >>> import numpy as np
        >>> img = np.full((16, 16, 3), 128, np.uint8)
        >>> img[4, 4] = 255  # one bright dot: a FAST corner
        >>> KamimWeights(**KAMIM_PAPER)(img)
        tensor([[13.8046,  1.2062],
                [ 1.2062,  1.0000]])
    """

    def __init__(
        self,
        *,
        detector: str = DETECTOR,
        weight_patch_size: int = WEIGHT_PATCH_SIZE,
        temperature: float = TEMPERATURE,
        threshold: int = FAST_DEFAULT_THRESHOLD,
        density: str = DENSITY,
        mean: ChannelStats | None = IMAGENET_MEAN,
        std: ChannelStats | None = IMAGENET_STD,
        channel_order: str = CHANNEL_ORDER,
    ) -> None:
        check_choice("detector", detector, DETECTORS)
        _, opts = weight_options("images", torch.zeros(0, 3, 0, 0), weight_patch_size, temperature, threshold,
                                 density, mean, std, channel_order)
        _op.check(torch.zeros(0, 3, 0, 0), *opts)  # at construction: the op's check, early
        if detector != "fast":
            from .detectors import import_cv2

            import_cv2(detector)
            if opts.threshold != FAST_DEFAULT_THRESHOLD:
                raise ValueError(f"threshold={opts.threshold} applies to detector='fast' only; ORB and SIFT run with "
                                 f"OpenCV's default settings, as published")
        self.detector = detector
        self.weight_patch_size = opts.weight_patch_size
        self.temperature = opts.temperature
        self.threshold = opts.threshold
        self.density = opts.density
        self.channel_order = channel_order
        self.mean = tuple(opts.mean)
        self.std = tuple(opts.std)

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"image must be an (H, W, 3) uint8 array or a (3, H, W) tensor, got a {image.dtype} "
                                 f"array of shape {image.shape}")
            if not (image.flags.c_contiguous and image.flags.writeable):  # a flipped or strided view, Fortran
                image = np.array(image, order="C")  # order, a read-only array (np.asarray of a PIL image): a copy
            image = torch.from_numpy(image).permute(2, 0, 1)
        elif not isinstance(image, torch.Tensor):
            raise TypeError(f"image must be an (H, W, 3) uint8 numpy array or a (3, H, W) tensor, got "
                            f"{type(image).__name__}")
        elif image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be a (3, H, W) tensor (or an (H, W, 3) uint8 array), got shape "
                             f"{tuple(image.shape)}")
        stats = {} if image.dtype == torch.uint8 else {"mean": self.mean, "std": self.std}
        return patch_weights(image[None], weight_patch_size=self.weight_patch_size, temperature=self.temperature,
                             threshold=self.threshold, density=self.density, channel_order=self.channel_order,
                             detector=self.detector, **stats)[0]

    def __repr__(self) -> str:
        names = ("detector", "weight_patch_size", "temperature", "threshold", "density", "channel_order", "mean", "std")
        return f"KamimWeights({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is KamimWeights and repr(self) == repr(other)

    __hash__ = None  # type: ignore[assignment]
