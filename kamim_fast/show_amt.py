"""``kamim-fast show IMAGE --amt``: what AMT does to one image, in the AMT paper's figure style, into a PNG.

Top row: the image with the crop's box; the normalised attention map the refresh computes over the whole
image (``AttentionBank.refresh``: the image resized to the encoder's input, no crop); the crop the model
sees; its AMT masking and throwing (masked patches light grey, thrown ones black, visible ones as they
are), sampled from the map cropped like the image (``map_crop="box"``, the default).

Bottom row, the published crop (``AMT_PAPER``, ``map_crop="paper"``) beside the default for the same crop
and flip: where each reads the map (the box, and the published slice ``map[i//H : (i+h)//H + 2, ...]``, the
map's top-left corner); the crop's patch weights from each; the masking and throwing the published
weights give. Needs matplotlib and timm (``pip install kamim-fast[demo]``); the encoder is a randomly
initialised timm ViT unless one is given (nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._checks import check_int
from .amt import MASKED, THROWN, amt_masking
from .amt_presets import AMT_DEFAULTS
from .gray import IMAGENET_MEAN, IMAGENET_STD
from .show import _fit, as_rgb_u8, load_image

MASKED_GREY = 0.78  # the paper's figure: masked patches light grey, thrown ones black


def _masking_picture(crop: np.ndarray, codes: np.ndarray, patch: int) -> np.ndarray:
    """(S, S, 3) uint8 crop and (S/p, S/p) codes -> float RGB: masked patches grey, thrown black, white grid."""
    out = crop.astype(np.float32) / 255
    h, w = codes.shape
    for r in range(h):
        for c in range(w):
            tile = out[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
            if codes[r, c] == MASKED:
                tile[:] = MASKED_GREY
            elif codes[r, c] == THROWN:
                tile[:] = 0.0
    out[::patch, :] = 1.0
    out[:, ::patch] = 1.0
    return out


def show_amt(
    image: str | Path | np.ndarray,
    out: str | Path,
    *,
    model: nn.Module | None = None,
    size: int = 224,
    patch_size: int = 16,
    mask_ratio: float = AMT_DEFAULTS["mask_ratio"],
    throw_ratio: float = AMT_DEFAULTS["throw_ratio"],
    scale: tuple[float, float] = (0.2, 1.0),
    seed: int = 0,
    max_side: int = 1024,
    title: str | None = None,
) -> Path:
    """Draw image, attention map, crop and its AMT masking, and the published crop's weights, into a PNG.

    Args:
        image: a path to an image file, or an (H, W[, C]) array.
        out: the PNG to write (its folder is created).
        model: the encoder whose attention drives AMT (a timm ViT, or any encoder ``AttentionBank.refresh``
            takes), with input size ``size``; default: a randomly initialised ``vit_tiny_patch16_224``.
        size: the encoder's input size and the crop's output size (224).
        patch_size: the encoder's patch size (16).
        mask_ratio, throw_ratio: AMT's shares (:data:`kamim_fast.AMT_DEFAULTS`: 0.45, 0.4).
        scale: the crop's area range (published mae-AMT: (0.2, 1.0)).
        seed: seeds the crop, the flip and the sampling.
        max_side: the long side above which the image is shrunk.
        title: the figure's title.

    Returns:
        The path written.

    Example:
        >>> import tempfile, skimage.data
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = show_amt(skimage.data.coffee()[:96, :128], Path(d) / "coffee.png", size=64)
        ...     path.stat().st_size > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    from .integrations.amt_bank import AttentionBank
    from .integrations.amt_data import AMTRandomResizedCrop

    size = check_int("size", size, 1, 4096)
    patch_size = check_int("patch_size", patch_size, 1, size)
    if size % patch_size:
        raise ValueError(f"size must be a multiple of patch_size={patch_size}, got {size}")
    seed = check_int("seed", seed, 0, (1 << 63) - 1)
    max_side = check_int("max_side", max_side, 32, 1 << 15)
    name = Path(image).name if isinstance(image, (str, Path)) else "image"
    img = load_image(image) if isinstance(image, (str, Path)) else as_rgb_u8(np.asarray(image))
    img = _fit(img, max_side)
    H, W = img.shape[:2]
    grid = size // patch_size
    if model is None:
        import timm

        torch.manual_seed(seed)
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size, patch_size=patch_size,
                                  num_classes=0)
    device = next(model.parameters()).device

    # the refresh: the whole image resized to the encoder's input, ImageNet-normalised
    rgb = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    full = torch.nn.functional.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)
    full = (full - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    bank = AttentionBank(1, grid)
    bank.refresh(model, [(full.to(device), torch.tensor([0]))], progress=False)
    attn = bank[0].numpy()

    # the training step: crop and flip recorded, the map cropped like the image (box) or as published (paper)
    torch.manual_seed(seed)
    crop_img, record = AMTRandomResizedCrop(size, scale=scale)(torch.from_numpy(img).permute(2, 0, 1))
    crop_np = crop_img.permute(1, 2, 0).numpy()
    i, j, h, w, _, _, flip = record.tolist()
    weights = {mode: bank.patch_weights([0], record[None], size, patch_size=patch_size, map_crop=mode)
               for mode in ("box", "paper")}
    codes = {mode: amt_masking(wt, mask_ratio=mask_ratio, throw_ratio=throw_ratio,
                               generator=torch.Generator().manual_seed(seed)).mask[0].reshape(grid, grid).numpy()
             for mode, wt in weights.items()}

    fig, axes = plt.subplots(2, 4, figsize=(17, 8.6), dpi=100, constrained_layout=True)
    box = dict(fill=False, lw=2)
    ax = axes[0, 0]
    ax.imshow(img)
    ax.add_patch(mpatches.Rectangle((j - 0.5, i - 0.5), w, h, ec="yellow", **box))
    ax.set_title(f"image {W}x{H} and the crop's box" + (", flipped" if flip else ""), fontsize=10)
    ax = axes[0, 1]
    ax.imshow(img)
    im = ax.imshow(attn, cmap="viridis", alpha=0.7, extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest",
                   vmin=0, vmax=1)
    ax.set_title(f"normalised attention map ({grid}x{grid}, the refresh's)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="attention")
    axes[0, 2].imshow(crop_np)
    axes[0, 2].set_title(f"the crop the model sees ({size}x{size})", fontsize=10)
    n = {m: (int((c == MASKED).sum()), int((c == THROWN).sum())) for m, c in codes.items()}
    axes[0, 3].imshow(_masking_picture(crop_np, codes["box"], patch_size))
    axes[0, 3].set_title(f"AMT (default crop): {n['box'][0]} masked, {n['box'][1]} thrown", fontsize=10)

    ax = axes[1, 0]
    ax.imshow(attn, cmap="viridis", extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest", vmin=0, vmax=1)
    ax.add_patch(mpatches.Rectangle((j - 0.5, i - 0.5), w, h, ec="yellow", **box))
    rows, cols = min((i + h) // H + 2, grid), min((j + w) // W + 2, grid)
    ax.add_patch(mpatches.Rectangle((-0.5, -0.5), cols * W / grid, rows * H / grid, ec="red", ls="--", **box))
    ax.set_title("map read by the default crop (yellow)\nand by the published slice (red)", fontsize=10)
    vmax = max(float(wt.max()) for wt in weights.values())
    for k, mode in enumerate(("box", "paper")):
        ax = axes[1, 1 + k]
        im = ax.imshow(weights[mode][0].reshape(grid, grid).numpy(), cmap="viridis", vmin=0, vmax=vmax,
                       interpolation="nearest")
        ax.set_title("patch weights: " + ("default, map cropped like the image" if mode == "box"
                                          else "AMT_PAPER, the published slice"), fontsize=10)
    fig.colorbar(im, ax=axes[1, 2], fraction=0.046, label="sum over the patch's pixels")
    axes[1, 3].imshow(_masking_picture(crop_np, codes["paper"], patch_size))
    axes[1, 3].set_title(f"AMT (AMT_PAPER's crop): {n['paper'][0]} masked, {n['paper'][1]} thrown", fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title or f"{name}: AMT, mask {mask_ratio:g}, throw {throw_ratio:g}; masked light grey, thrown black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
