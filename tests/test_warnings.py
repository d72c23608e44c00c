"""The normalisation check: wrong statistics found from the 1/255 grid (real photos, Hugging Face's ViTImageProcessor
statistics taken for ImageNet's), one warning per distinct cause, each pointing at the caller's line; the native
CPU kernel's statistics of the check, gathered in its gray pass, against the reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from images import COLOUR_NAMES, crop, real_image
from published import normalise

from kamim_fast import (
    IMAGENET_MEAN, IMAGENET_STD, KamimWeights, NormalizationWarning, WeightedMIMLoss, patch_weights, weighted_mim_loss,
)
from kamim_fast.ops.rgb_to_gray_u8 import GRID_TOLERANCE, colour_stats_ref
from kamim_fast.weights import _NORMALIZATION_CHECK

HALF = (0.5,) * 3  # ViTImageProcessor's mean and std
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # OpenAI CLIP's, near ImageNet's
GRID = "does not un-normalise onto whole uint8 values"


@pytest.fixture(autouse=True)
def fresh_check():
    _NORMALIZATION_CHECK.reset()
    yield _NORMALIZATION_CHECK
    _NORMALIZATION_CHECK.reset()


def _u8(rng, B=2, S=64):
    """Photo crops, each with a black and a white pixel (so no crop is all bright, which 0.5/0.5 would map into
    [0, 1], another cause)."""
    imgs = np.stack([crop(real_image(COLOUR_NAMES[i % 4]), S, S, rng) for i in range(B)])
    imgs[:, 0, 0], imgs[:, 0, 1] = 0, 255
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()


def _silent():
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("error", NormalizationWarning)
    return w


# --- wrong statistics, found from the grid ---------------------------------------------------------------------


def test_vit_processor_statistics_taken_for_imagenets_warn(rng):
    """ViTImageProcessor's pixel_values (0.5/0.5) passed with the default (ImageNet) statistics: inside ImageNet's
    normalised range, so only the grid sees it."""
    import transformers

    u8 = _u8(rng, B=2, S=64)
    proc = transformers.ViTImageProcessor(size={"height": 64, "width": 64})
    pix = torch.from_numpy(np.asarray(proc(list(u8.permute(0, 2, 3, 1).numpy()), return_tensors="np")["pixel_values"]))
    assert pix.dtype == torch.float32
    pred, mask = pix + 0.1, torch.ones(2, 4, 4)
    with pytest.warns(NormalizationWarning, match=rf"target {GRID} with mean=\(0.485, 0.456, 0.406\).*: (8|9)\d% of .*"
                                                  r"ViTImageProcessor uses 0.5") as record:
        weighted_mim_loss(pred, pix, mask, "fast")
    assert [w.filename for w in record] == [__file__]
    with pytest.warns(NormalizationWarning, match=f"images {GRID}"):
        patch_weights(pix)
    w = _silent()  # the right statistics: silent
    weighted_mim_loss(pred, pix, mask, "fast", mean=HALF, std=HALF)
    patch_weights(pix, mean=HALF, std=HALF)
    w.__exit__(None, None, None)


@pytest.mark.parametrize("stats", [(IMAGENET_MEAN, IMAGENET_STD), (HALF, HALF), ((0.0,) * 3, (1.0,) * 3), CLIP],
                         ids=["imagenet", "half", "unit", "clip"])
def test_right_statistics_are_on_the_grid_and_silent(rng, stats):
    u8 = _u8(rng)
    x = normalise(u8, *stats)
    s = colour_stats_ref(x, *stats)
    assert s[6] == 0  # no value off the grid
    w = _silent()
    patch_weights(x, mean=stats[0], std=stats[1])
    weighted_mim_loss(x + 0.1, x, torch.ones(2, 4, 4), "fast", mean=stats[0], std=stats[1])
    patch_weights(x.double(), mean=stats[0], std=stats[1])
    patch_weights(x.half(), mean=stats[0], std=stats[1])  # float16 rounds off the grid: not judged by it
    patch_weights(x.bfloat16(), mean=stats[0], std=stats[1])
    w.__exit__(None, None, None)


def test_every_wrong_pair_of_common_statistics_is_off_the_grid(rng):
    u8 = _u8(rng)
    common = [(IMAGENET_MEAN, IMAGENET_STD), (HALF, HALF), CLIP]
    for i, made in enumerate(common):
        x = normalise(u8, *made)
        for j, said in enumerate(common):
            share = float(colour_stats_ref(x, *said)[6]) / x.numel()
            assert (share > 0.8) if i != j else share == 0, (i, j, share)


def test_the_grid_tolerance_separates_float32_rounding_from_other_statistics(rng):
    u8 = _u8(rng)
    x = normalise(u8, IMAGENET_MEAN, IMAGENET_STD)
    m, s = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    v = (x * s + m) * 255
    assert (v - v.round()).abs().max() < GRID_TOLERANCE / 20  # float32 moves a value by about 1e-4
    resampled = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # blended after normalising: off the grid
    with pytest.warns(NormalizationWarning, match="resampled or blended after normalising"):
        patch_weights(resampled)


# --- once per cause, at the caller's line --------------------------------------------------------------------------


def test_each_distinct_mistake_warns_once_at_the_callers_line(rng):
    u8 = _u8(rng)
    unit = u8.float() / 255  # ToTensor without Normalize
    half = normalise(u8, HALF, HALF)
    mask = torch.ones(2, 4, 4)
    with pytest.warns(NormalizationWarning, match="all lie within") as first:
        weighted_mim_loss(unit, unit, mask, "fast")
    with pytest.warns(NormalizationWarning, match=GRID) as second:  # a second, different mistake: warned too
        weighted_mim_loss(half, half, mask, "fast")
    with pytest.warns(NormalizationWarning, match="outside the range") as third:
        weighted_mim_loss(u8.float(), u8.float(), mask, "fast")
    assert [w.filename for w in (*first, *second, *third)] == [__file__] * 3
    w = _silent()  # the same mistakes again: silent
    weighted_mim_loss(unit, unit, mask, "fast")
    weighted_mim_loss(half, half, mask, "fast")
    w.__exit__(None, None, None)
    # the same mistake with other statistics is another cause
    with pytest.warns(NormalizationWarning, match=r"all lie within.*mean=\(0.5, 0.5, 0.5\)"):
        weighted_mim_loss(unit, unit, mask, "fast", mean=0.5, std=0.25)


@pytest.mark.parametrize("entry", ["patch_weights", "KamimWeights", "WeightedMIMLoss", "SimMIM"])
def test_warnings_point_at_the_callers_line_from_every_entry_point(rng, entry):
    u8 = _u8(rng, B=1, S=32)
    half = normalise(u8, HALF, HALF)
    with pytest.warns(NormalizationWarning, match=GRID) as record:
        if entry == "patch_weights":
            patch_weights(half)
        elif entry == "KamimWeights":
            KamimWeights()(half[0])
        elif entry == "WeightedMIMLoss":
            WeightedMIMLoss("fast")(half + 0.1, half, torch.ones(1, 2, 2))
        else:
            from kamim_fast.integrations.simmim import SimMIM
            from kamim_fast.integrations.timm import TimmViTForSimMIM

            enc = TimmViTForSimMIM.create(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2)
            SimMIM(enc, 16)(half, torch.ones(1, 2, 2))
    assert [w.filename for w in record] == [__file__]


def test_the_budget_is_per_statistics(rng, fresh_check):
    """The first MAX_CHECKS calls with given statistics are checked; later ones with other statistics are too."""
    u8 = _u8(rng)
    x = normalise(u8, IMAGENET_MEAN, IMAGENET_STD)
    for _ in range(fresh_check.MAX_CHECKS):
        patch_weights(x)
    assert fresh_check.checked == fresh_check.MAX_CHECKS
    w = _silent()
    patch_weights(u8.float() / 255)  # budget spent for ImageNet's statistics: not checked, nothing paid
    w.__exit__(None, None, None)
    assert fresh_check.checked == fresh_check.MAX_CHECKS
    with pytest.warns(NormalizationWarning, match="outside the range"):  # other statistics: checked
        patch_weights(x, mean=CLIP[0], std=CLIP[1])


# --- the native kernel's statistics, from its gray pass -------------------------------------------------------------


@pytest.mark.parametrize("isa", ["default", "portable", "sse2"])
def test_native_statistics_equal_the_reference(rng, isa, monkeypatch):
    """Several bands of rows (W = 2048: 64 rows a band), odd widths (vector tails), NaN, every float dtype."""
    from kamim_fast import _ext

    if not _ext.status()[0]:
        pytest.skip("no native extension")
    if isa != "default":
        import subprocess
        import sys

        code = ("import torch, kamim_fast; from kamim_fast.ops.rgb_to_gray_u8 import colour_stats_ref;"
                "assert kamim_fast._ext.status()[0];"
                "x = torch.randn(2, 3, 136, 1032) * 2; x[1, 2, 100, 1031] = float('nan');"
                "m, s = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225];"
                "_, st = torch.ops.kamim_fast_cpp.patch_weights(x, 8, 0.25, 10, 'ring', 'rgb', m, s, True);"
                "r = colour_stats_ref(x, m, s); assert torch.equal(st, r), (st, r);"
                "print(torch.ops.kamim_fast_cpp.fast_cpu_isa())")
        out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "KAMIM_FAST_CPU_ISA": isa},
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == isa
        return
    m, s = list(IMAGENET_MEAN), list(IMAGENET_STD)
    u8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 144, 2048), dtype=np.uint8))
    odd = normalise(u8, m, s)
    odd[0, 1, 5, 7], odd[1, 0, 100, 2047], odd[1, 2, 0, 0], odd[:, :, 9, 9] = float("nan"), float("inf"), -1e30, 0.3
    no_blue = normalise(u8[:, :, :16, :16], m, s)
    no_blue[:, 2] = float("nan")  # a channel without values: +inf and -inf, as the reference
    strided = normalise(u8[:, :, :, :1000], m, s)[..., 3:995]  # a view: rows start off the vector alignment
    for x in (odd, no_blue, normalise(u8, m, s), normalise(u8, HALF, HALF), torch.randn(1, 3, 16, 40),
              normalise(u8, m, s).double(), normalise(u8, m, s).half(), strided):
        _, st = torch.ops.kamim_fast_cpp.patch_weights(x, 8, 0.25, 10, "ring", "rgb", m, s, True)
        assert torch.equal(st, colour_stats_ref(x, m, s)), x.shape
        w, none = torch.ops.kamim_fast_cpp.patch_weights(x, 8, 0.25, 10, "ring", "rgb", m, s, False)
        assert none.shape == (0,) and torch.equal(w, patch_weights(x, mean=m, std=s))
    _, st = torch.ops.kamim_fast_cpp.patch_weights(u8, 8, 0.25, 10, "ring", "rgb", [], [], True)
    assert st.shape == (0,)  # uint8: nothing to check


def test_the_kernels_grid_tolerance_is_the_references():
    """csrc/fast_cpu.h counts off-grid values with the tolerance of colour_stats_ref (one value, compared here)."""
    import re

    from kamim_fast import _ext

    header = (_ext.CSRC / "fast_cpu.h").read_text()
    assert float(re.search(r"kGridTolerance = ([0-9.]+)f;", header).group(1)) == GRID_TOLERANCE
