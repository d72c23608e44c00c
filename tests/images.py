"""Test images: real photographs bundled with scikit-image, and adversarial synthetic ones."""

from __future__ import annotations

import functools

import numpy as np

# Bundled with scikit-image (no download). Grey and colour, textured and smooth.
GREY_NAMES = ("camera", "coins", "moon", "page", "text", "brick", "grass", "gravel")
COLOUR_NAMES = ("astronaut", "coffee", "chelsea", "rocket")


@functools.cache
def real_image(name: str) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) RGB."""
    import skimage.data

    img = getattr(skimage.data, name)()
    assert img.dtype == np.uint8, name
    return img


def crop(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y = int(rng.integers(0, img.shape[0] - h + 1))
    x = int(rng.integers(0, img.shape[1] - w + 1))
    return np.ascontiguousarray(img[y : y + h, x : x + w])


def synthetic(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Adversarial uint8 gray images: noise, ties on plateaus, checkerboards, flats, extreme values."""
    if kind == "noise":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == "plateaus":  # few levels: many equal scores, so NMS ties
        return (rng.integers(0, 4, (h, w)) * 60).astype(np.uint8)
    if kind == "checker":
        return ((np.indices((h, w)).sum(0) % 2) * 255).astype(np.uint8)
    if kind == "blocks":  # 2x2 checkerboard with random contrast
        return ((np.indices((h, w)) // 2).sum(0) % 2 * rng.integers(1, 256)).astype(np.uint8)
    if kind == "flat":
        return np.full((h, w), rng.integers(0, 256), dtype=np.uint8)
    if kind == "dots":  # isolated bright and dark dots on grey: clean corners with high scores
        img = np.full((h, w), 128, dtype=np.uint8)
        ys, xs = rng.integers(0, h, h * w // 20), rng.integers(0, w, h * w // 20)
        img[ys, xs] = rng.choice([0, 255], ys.size)
        return img
    if kind == "extremes":
        return rng.choice(np.array([0, 1, 254, 255], dtype=np.uint8), (h, w))
    raise ValueError(kind)


SYNTHETIC_KINDS = ("noise", "plateaus", "checker", "blocks", "flat", "dots", "extremes")


def dotted_rgb(rng, h: int, w: int, per_cell: int, cell: int = 8) -> np.ndarray:
    """(h, w, 3) uint8 RGB: grey (128) with ``per_cell`` (1 to 4) dots in every ``cell`` px cell (cell >= 8), on
    the 2x2 block 3-4 px from its top-left corner (inside the rows and columns FAST tests, even in border
    cells), valued 255, 250, 0 or 5 in random order: every dot is a corner, their scores (126, 121, 127, 122)
    differ, so the best of each cell survives NMS: every cell holds keypoints, no cell's density is 0."""
    img = np.full((h, w, 3), 128, np.uint8)
    spots = [(3, 3), (3, 4), (4, 3), (4, 4)]
    for cy in range(0, h, cell):
        for cx in range(0, w, cell):
            values = rng.permutation([255, 250, 0, 5])
            for k in rng.choice(4, per_cell, replace=False):
                img[cy + spots[k][0], cx + spots[k][1]] = values[k]
    return img


def user_arrays(img: np.ndarray) -> dict[str, np.ndarray]:
    """The numpy forms a Dataset or a user hands over, each holding exactly ``img``'s pixels (an (H, W) or
    (H, W, C) array): the horizontally flipped view (``a[:, ::-1]``, the commonest augmentation: negative
    strides), a vertical flip, a crop of a larger array, every other pixel of a larger one, Fortran order,
    the published ``tensor.permute(1, 2, 0).numpy()`` of a (C, H, W) tensor, colour channels reversed in
    place (``a[..., ::-1]``), a read-only array (``np.asarray`` of a PIL image), and a read-only flipped view.
    Results on each must equal those on ``np.ascontiguousarray`` of it."""
    import PIL.Image

    H, W = img.shape[:2]
    big = np.zeros((H + 5, W + 7, *img.shape[2:]), img.dtype)
    big[2 : 2 + H, 3 : 3 + W] = img
    forms = {
        "flipped": np.ascontiguousarray(img[:, ::-1])[:, ::-1],
        "flipped-rows": np.ascontiguousarray(img[::-1])[::-1],
        "crop-of-larger": big[2 : 2 + H, 3 : 3 + W],
        "every-other-pixel": np.repeat(np.repeat(img, 2, 0), 2, 1)[::2, ::2],
        "fortran": np.asfortranarray(img),
        "read-only-flipped": np.ascontiguousarray(img[:, ::-1])[:, ::-1],
    }
    forms["read-only-flipped"].flags.writeable = False
    if img.ndim == 3:
        forms["from-chw-tensor"] = np.ascontiguousarray(img.transpose(2, 0, 1)).transpose(1, 2, 0)
        forms["channels-reversed"] = np.ascontiguousarray(img[..., ::-1])[..., ::-1]
    if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (3, 4)):
        forms["read-only-pil"] = np.asarray(PIL.Image.fromarray(img))
        assert not forms["read-only-pil"].flags.writeable
    for name, a in forms.items():
        assert np.array_equal(a, img) and a.dtype == img.dtype, name
        assert name.startswith("read-only") or not a.flags.c_contiguous, name  # views, really
    return forms
