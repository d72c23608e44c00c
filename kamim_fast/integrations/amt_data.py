"""AMT's input path: the crop box and flip recorded in the workers, the attention map cropped in the step.

The published AMT dataset crops and flips each image's attention map in the dataloader workers, beside the
image (``amtdatasets.maskRandomResizedCrop``, REFERENCE.md section 5). Here the workers do next to nothing
for AMT: :class:`AMTRandomResizedCrop` crops and flips the image and records the box and the flip (seven
integers, :data:`CROP_FIELDS`), :class:`AMTDataset` appends the image's dataset index, and in the training
step :func:`crop_patch_weights` turns the batch's maps (``AttentionBank``), boxes and flips into the
(B, N) patch weights :func:`kamim_fast.amt_masking` samples from, on the device, in a few small tensor ops.

Two ways to crop the map (``map_crop``, see :data:`kamim_fast.AMT_DEFAULTS` and :data:`kamim_fast.AMT_PAPER`):

- ``"box"`` (the default): the map gets the image's crop. Defined by :func:`crop_patch_weights_ref`:
  upsample the (h, w) map to the H x W image (bilinear), take the box, resize it to the output size
  (bilinear), flip it with the image, sum it per patch. Both resizes are ``F.interpolate(mode="bilinear",
  align_corners=False)`` without antialiasing: the upsampled map is piecewise linear over cells of H/h
  pixels, so a crop resized by the usual factors (up to ~3) has nothing to alias, and every output pixel is
  an exact 4-tap combination of map cells.
- ``"paper"``: the published quirk. The map is sliced as ``map[i//H : (i+h)//H + 2, j//W : (j+w)//W + 2]``
  (always its top-left 2 or 3 x 2 or 3 cells, since i < H and j < W), resized to the output size as
  torchvision's ``F.resize`` resizes a tensor (bilinear with antialiasing, torchvision's default since 0.17;
  for these upsamplings the same as without), clamped to [0, 1], flipped with the image and summed per patch
  (``models_mae.patchify_map(...).sum(-1)``).

:func:`crop_patch_weights` computes either without building a pixel map: per image, the weight of output
patch (r, c) is ``sum_{k,l} Y[r, k] * map[k, l] * X[c, l]``, where Y (rows) and X (columns) hold, per output
patch, the summed interpolation weights of its output rows (columns) on the map's rows (columns): 4 taps per
output row in ``"box"`` mode (the crop resize's 2 on image rows, each the upsample's 2 on map rows), 2 or 3
in ``"paper"`` mode, evaluated as hat functions over the map's cells (dense (B, S, h) tensors, summed in a
fixed order: no scatter, no atomics). It equals the per-pixel reference up to float rounding (tests: float64 to 1e-10,
float32 to 1e-5 relative).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .._checks import FLOAT_DTYPES, check_choice, check_int, check_size_pair, check_tensor
from ..amt_presets import AMT_DEFAULTS, MAP_CROPS, check_amt_options

CROP_FIELDS = ("top", "left", "height", "width", "image_height", "image_width", "flip")
"""The seven integers :class:`AMTRandomResizedCrop` records per image, in this order: the crop box (top row,
left column, height, width) in pixels of the image, the image's height and width, and 1 if the crop was
flipped horizontally after resizing (else 0). A batch of them is a (B, 7) integer tensor."""

CROP_INT_DTYPES = (torch.int32, torch.int64)
MAE_CROP_SCALE = (0.2, 1.0)  # published mae-AMT: RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=3)
CROP_RATIO = (3 / 4, 4 / 3)


# --- argument checks ------------------------------------------------------------------------------------


def check_crops(crops: object, batch: int | None = None) -> torch.Tensor:
    """Checks a (B, 7) integer tensor of :data:`CROP_FIELDS`; its values too when it is on the CPU (looking at
    a CUDA tensor's values would synchronise with the host)."""
    check_tensor("crops", crops, dtypes=CROP_INT_DTYPES, ndims=(2,), shape_doc="(B, 7) of CROP_FIELDS")
    if crops.shape[1] != len(CROP_FIELDS):
        raise ValueError(f"crops must have shape (B, 7) (top, left, height, width, image_height, image_width, flip), "
                         f"got {tuple(crops.shape)}")
    if batch is not None and crops.shape[0] != batch:
        raise ValueError(f"crops must have one row per map ({batch}), got shape {tuple(crops.shape)}")
    if crops.device.type == "cpu" and crops.numel():
        i, j, h, w, H, W, flip = crops.long().unbind(1)
        bad = (h < 1) | (w < 1) | (i < 0) | (j < 0) | (i + h > H) | (j + w > W) | ((flip != 0) & (flip != 1))
        if bool(bad.any()):
            b = int(bad.nonzero()[0, 0])
            raise ValueError(f"crops must hold boxes inside their images (0 <= top, top + height <= image_height, the "
                             f"same for columns, height and width >= 1, flip 0 or 1); row {b} is "
                             f"{dict(zip(CROP_FIELDS, crops[b].tolist()))}")
    return crops


def check_maps(maps: object, map_crop: str, name: str = "maps") -> torch.Tensor:
    """Checks a (B, h, w) float tensor of attention maps; on the CPU also its values: finite and >= 0, and at most
    1 for ``map_crop="paper"`` (whose clamp to [0, 1] the fast path folds away)."""
    check_tensor(name, maps, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, h, w)")
    if maps.device.type == "cpu" and maps.numel():
        m = maps.detach()
        hi = 1.0 if map_crop == "paper" else float("inf")
        bad = ~((m >= 0) & (m <= hi)) | m.isinf()
        if bool(bad.any()):
            b, r, c = bad.nonzero()[0].tolist()
            want = "in [0, 1]" if map_crop == "paper" else "finite and >= 0"
            raise ValueError(f"{name} must be {want}; map {b} holds {float(m[b, r, c]):g} at ({r}, {c})")
    return maps


# --- the per-pixel references ---------------------------------------------------------------------------


def _patch_sum(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """(S_h, S_w) -> (S_h/p * S_w/p,): the sum of each p x p patch, row-major (models_mae.patchify_map(...).sum(-1))."""
    Sh, Sw = pixels.shape
    return pixels.reshape(Sh // patch, patch, Sw // patch, patch).sum((1, 3)).flatten()


def crop_patch_weights_ref(
    maps: torch.Tensor,
    crops: torch.Tensor,
    size: int | tuple[int, int],
    *,
    patch_size: int = 16,
    map_crop: str = AMT_DEFAULTS["map_crop"],
) -> torch.Tensor:
    """:func:`crop_patch_weights` per image through the per-pixel map, as the module's docstring defines it.

    ``"box"``: ``F.interpolate`` of the map to the image's H x W (bilinear), the box, ``F.interpolate`` to
    ``size`` (bilinear), the flip, the patch sums. ``"paper"``: the published corner slice, resized with
    ``antialias=True`` (torchvision's ``F.resize``), clamped to [0, 1], flipped, summed per patch.

    Example:
        >>> maps = torch.rand(1, 4, 4)
        >>> crops = torch.tensor([[0, 0, 64, 64, 64, 64, 0]])  # the whole 64 x 64 image, not flipped
        >>> crop_patch_weights_ref(maps, crops, 64).shape  # 16 px patches: a 4 x 4 grid
        torch.Size([1, 16])
    """
    Sh, Sw, p, map_crop = _check_common(maps, crops, size, patch_size, map_crop)
    out = []
    for m, (i, j, h, w, H, W, flip) in zip(maps, crops.tolist()):
        if map_crop == "box":
            full = F.interpolate(m[None, None], size=(H, W), mode="bilinear", align_corners=False)
            pixels = F.interpolate(full[..., i:i + h, j:j + w], size=(Sh, Sw), mode="bilinear", align_corners=False)
        else:
            corner = m[i // H:(i + h) // H + 2, j // W:(j + w) // W + 2]
            pixels = F.interpolate(corner[None, None], size=(Sh, Sw), mode="bilinear", align_corners=False,
                                   antialias=True).clamp(0, 1)
        if flip:
            pixels = pixels.flip(-1)
        out.append(_patch_sum(pixels[0, 0], p))
    return torch.stack(out) if out else maps.new_zeros((0, (Sh // p) * (Sw // p)))


def _check_common(maps, crops, size, patch_size, map_crop) -> tuple[int, int, int, str]:
    map_crop = check_choice("map_crop", map_crop, MAP_CROPS)
    check_maps(maps, map_crop)
    check_crops(crops, maps.shape[0])
    if crops.device != maps.device:
        raise ValueError(f"crops must be on maps' device {maps.device}, got {crops.device}")
    Sh, Sw = check_size_pair("size", size)
    p = check_int("patch_size", patch_size, 1, 1 << 16)
    if Sh % p or Sw % p:
        raise ValueError(f"size {(Sh, Sw)} must be divisible by patch_size={p}")
    return Sh, Sw, p, map_crop


# --- the fast path ----------------------------------------------------------------------------------------


def _linear_taps(src: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F.interpolate's bilinear (align_corners=False) taps at source positions ``src`` = (dst + 0.5) * in / out
    - 0.5 of an axis of ``length`` samples: (index0, index1, weight1); weight0 = 1 - weight1."""
    src = src.clamp(min=0)
    i0 = torch.minimum(src.floor(), length - 1)
    lam = (src - i0).clamp(0, 1)
    i1 = torch.minimum(i0 + 1, length - 1)
    return i0, i1, lam


def _hat(t: torch.Tensor, cells: int) -> torch.Tensor:
    """(B, out) source positions on an axis of ``cells`` samples -> (B, out, cells): F.interpolate's bilinear
    weights of each sample, written as the hat max(0, 1 - |t - k|) at t clamped to [0, cells - 1] (the same two
    taps, the edge clamp included)."""
    k = torch.arange(cells, dtype=t.dtype, device=t.device)
    return (1 - (t.clamp(0, cells - 1).unsqueeze(-1) - k).abs()).clamp(min=0)


def _box_axis(start, length, full, out: int, cells: int, patch: int, dtype) -> torch.Tensor:
    """(B, out // patch, cells): per output patch along one axis, the summed weight of each map cell (box mode).

    start, length, full: (B, 1) float tensors (the box's first pixel and extent, the image's extent). Each output
    pixel takes 2 taps on the box's pixels (the crop's resize), each pixel 2 on the map's cells (the upsample)."""
    dst = torch.arange(out, dtype=dtype, device=start.device).unsqueeze(0) + 0.5  # (1, out)
    y0, y1, lam = _linear_taps(dst * (length / out) - 0.5, length)
    to_cell = cells / full
    per_row = ((1 - lam).unsqueeze(-1) * _hat((start + y0 + 0.5) * to_cell - 0.5, cells)
               + lam.unsqueeze(-1) * _hat((start + y1 + 0.5) * to_cell - 0.5, cells))  # (B, out, cells)
    return per_row.reshape(-1, out // patch, patch, cells).sum(2)


def _paper_axis(start, length, full, out: int, cells: int, patch: int, dtype) -> torch.Tensor:
    """(B, out // patch, cells): the same for the published slice, rows [i // H, (i + h) // H + 2) = [0, 2) or
    [0, 3) since 0 <= i < H, resized with antialiasing (torch's triangle filter; for these upsamplings the
    bilinear taps) (paper mode)."""
    n = torch.clamp(torch.div(start + length, full, rounding_mode="floor") + 2, max=cells)  # the slice's rows
    scale = n / out
    support = torch.clamp(scale, min=1.0)  # the triangle filter's half-width in input pixels
    centre = (torch.arange(out, dtype=dtype, device=start.device).unsqueeze(0) + 0.5) * scale  # (B, out)
    k = torch.arange(cells, dtype=dtype, device=start.device)
    x = (k + 0.5 - centre.unsqueeze(-1)) / support.unsqueeze(-1)  # (B, out, cells)
    w = (1 - x.abs()).clamp(min=0) * (k < n.unsqueeze(-1)).to(dtype)
    per_row = w / w.sum(-1, keepdim=True)
    return per_row.reshape(-1, out // patch, patch, cells).sum(2)


def crop_patch_weights(
    maps: torch.Tensor,
    crops: torch.Tensor,
    size: int | tuple[int, int],
    *,
    patch_size: int = 16,
    map_crop: str = AMT_DEFAULTS["map_crop"],
    **preset: object,
) -> torch.Tensor:
    """Per-patch attention weights of the batch's crops, from the images' maps and their crop boxes and flips.

    What the published dataset gives the model as ``mask_weights``, summed per patch as its
    ``amt_masking_throwing`` does, without building a per-pixel map: per image, two small matrices of
    interpolation weights (rows and columns) and a (h, w) map make the (S_h/p) x (S_w/p) patch weights. The
    result feeds :func:`kamim_fast.amt_masking` (``patch_size`` = the model's patch, 16) or, with SimMIM-AMT's
    32 px mask cells, its cell sampling (``patch_size=32``: 7 x 7 weights at 224). Equal to
    :func:`crop_patch_weights_ref` up to float rounding (float32 to 1e-5 relative; fixed-order sums, no
    atomics, no host synchronisation).

    Args:
        maps: the images' attention maps (``AttentionBank.maps[index]``), >= 0 (in [0, 1] for ``"paper"``);
            their values are checked on the CPU only. Computed in float32 (float64 for float64 maps).
        crops: the crop box and flip of each image (:data:`CROP_FIELDS`), as :class:`AMTRandomResizedCrop`
            records them; checked on the CPU only.
        size: the crop's output size, an int or (S_h, S_w), divisible by ``patch_size``.
        patch_size: the side of a weighted patch in output pixels.
        map_crop: ``"box"`` (the map is cropped where the image is) or ``"paper"`` (the published corner slice).
        **preset: the other options of :data:`kamim_fast.AMT_DEFAULTS`, so that ``**AMT_PAPER`` can be passed
            whole; they are not used here.

    Returns:
        (B, N) weights, N = (S_h / patch_size) * (S_w / patch_size), row-major, on maps' device.

    Shape:
        - maps: (B, h, w); crops: (B, 7) int32/int64; output: (B, N).

    Example:
        >>> maps = torch.zeros(1, 2, 2)
        >>> maps[0, 0, 1] = 1.0  # attention in the top-right cell of the image
        >>> crops = torch.tensor([[0, 32, 32, 32, 64, 64, 0]])  # its top-right quarter, scaled to 32 px
        >>> w = crop_patch_weights(maps, crops, 32)  # one 16 px patch per 16 x 16 output pixels
        >>> w.shape, bool(w.min() > 0)  # the crop sees only that cell's attention
        (torch.Size([1, 4]), True)
        >>> crop_patch_weights(maps, crops, 32, map_crop="paper").shape
        torch.Size([1, 4])
    """
    check_amt_options("crop_patch_weights", preset)
    Sh, Sw, p, map_crop = _check_common(maps, crops, size, patch_size, map_crop)
    dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    B, h, w = maps.shape
    c = crops.to(dtype).unsqueeze(-1)  # (B, 7, 1)
    axis = _box_axis if map_crop == "box" else _paper_axis
    rows = axis(c[:, 0], c[:, 2], c[:, 4], Sh, h, p, dtype)  # (B, Sh/p, h)
    cols = axis(c[:, 1], c[:, 3], c[:, 5], Sw, w, p, dtype)  # (B, Sw/p, w)
    cols = torch.where(crops[:, 6].view(B, 1, 1).bool(), cols.flip(1), cols)  # a flip reverses the patch columns
    m = maps.to(dtype)
    # (B, Sh/p, h) x (B, h, w) x (B, w, Sw/p) as broadcast products and sums: a fixed order, no TF32
    left = (rows.unsqueeze(-1) * m.unsqueeze(1)).sum(2)  # (B, Sh/p, w)
    out = (left.unsqueeze(2) * cols.unsqueeze(1)).sum(-1)  # (B, Sh/p, Sw/p)
    return out.reshape(B, -1)


# --- the workers' side ------------------------------------------------------------------------------------


class AMTRandomResizedCrop:
    """torchvision's ``RandomResizedCrop`` and a random horizontal flip that record the box and the flip.

    The random draws are torchvision's, in the published order: ``RandomResizedCrop.get_params`` (box), then
    ``torch.rand(1) < hflip`` (flip), from torch's global generator. With the same seed the boxes and flips
    are those of the published ``maskRandomResizedCrop`` + ``maskRandomHorizontalFlip``. The image is cropped,
    resized and flipped by ``torchvision.transforms.functional`` (PIL images or tensors).

    Args:
        size: output size, an int or (S_h, S_w) (mae-AMT: 224).
        scale: range of the crop's share of the image area (mae-AMT: (0.2, 1.0); SimMIM-AMT: (0.67, 1.0)).
        ratio: range of the crop's aspect ratio.
        interpolation: a ``torchvision.transforms.InterpolationMode`` (mae-AMT: bicubic; SimMIM-AMT: bilinear).
        hflip: probability of the horizontal flip (0.5).

    Returns (when called on an image):
        (the cropped, resized, possibly flipped image, a (7,) int64 tensor of :data:`CROP_FIELDS`).

    Example:
        >>> crop = AMTRandomResizedCrop(32)
        >>> image, box = crop(torch.rand(3, 48, 64))
        >>> image.shape, box.tolist()[4:6]  # the box lies in the 48 x 64 image
        (torch.Size([3, 32, 32]), [48, 64])
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        *,
        scale: tuple[float, float] = MAE_CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        interpolation: object = None,
        hflip: float = 0.5,
    ) -> None:
        from torchvision.transforms import InterpolationMode

        from .data import _check_pair

        self.size = check_size_pair("size", size)
        self.scale = _check_pair("scale", scale, 0.0, 1.0)
        if self.scale[1] <= 0:
            raise ValueError(f"scale must have a positive upper end, got {self.scale}")
        self.ratio = _check_pair("ratio", ratio, 1e-6, 1e6)
        if interpolation is None:
            interpolation = InterpolationMode.BICUBIC
        if not isinstance(interpolation, InterpolationMode):
            raise TypeError(f"interpolation must be a torchvision InterpolationMode, got {type(interpolation).__name__}")
        self.interpolation = interpolation
        if isinstance(hflip, bool) or not isinstance(hflip, (int, float)) or not 0 <= hflip <= 1:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
        self.hflip = float(hflip)

    def __call__(self, image: object) -> tuple[object, torch.Tensor]:
        import torchvision.transforms.functional as TF
        from torchvision.transforms import RandomResizedCrop

        _, H, W = TF.get_dimensions(image)
        i, j, h, w = RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        out = TF.resized_crop(image, i, j, h, w, list(self.size), self.interpolation, antialias=True)
        flip = self.hflip > 0 and bool(torch.rand(1) < self.hflip)
        if flip:
            out = TF.hflip(out)
        return out, torch.tensor([i, j, h, w, H, W, int(flip)], dtype=torch.int64)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation.value}, hflip={self.hflip})")


class AMTDataset(torch.utils.data.Dataset):
    """A dataset whose items carry their index and crop record: what AMT's training step needs.

    ``dataset[index]`` is an image or a tuple whose first element is the image (``ImageFolder``: (image,
    target)). Its image goes through ``crop`` (:class:`AMTRandomResizedCrop`) and then ``transform`` (e.g.
    ``ToTensor`` and ``Normalize``); the item is ``(image, *rest, index, crop_record)``. With ``bank``, the
    image's stored map is appended as well, (h, w) float32, read in the worker from the bank's shared memory
    (for trainers that crop the map in the workers, as the published code does; otherwise leave it out and
    crop in the step with ``bank.patch_weights(index, crop_record, ...)``).

    Args:
        dataset: any map-style dataset.
        crop: the recording crop, :class:`AMTRandomResizedCrop` or any callable image -> (image, (7,) record).
        transform: applied to the cropped image.
        bank: an ``AttentionBank`` of ``len(dataset)`` maps, or None.

    Example:
        >>> base = [(torch.rand(3, 40, 50), 7), (torch.rand(3, 60, 30), 3)]  # (image, target) pairs
        >>> ds = AMTDataset(base, AMTRandomResizedCrop(16))
        >>> image, target, index, crop = ds[1]
        >>> image.shape, target, index, crop.tolist()[4:6]
        (torch.Size([3, 16, 16]), 3, 1, [60, 30])
    """

    def __init__(
        self,
        dataset: Sequence | torch.utils.data.Dataset,
        crop: Callable[[object], tuple[object, torch.Tensor]],
        transform: Callable[[object], object] | None = None,
        *,
        bank: object | None = None,
    ) -> None:
        if not callable(crop):
            raise TypeError(f"crop must be a callable image -> (image, crop record), got {type(crop).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        if bank is not None and len(bank) != len(dataset):
            raise ValueError(f"bank must hold one map per image of dataset ({len(dataset)}), got {len(bank)}")
        self.dataset, self.crop, self.transform, self.bank = dataset, crop, transform, bank

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        item = self.dataset[index]
        image, rest = (item[0], tuple(item[1:])) if isinstance(item, (tuple, list)) else (item, ())
        image, record = self.crop(image)
        if self.transform is not None:
            image = self.transform(image)
        out = (image, *rest, index, record)
        return out + (self.bank[index],) if self.bank is not None else out
