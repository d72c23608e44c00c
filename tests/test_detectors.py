"""ORB and SIFT weights (the published ``--detector orb|sift``) and the KamimWeights data-loader transform."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from images import COLOUR_NAMES, crop, real_image, user_arrays
from published import normalise, published_keypoints, published_weights

from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, KAMIM_PAPER, KamimWeights, patch_weights, rgb_to_gray_u8

DETECTORS = ("fast", "orb", "sift")


def _kp_tuple(k):
    return (k.pt, k.size, k.angle, k.response, k.octave, k.class_id)


@pytest.mark.parametrize("detector", ("orb", "sift"))
def test_detector_on_gray_equals_detector_on_the_colour_array(detector, rng):
    """The published code passes the RGB array; OpenCV converts it with BGR2GRAY. On our gray
    (channel_order="bgr") the detector finds the very same keypoints, attribute for attribute."""
    for name in COLOUR_NAMES:
        img = crop(real_image(name), 192, 192, rng)
        gray = rgb_to_gray_u8(torch.from_numpy(img).permute(2, 0, 1), channel_order="bgr").numpy()
        np.testing.assert_array_equal(gray, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        on_colour = published_keypoints(img, detector)
        made = cv2.ORB_create() if detector == "orb" else cv2.SIFT_create()
        on_gray = made.detect(gray, None)
        assert len(on_colour) > 0
        assert [_kp_tuple(k) for k in on_gray] == [_kp_tuple(k) for k in on_colour]
        # the published array is img.permute(1, 2, 0).numpy() of a (3, H, W) tensor: a strided view, same keypoints
        view = torch.from_numpy(img).permute(2, 0, 1).contiguous().permute(1, 2, 0).numpy()
        assert not view.flags["C_CONTIGUOUS"]
        assert [_kp_tuple(k) for k in published_keypoints(view, detector)] == [_kp_tuple(k) for k in on_colour]


@pytest.mark.parametrize("detector", ("orb", "sift"))
@pytest.mark.parametrize("name", COLOUR_NAMES)
def test_weights_are_bit_equal_to_the_published_pipeline(detector, name, rng):
    """Real photographs, 192x192 crops (the published crop size), every published cell size, from the
    normalised float target (ImageNet statistics, as published) and from uint8: torch.equal."""
    imgs = np.stack([crop(real_image(name), 192, 192, rng) for _ in range(3)])
    u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    x = normalise(u8, IMAGENET_MEAN, IMAGENET_STD)
    for p, T in ((8, 0.25), (16, 0.1), (32, 2.5)):
        want = published_weights(imgs, p, T, detector=detector)
        options = {**KAMIM_PAPER, "weight_patch_size": p, "temperature": T}
        got = patch_weights(x, detector=detector, **options)
        assert got.dtype == torch.float32 and torch.equal(got, want), (p, T, (got - want).abs().max())
        assert torch.equal(patch_weights(u8, detector=detector, **options), want)
        assert (want > 1).any()  # the photos hold keypoints: the comparison is not vacuous
    # channel_order="rgb": the detector sees COLOR_RGB2GRAY's gray (the array flipped to BGR first)
    want = published_weights(imgs, 8, 0.25, channel_order="rgb", detector=detector)
    assert torch.equal(patch_weights(x, detector=detector), want)


@pytest.mark.parametrize("detector", ("orb", "sift"))
def test_count_density_and_odd_sizes(detector, rng):
    """count: keypoints per cell at their nearest pixel (duplicates once) over p^2; non-square images."""
    img = crop(real_image("astronaut"), 96, 160, rng)
    kps = published_keypoints(img, detector)
    m = np.zeros(img.shape[:2], np.float32)
    for k in kps:
        m[min(int(np.rint(k.pt[1])), 95), min(int(np.rint(k.pt[0])), 159)] = 1
    d = torch.from_numpy(m.reshape(12, 8, 20, 8).mean((1, 3)))
    w = torch.exp(d / 0.5)
    want = w / w.min()
    got = patch_weights(torch.from_numpy(img).permute(2, 0, 1)[None], detector=detector, density="count",
                        temperature=0.5, channel_order="bgr")[0]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_orb_and_sift_take_no_threshold():
    with pytest.raises(ValueError, match="threshold=20 applies to detector='fast' only"):
        patch_weights(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), detector="orb", threshold=20)
    with pytest.raises(ValueError, match="threshold=5 applies"):
        KamimWeights(detector="sift", threshold=5)
    with pytest.raises(ValueError, match="detector must be one of"):
        patch_weights(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), detector="surf")


@pytest.mark.parametrize("detector", ("orb", "sift"))
def test_without_opencv_the_error_names_the_extra(detector, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(ImportError, match=r"pip install kamim-fast\[opencv\]"):
        patch_weights(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), detector=detector)
    with pytest.raises(ImportError, match=r"pip install kamim-fast\[opencv\]"):
        KamimWeights(detector=detector)
    # FAST never needs OpenCV
    assert torch.equal(KamimWeights()(np.zeros((16, 16, 3), np.uint8)), torch.ones(2, 2))


def test_kamim_fast_imports_and_runs_fast_without_opencv():
    """No module imports cv2 at import time: without OpenCV everything but ORB and SIFT works."""
    code = ("import sys; sys.modules['cv2'] = None\n"
            "import numpy as np, torch, kamim_fast, kamim_fast.cli, kamim_fast.show, kamim_fast.integrations.hf, "
            "kamim_fast.integrations.simmim\n"
            "from kamim_fast import KamimWeights, weighted_mim_loss\n"
            "assert torch.equal(KamimWeights()(np.zeros((16, 16, 3), np.uint8)), torch.ones(2, 2))\n"
            "weighted_mim_loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 1), 'fast')\n"
            "try:\n    KamimWeights(detector='sift')\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "KAMIM_FAST_BACKEND": "torch"})
    assert out.returncode == 0, out.stderr
    assert "pip install kamim-fast[opencv]" in out.stdout


@pytest.mark.parametrize("detector", DETECTORS)
def test_kamim_weights_equals_patch_weights_on_a_batch_of_one(detector, rng):
    img = crop(real_image("coffee"), 64, 96, rng)
    u8 = torch.from_numpy(img).permute(2, 0, 1)
    x = normalise(u8[None], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))[0]
    for options in ({}, KAMIM_PAPER, {"weight_patch_size": 16, "temperature": 1.0, "density": "count"}):
        want = patch_weights(u8[None], detector=detector, **options)[0]
        t = KamimWeights(detector=detector, **options)
        assert torch.equal(t(img), want) and torch.equal(t(u8), want)
        assert torch.equal(KamimWeights(detector=detector, mean=0.5, std=0.5, **options)(x), want)
        assert t(img).shape == (64 // t.weight_patch_size, 96 // t.weight_patch_size)
    assert torch.equal(KamimWeights(detector=detector, **KAMIM_PAPER)(img),
                       published_weights(img[None], 8, 0.25, detector=detector)[0])


@pytest.mark.parametrize("detector", DETECTORS)
def test_kamim_weights_takes_the_arrays_users_pass(detector, rng, strict_from_numpy):
    """Flipped views (negative strides), crops and strided views, Fortran order, channels-last views of (3, H, W)
    tensors and read-only arrays (``np.asarray`` of a PIL image): the weights of each equal those of its
    contiguous copy and, in the published configuration, the published pipeline's (OpenCV) on it; no warning (nor
    a read-only array given to torch.from_numpy, whose warning fires once per process), and the array is left
    as it was."""
    img = crop(real_image(COLOUR_NAMES[int(rng.integers(4))]), 48, 64, rng)
    t, paper = KamimWeights(detector=detector), KamimWeights(detector=detector, **KAMIM_PAPER)
    want = t(img.copy())
    want_paper = published_weights(img[None], 8, 0.25, detector=detector)[0]
    for name, form in user_arrays(img).items():
        before = form.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got, got_paper = t(form), paper(form)
        assert torch.equal(got, want), name
        assert torch.equal(got_paper, want_paper), name
        assert np.array_equal(form, before), name
    # the same pixels as a (3, H, W) tensor view of a channels-last array, and a strided tensor crop
    chw = torch.from_numpy(img).permute(2, 0, 1)
    big = torch.zeros(3, 56, 80, dtype=torch.uint8)
    big[:, 3:51, 5:69] = chw
    for name, form in (("chw-view", chw), ("tensor-crop", big[:, 3:51, 5:69]), ("channels-last", chw[None].contiguous(
            memory_format=torch.channels_last)[0])):
        assert torch.equal(t(form), want), name


@pytest.mark.parametrize("detector", ("orb", "sift"))
def test_detect_takes_the_arrays_users_pass(detector, rng, strict_from_numpy):
    """kamim_fast.detectors.detect on every form of a gray array: OpenCV's keypoints of the contiguous copy."""
    from kamim_fast.detectors import detect

    made = cv2.ORB_create() if detector == "orb" else cv2.SIFT_create()
    for _ in range(50):  # a crop with keypoints: ORB looks only 31 px inside the border, and some crops are flat there
        gray = cv2.cvtColor(crop(real_image("astronaut"), 96, 128, rng), cv2.COLOR_RGB2GRAY)
        want = [_kp_tuple(k) for k in made.detect(gray.copy(), None)]
        if want:
            break
    assert want, "no crop of 50 had keypoints"
    for name, form in user_arrays(gray).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = [_kp_tuple(k) for k in detect(form, detector)]
        assert got == want, name


def test_kamim_weights_rejects_other_forms():
    t = KamimWeights()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 array"):
        t(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(3, H, W\) tensor"):
        t(torch.zeros(1, 3, 16, 16))
    with pytest.raises(TypeError, match="numpy array, a PIL image or a"):
        t([[0]])
    with pytest.raises(ValueError, match="weight_patch_size=8"):
        t(np.zeros((20, 16, 3), np.uint8))


def test_kamim_weights_pickles():
    t = KamimWeights(detector="orb", **KAMIM_PAPER)
    back = pickle.loads(pickle.dumps(t))
    assert back == t and repr(back) == repr(t)
    assert "detector='orb'" in repr(t) and "channel_order='bgr'" in repr(t)


class _PublishedStructure(torch.utils.data.Dataset):
    """The published dataset's return_FAST=True branch, with KamimWeights in place of feat."""

    def __init__(self, imgs: np.ndarray, transform: KamimWeights) -> None:
        self.imgs, self.transform = imgs, transform

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, i):
        img = torch.from_numpy(self.imgs[i]).permute(2, 0, 1)  # augmented uint8 (3, H, W)
        w = self.transform(img.permute(1, 2, 0).numpy())  # img_as_arr, as published
        return normalise(img[None], IMAGENET_MEAN, IMAGENET_STD)[0], w, torch.zeros(2, 2, dtype=torch.int64)


def test_kamim_weights_in_dataloader_workers(rng):
    detector = "sift"
    imgs = np.stack([crop(real_image(n), 64, 64, rng) for n in COLOUR_NAMES])
    loader = torch.utils.data.DataLoader(_PublishedStructure(imgs, KamimWeights(detector=detector, **KAMIM_PAPER)),
                                         batch_size=2, num_workers=2, multiprocessing_context="spawn")
    got = torch.cat([w for _, w, _ in loader])
    torch.testing.assert_close(got, published_weights(imgs, 8, 0.25, detector=detector), rtol=1e-6, atol=0)
