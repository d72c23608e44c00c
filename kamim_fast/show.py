"""``kamim-fast show IMAGE``: what KAMIM sees in one image, drawn side by side into a PNG.

Five panels: the image; its keypoints (FAST, or OpenCV's ORB or SIFT); the drawKeypoints ring coverage
(or the keypoint pixels with ``density="count"``); KAMIM's per-cell weight map; a SimMIM mask with the
weights of the masked patches (what the loss multiplies). The panels lie in a grid chosen from the image's
aspect ratio, each 560 px on its long side (:func:`panel_grid`); one colour bar, on a log scale and labelled
with it, serves the last two panels (:func:`weight_norm`). Needs matplotlib (``pip install kamim-fast[demo]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._checks import check_choice, check_int
from ._opencv import FAST_DEFAULT_THRESHOLD, FAST_MAX_THRESHOLD
from .detectors import DETECTORS
from .weights import CHANNEL_ORDER, DENSITY, DENSITY_MODES, DETECTOR, TEMPERATURE, WEIGHT_PATCH_SIZE, check_temperature

SHOW_MULTIPLE = 32  # SimMIM's mask cell: the image is cropped to a multiple of it


PANELS = 5  # image, keypoints, rings, weights, mask x weights
PANEL_PX = 560  # each panel's long side in the PNG, whatever the image's aspect ratio ...
PANEL_MIN_PX = 200  # ... and its short side at least this, up to PANEL_MAX_PX on the long side
PANEL_MAX_PX = 1400
TITLE_PX = 30  # a panel's title
DPI = 100
FIGURE_ASPECT = 1.4  # the figure's width / height the grid is chosen to approach (a page, a screen)
WEIGHT_CMAP = "viridis"


def panel_grid(H: int, W: int) -> tuple[int, int, tuple[int, int]]:
    """The layout of the five panels of an H x W image: ``(rows, cols, (panel_width, panel_height))`` in pixels.

    Each panel keeps the image's aspect ratio and is :data:`PANEL_PX` pixels on its long side (more for
    elongated images, so that the short side is :data:`PANEL_MIN_PX` where the long side stays within
    :data:`PANEL_MAX_PX`); the columns (1, 2, 3 or 5, each row full but the last) are those whose figure comes
    nearest :data:`FIGURE_ASPECT`: wide images stack, tall ones stand side by side, square ones make a 3 x 2 grid.

    Example:
        >>> panel_grid(416, 640)[:2], panel_grid(512, 512)[:2], panel_grid(128, 1024)[:2], panel_grid(640, 320)[:2]
        ((3, 2), (2, 3), (5, 1), (1, 5))
    """
    scale = min(max(PANEL_PX, PANEL_MIN_PX * max(H, W) / min(H, W)), PANEL_MAX_PX) / max(H, W)
    pw, ph = max(1, round(W * scale)), max(1, round(H * scale))
    best = min((1, 2, 3, 5), key=lambda c: abs(np.log(c * pw / (-(-PANELS // c) * (ph + TITLE_PX)) / FIGURE_ASPECT)))
    return -(-PANELS // best), best, (pw, ph)


def titled(ax, width_px: int, text: str) -> None:
    """``text`` as the title of ``ax``, wrapped to the panel's width (about 9 px per character)."""
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(text, max(12, width_px // 9))))


def weight_norm(weights: np.ndarray):
    """The weights' colour scale: logarithmic from 1 (every image's smallest weight) to the largest weight.

    A weight is ``exp(density / T)`` over its minimum, so its logarithm is the cell's density above the image's
    least dense cell, over ``T``: the log scale draws the density itself, where a linear one leaves the many
    low-density cells of a photograph in the bottom tenth of the colour map.
    """
    from matplotlib.colors import LogNorm

    return LogNorm(vmin=1.0, vmax=max(float(weights.max()), 1.0 + 1e-6))


def weight_scale_label(norm, temperature: float) -> str:
    """The colour bar's label: what is drawn and on which scale."""
    return f"KAMIM weight, log scale: 1 to {norm.vmax:.3g}\nlog w = (d - d_min) / T, T={temperature:g}"


def weight_ticks(vmax: float) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to ``vmax``, and ``vmax`` itself."""
    ticks = [m * 10.0**e for e in range(0, 10) for m in (1, 2, 5) if m * 10.0**e < vmax * 0.8]
    return ticks + [float(f"{vmax:.3g}")]


def load_image(path: str | Path) -> np.ndarray:
    """Read any image file scikit-image or matplotlib can read as (H, W, 3) uint8 RGB.

    Gray images are repeated to three channels, alpha is dropped, float images in [0, 1] and 16-bit
    images are scaled to 0..255.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an image either library can read, or has an unusable layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IMAGE must be an image file, got {str(path)!r}, which does not exist")
    errors = []
    img = None
    try:
        import skimage.io

        img = skimage.io.imread(str(path))
    except Exception as exc:  # noqa: BLE001 - try the next reader, report both
        errors.append(f"scikit-image: {exc}")
        try:
            import matplotlib.image

            img = matplotlib.image.imread(str(path))
        except Exception as exc2:  # noqa: BLE001
            errors.append(f"matplotlib: {exc2}")
    if img is None:
        raise ValueError(f"IMAGE must be an image file scikit-image or matplotlib can read, got {str(path)!r} "
                         f"({'; '.join(errors)})")
    return as_rgb_u8(np.asarray(img), str(path))


def as_rgb_u8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8, uint16, bool or float in [0, 1], any strides, read-only
    or not -> (H, W, 3) uint8, C-contiguous and writable (a copy where needed: torch.from_numpy takes it)."""
    if img.ndim == 3 and img.shape[-1] in (1, 3, 4):
        img = img[..., :3]
        if img.shape[-1] == 1:
            img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"{name} must be a gray, RGB or RGBA image (H, W[, C]), got an array of shape {img.shape}")
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        img = np.clip(np.rint(np.nan_to_num(img) * 255), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"{name} must hold uint8, uint16, bool or float pixels, got {img.dtype}")
    if not (img.flags.c_contiguous and img.flags.writeable):  # views, Fortran order, read-only (PIL) arrays: a copy
        img = np.array(img, order="C")
    return img


def _fit(img: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (antialiased) so the long side is at most ``max_side``, then centre-crop to multiples of 32."""
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        t = torch.nn.functional.interpolate(t, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                                            antialias=True, align_corners=False)
        img = t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        h, w = img.shape[:2]
    H, W = h // SHOW_MULTIPLE * SHOW_MULTIPLE, w // SHOW_MULTIPLE * SHOW_MULTIPLE
    if not H or not W:
        raise ValueError(f"IMAGE must be at least {SHOW_MULTIPLE}x{SHOW_MULTIPLE} pixels, got {w}x{h}")
    y, x = (h - H) // 2, (w - W) // 2
    return np.ascontiguousarray(img[y : y + H, x : x + W])


def show(
    image: str | Path | np.ndarray,
    out: str | Path,
    *,
    threshold: int = FAST_DEFAULT_THRESHOLD,
    weight_patch_size: int = WEIGHT_PATCH_SIZE,
    temperature: float = TEMPERATURE,
    channel_order: str = CHANNEL_ORDER,
    detector: str = DETECTOR,
    density: str = DENSITY,
    mask_seed: int = 0,
    max_side: int = 1024,
    device: torch.device | str | None = None,
    title: str | None = None,
) -> Path:
    """Draw image, FAST keypoints, ring coverage, weight map and mask side by side into a PNG.

    The image is shrunk to ``max_side`` on its long side when larger, then centre-cropped to multiples
    of 32 px (SimMIM's mask cell). Keypoints, rings and weights are the ones the loss uses with these
    options (by default :data:`kamim_fast.KAMIM_DEFAULTS`; ``channel_order="bgr"`` for the published
    gray); the mask is SimMIM's (32 px cells, 60%, drawn with ``torch.Generator().manual_seed(mask_seed)``).

    Args:
        image: a path to an image file, or an (H, W[, C]) array.
        out: the PNG to write (its folder is created).
        threshold: FAST threshold, 0..255 (``detector="fast"`` only).
        weight_patch_size: KAMIM's weight cell (published: 8).
        temperature: KAMIM's temperature (published: 0.25).
        channel_order: ``"rgb"`` (default) or ``"bgr"`` (the published code's gray, as ``KAMIM_PAPER``).
        detector: ``"fast"`` (default), ``"orb"`` or ``"sift"`` (OpenCV's, as in :func:`kamim_fast.patch_weights`;
            these two need ``pip install kamim-fast[opencv]``).
        density: ``"ring"`` (published) or ``"count"``: what the third panel shows and the weights count.
        mask_seed: seed of the drawn mask.
        max_side: the long side above which the image is shrunk.
        device: where to compute (default: CUDA when available).
        title: the figure's title (default: the file name and keypoint count).

    Returns:
        The path written.

    Raises:
        ValueError: an option out of range, an image that cannot be read or is under 32x32 pixels.
        ImportError: ``detector="orb"`` or ``"sift"`` without OpenCV; the message names the extra.

    Example:
        >>> import tempfile, skimage.data
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = show(skimage.data.coffee()[:64, :96], Path(d) / "coffee.png")
        ...     path.stat().st_size > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fast import fast_corners
    from .gray import rgb_to_gray_u8
    from .integrations.data import simmim_mask
    from .weights import keypoint_density, patch_weights

    threshold = check_int("threshold", threshold, 0, FAST_MAX_THRESHOLD)
    weight_patch_size = check_int("weight_patch_size", weight_patch_size, 1, SHOW_MULTIPLE)
    if SHOW_MULTIPLE % weight_patch_size:
        raise ValueError(f"weight_patch_size must divide {SHOW_MULTIPLE}, got {weight_patch_size}")
    temperature = check_temperature(temperature)
    check_choice("channel_order", channel_order, ("rgb", "bgr"))
    check_choice("detector", detector, DETECTORS)
    check_choice("density", density, DENSITY_MODES)
    mask_seed = check_int("mask_seed", mask_seed, 0, (1 << 63) - 1)
    max_side = check_int("max_side", max_side, SHOW_MULTIPLE, 1 << 15)
    name = Path(image).name if isinstance(image, (str, Path)) else "image"
    img = load_image(image) if isinstance(image, (str, Path)) else as_rgb_u8(np.asarray(image))
    img = _fit(img, max_side)
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")

    rgb = torch.from_numpy(img).permute(2, 0, 1)[None].to(device)
    H, W = img.shape[:2]
    gray = rgb_to_gray_u8(rgb, channel_order=channel_order)
    if detector == "fast":
        keypoints, scores = fast_corners(gray, threshold)
        rings = keypoint_density(keypoints, patch_size=1, mode=density)[0].cpu().numpy()
        ys, xs = keypoints[0].nonzero(as_tuple=True)
        kp_scores = scores[0, ys, xs].cpu().numpy()
        ys, xs = ys.cpu().numpy(), xs.cpu().numpy()
    else:  # OpenCV's detector on the same gray, and its own drawKeypoints rings (the weights' input)
        from .detectors import detect, keypoint_maps

        kps = detect(gray[0].cpu().numpy(), detector)
        xs, ys = (np.array([k.pt[i] for k in kps], np.float64) for i in (0, 1))
        kp_scores = np.array([k.response for k in kps], np.float64)
        rings = keypoint_maps(gray.cpu(), detector, density)[0].numpy()
    weights = patch_weights(rgb, weight_patch_size=weight_patch_size, temperature=temperature, threshold=threshold,
                            density=density, channel_order=channel_order, detector=detector)[0]
    mask = simmim_mask(1, (H, W), generator=torch.Generator(device).manual_seed(mask_seed), device=device)[0]
    w_px = weights.repeat_interleave(weight_patch_size, 0).repeat_interleave(weight_patch_size, 1).cpu().numpy()
    m_px = mask.repeat_interleave(H // mask.shape[0], 0).repeat_interleave(W // mask.shape[1], 1).cpu().numpy()

    norm = weight_norm(w_px)
    rows, cols, (pw, ph) = panel_grid(H, W)
    spare = rows * cols > PANELS  # the colour bar lies in the spare cell, else beside (or under) the panels
    title_px = TITLE_PX * (1 + (pw < 300))  # narrow panels wrap their titles
    # each panel pw x ph px plus its title, the figure's title and margins, and the colour bar
    fig = plt.figure(figsize=(cols * pw / DPI + 0.3 + (not spare and cols > 1) * 1.2,
                              rows * (ph + title_px) / DPI + 0.7 + (not spare and cols == 1) * 1.0),
                     dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(rows, cols)
    axes = [fig.add_subplot(grid[i // cols, i % cols]) for i in range(PANELS)]
    axes[0].imshow(img)
    titled(axes[0], pw, f"image {W}x{H}")
    axes[1].imshow(img, alpha=0.6)
    axes[1].scatter(xs, ys, s=6, c=kp_scores, cmap="autumn", linewidths=0)
    titled(axes[1], pw, f"{detector.upper()} keypoints: {len(xs)}" + (f" (t={threshold})" if detector == "fast" else ""))
    axes[2].imshow(rings, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    titled(axes[2], pw, f"{'ring coverage' if density == 'ring' else 'keypoint pixels'}: {rings.mean():.1%} of pixels")
    im = axes[3].imshow(w_px, cmap=WEIGHT_CMAP, norm=norm, interpolation="nearest")
    titled(axes[3], pw, f"weights, {weight_patch_size} px cells, T={temperature:g}")
    axes[4].imshow(img, alpha=0.35)
    axes[4].imshow(np.ma.masked_where(m_px == 0, w_px), cmap=WEIGHT_CMAP, norm=norm, interpolation="nearest")
    titled(axes[4], pw, f"mask ({mask.float().mean().item():.0%}) x weights: the loss")
    for ax in axes:
        ax.axis("off")
    if spare:
        cell = fig.add_subplot(grid[rows - 1, cols - 1])
        cell.axis("off")
        cbar = fig.colorbar(im, cax=cell.inset_axes((0.08, 0.55, 0.84, 0.07)), orientation="horizontal")
    else:
        cbar = fig.colorbar(im, ax=axes[3:], fraction=0.04 if cols > 1 else 0.08, shrink=0.9,
                            orientation="vertical" if cols > 1 else "horizontal")
    cbar.set_label(weight_scale_label(norm, temperature))
    cbar.set_ticks(weight_ticks(norm.vmax))
    cbar.set_ticklabels([f"{t:g}" for t in weight_ticks(norm.vmax)])
    cbar.minorticks_off()
    fig.suptitle(title or f"{name}: {len(xs)} {detector.upper()} keypoints, density={density}, "
                 f"channel_order={channel_order}", fontsize="x-large", fontweight="bold")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
