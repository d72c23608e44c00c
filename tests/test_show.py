"""The ``show`` picture's layout and colour scale: readable panels for any aspect ratio, a weight scale that
shows the structure of a real photograph, and that scale stated on the figure.

Its panels' values (OpenCV's keypoints and rings, the published weights) are checked in test_integrations.py.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from images import COLOUR_NAMES, dotted_rgb, real_image

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.figure  # noqa: E402
import matplotlib.image  # noqa: E402

from kamim_fast import patch_weights  # noqa: E402
from kamim_fast.show import PANEL_PX, PANELS, _fit, panel_grid, show, weight_norm  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """The figures ``show`` saves, kept open for inspection."""
    kept = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: kept.append(fig) or save(fig, *a, **k))
    return kept


def _boxes(fig):
    """The five panels' drawn boxes in pixels (after the layout and the image aspect are applied)."""
    fig.canvas.draw()
    return [ax.get_window_extent() for ax in fig.axes[:PANELS]]


# (H, W) after the crop to multiples of 32: landscape 3:2 (the size of a 640x427 photograph), portrait, square,
# a 4:1 panorama, a 1:4 strip, and an 8:1 banner
SHAPES = [(416, 640), (640, 416), (512, 512), (256, 1024), (1024, 256), (128, 1024)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_panels_are_readable_for_any_aspect_ratio(shape, rng, tmp_path, figures):
    """Every panel is >= 500 px on its long side, keeps the image's aspect, and no two overlap; the PNG is the
    figure at its size, neither a strip nor a column (width / height within 1/2.5 .. 2.5)."""
    H, W = shape
    img = dotted_rgb(rng, H, W, 1)
    out = show(img, tmp_path / "show.png", device="cpu")
    fig = figures[0]
    boxes = _boxes(fig)
    for box in boxes:
        assert max(box.width, box.height) >= 500, (shape, box)
        assert box.width / box.height == pytest.approx(W / H, rel=0.05), (shape, box)
    for i in range(PANELS):
        for j in range(i):
            overlap = matplotlib.transforms.Bbox.intersection(boxes[i], boxes[j])
            assert overlap is None or overlap.width * overlap.height < 1, (shape, i, j)
    png = matplotlib.image.imread(str(out))
    assert png.shape[:2] == (round(fig.get_figheight() * fig.dpi), round(fig.get_figwidth() * fig.dpi))
    assert 1 / 2.5 <= png.shape[1] / png.shape[0] <= 2.5, png.shape
    rows, cols, _ = panel_grid(H, W)
    assert rows * cols >= PANELS and (rows - 1) * cols < PANELS
    if W >= 2 * H:  # wide images stack: fewer columns than rows
        assert cols < rows
    if H >= 2 * W:  # tall ones stand side by side
        assert cols > rows


def test_the_old_strip_was_not_readable():
    """The layout's reason: five 640x416 panels side by side in a 2000 px strip were 400 px wide each; the grid
    makes them PANEL_PX on the long side."""
    rows, cols, (pw, ph) = panel_grid(416, 640)
    assert (rows, cols) != (1, 5) and max(pw, ph) == PANEL_PX >= 500


def test_the_weight_scale_is_logarithmic_and_labelled(rng, tmp_path, figures):
    """Both weight panels share one log colour scale from 1 to the largest weight, and its colour bar says so."""
    img = real_image("coffee")[:128, :192]
    show(img, tmp_path / "show.png", device="cpu")
    fig = figures[0]
    weights_im, mask_im = fig.axes[3].images[0], fig.axes[4].images[-1]
    assert isinstance(weights_im.norm, matplotlib.colors.LogNorm)
    assert mask_im.norm is weights_im.norm
    w = patch_weights(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None])[0].numpy()
    assert weights_im.norm.vmin == 1.0 and weights_im.norm.vmax == pytest.approx(float(w.max()))
    bar = weights_im.colorbar
    assert bar is not None
    label = bar.ax.get_xlabel() + bar.ax.get_ylabel()
    assert "log scale" in label and "KAMIM weight" in label and f"{w.max():.3g}" in label
    ticks = [t.get_text() for t in (bar.ax.get_xticklabels() + bar.ax.get_yticklabels())]
    assert "1" in ticks and f"{float(f'{w.max():.3g}'):g}" in ticks


@pytest.mark.parametrize("name", COLOUR_NAMES)
def test_the_weight_scale_shows_the_structure_of_a_photograph(name):
    """On a real photograph at the size ``show`` draws (640 px long side), the linear 1..max scale put 45-76% of
    the cells in the bottom tenth of the colour map (near black in viridis), 12-20% of them cells whose weight is
    above the image's minimum, their differences invisible. The log scale leaves only the cells at (or within a
    tenth of a log step of) the minimum there: fewer cells near black, and few above the minimum."""
    img = _fit(real_image(name), 640)
    w = patch_weights(torch.from_numpy(img).permute(2, 0, 1)[None].contiguous())[0].numpy()
    floor = w == 1.0
    linear = matplotlib.colors.Normalize(1.0, float(w.max()))(w) < 0.1
    log = weight_norm(w)(w) < 0.1
    assert 0.1 < floor.mean() < 0.9  # a photograph: smooth regions at the minimum and textured ones above it
    assert log.mean() < linear.mean() - 0.05
    assert log.mean() < 0.75
    hidden_linear, hidden_log = (linear & ~floor).mean(), (log & ~floor).mean()
    assert hidden_linear > 0.1
    assert hidden_log < 0.06 and hidden_log < hidden_linear / 2


def test_a_flat_image_draws_one_colour(tmp_path, figures):
    """No keypoints: every weight is 1, and the scale still draws (1 to just above 1)."""
    show(np.full((64, 96, 3), 128, np.uint8), tmp_path / "flat.png", device="cpu")
    im = figures[0].axes[3].images[0]
    assert np.all(np.asarray(im.get_array()) == 1.0) and im.norm.vmax > 1.0
