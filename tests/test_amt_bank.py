"""AMT's data side: the attention bank, its refresh and schedule, and the map's crop (kamim_fast.integrations
.amt_bank and .amt_data), against tests/published_amt_data.py (the published code, transcribed) and the
per-pixel references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import assert_raises_naming, draw_seed
from images import COLOUR_NAMES, real_image
from ranks import spawn_ranks
from published_amt_data import (
    published_amt_epoch,
    published_cell_sum,
    published_eval_shards,
    published_gather,
    published_last_block_attention,
    published_map_crop,
    published_map_flip,
    published_patchify_map_sum,
    published_refresh_after,
    published_update_mask_maps,
)
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, RandomResizedCrop

import kamim_fast
from kamim_fast import (
    AMT_DEFAULTS,
    AMT_PAPER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    amt_cell_weights,
    amt_masking,
    vit_class_attention,
)
from kamim_fast.integrations.amt_bank import (
    AMTSchedule,
    AttentionBank,
    IndexedDataset,
    ShardSampler,
    refresh_transform,
)
from kamim_fast.integrations.amt_data import (
    CROP_FIELDS,
    AMTDataset,
    AMTRandomResizedCrop,
    crop_patch_weights,
    crop_patch_weights_ref,
)

timm = pytest.importorskip("timm")

IMAGE_SIZES = [(500, 375), (375, 500), (224, 224), (31, 47), (14, 14), (3, 700), (1000, 90)]
VIT = dict(img_size=64, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0)  # a 4 x 4 grid of 16 px patches
WORKER = Path(__file__).with_name("ddp_amt_bank_worker.py")


def _crops(B: int, H: int, W: int, scale=(0.08, 1.0), flip_p: float = 0.5) -> torch.Tensor:
    """(B, 7) records of torchvision's random boxes (global generator) of an H x W image, random flips, and the
    edge cases: the whole image, and a box touching the bottom-right corner (the published slice's 3 rows)."""
    rows = []
    for b in range(B):
        i, j, h, w = RandomResizedCrop.get_params(torch.empty(1, H, W), list(scale), [3 / 4, 4 / 3])
        if b == 0:
            i, j, h, w = 0, 0, H, W
        elif b == 1:
            h, w = max(1, H // 2), max(1, W // 3)
            i, j = H - h, W - w
        rows.append([i, j, h, w, H, W, int(torch.rand(1) < flip_p)])
    return torch.tensor(rows)


def _published_weights(maps: torch.Tensor, crops: torch.Tensor, size: tuple[int, int], p: int) -> torch.Tensor:
    """The published per-pixel map of each crop (transcription), summed per patch as models_mae does."""
    out = []
    for m, (i, j, h, w, H, W, flip) in zip(maps, crops.tolist()):
        pixels = published_map_flip(published_map_crop(m, i, j, h, w, W, H, size), bool(flip))
        if size[0] == size[1]:
            out.append(published_patchify_map_sum(pixels[None], p)[0])
        else:  # patchify_map assumes a square; the same sums per p x p patch, row-major
            out.append(pixels[0].reshape(size[0] // p, p, size[1] // p, p).sum((1, 3)).flatten())
    return torch.stack(out)


def _tiny_vit(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **{**VIT, **kwargs})


def _map_gain(model, images: torch.Tensor) -> torch.Tensor:
    """(n, 1, 1): how much a map's per-head min-max normalisation multiplies a rounding error of the attention row,
    the mean over heads of 2 / (max - min) of the class token's row (a random tiny ViT can make a range small)."""
    with torch.no_grad():
        row = published_last_block_attention(model, images)[:, :, 0, 1:]
    return (2 / (row.amax(-1) - row.amin(-1))).mean(1).view(-1, 1, 1)


def _assert_maps_close(got: torch.Tensor, want: torch.Tensor, gain: torch.Tensor, store: float = 0.0) -> None:
    """Maps computed in other batches or by another attention implementation: 1e-8 (about 3 float32 ulps of a
    softmax value near 1/17) times the normalisation's gain, plus 1e-5 relative (float32 storage) or ``store``
    absolute (the bank's float16 rounding). A fixed atol of 1e-6 failed 4 of 60 seeds; the worst error over those
    seeds was 0.15 of this bound."""
    err = (got.float() - want).abs()
    bound = 1e-8 * gain + (store if store else 1e-5 * want.abs())
    assert bool((err <= bound).all()), f"worst error {float((err / bound).max()):.3g} of the bound"


def _photos(n: int, size: int, rng) -> torch.Tensor:
    """n crops of the bundled colour photographs, resized to size x size, ImageNet-normalised (B, 3, size, size)."""
    out = []
    for k in range(n):
        img = real_image(COLOUR_NAMES[k % len(COLOUR_NAMES)])
        y, x = int(rng.integers(0, img.shape[0] - 128)), int(rng.integers(0, img.shape[1] - 128))
        t = torch.from_numpy(np.ascontiguousarray(img[y:y + 128, x:x + 128])).permute(2, 0, 1).float() / 255
        out.append(TF.resize(t, [size, size], antialias=True))
    x = torch.stack(out)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


# --- the map's crop: the published mode ------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(14, 14), (7, 7), (2, 3)])
def test_paper_crop_equals_the_published_transcription(grid):
    for H, W in IMAGE_SIZES if grid == (14, 14) else IMAGE_SIZES[2:5]:
        for size in ((224, 224), (64, 96)):
            maps = torch.rand(8, *grid)
            crops = _crops(8, H, W, scale=(0.2, 1.0))
            want = _published_weights(maps, crops, size, 16)
            ref = crop_patch_weights_ref(maps, crops, size, map_crop="paper")
            fast = crop_patch_weights(maps, crops, size, map_crop="paper")
            torch.testing.assert_close(ref, want, rtol=1e-6, atol=1e-5, msg=f"{H}x{W} {size}")
            torch.testing.assert_close(fast, want, rtol=1e-5, atol=1e-4, msg=f"{H}x{W} {size}")


def test_paper_crop_sees_only_the_top_left_corner():
    """The published quirk: attention outside the map's top-left 3 x 3 cells never reaches the weights, wherever
    the crop is; the default crop sees it."""
    maps = torch.ones(16, 14, 14)
    maps[:, :3, :3] = 0
    for H, W in IMAGE_SIZES[:3]:
        crops = _crops(16, H, W, scale=(0.2, 1.0))
        assert float(crop_patch_weights(maps, crops, 224, map_crop="paper").abs().max()) < 1e-6
        assert bool((crop_patch_weights(maps, crops, 224, map_crop="box").sum(1) > 0).all())


# --- the map's crop: the default mode --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_box_crop_equals_its_reference(dtype, rtol):
    """Fast (4 taps per output row, no pixel map) against upsample-crop-resize-sum, float rounding apart: float64
    agrees to 1e-10; float32 to 1e-5 relative (the reference rounds each of ~S^2 pixel values and sums 256 per
    patch in float32, the fast path rounds its tap products and sums 14 x 14 of them)."""
    for H, W in IMAGE_SIZES:
        for size, p in (((224, 224), 16), ((64, 96), 16), ((224, 224), 32), ((48, 48), 8)):
            maps = torch.rand(6, 14, 14, dtype=dtype)
            crops = _crops(6, H, W)
            ref = crop_patch_weights_ref(maps, crops, size, patch_size=p)
            fast = crop_patch_weights(maps, crops, size, patch_size=p)
            assert fast.dtype == dtype and fast.shape == (6, (size[0] // p) * (size[1] // p))
            torch.testing.assert_close(fast, ref, rtol=rtol, atol=rtol * p * p, msg=f"{H}x{W} {size} p={p}")


def test_box_crop_follows_the_box_and_the_flip():
    """Independent facts: a constant map weighs every patch p^2 times its value (both modes); a flip reverses the
    patch columns (both modes); a small box around one cell's centre sees that cell's attention and nothing from
    outside the cell's 3 x 3 neighbourhood (the bilinear upsample's reach)."""
    for mode in ("box", "paper"):
        crops = _crops(8, 300, 200)
        w = crop_patch_weights(torch.full((8, 14, 14), 0.5), crops, 224, map_crop=mode)
        torch.testing.assert_close(w, torch.full_like(w, 0.5 * 256), rtol=1e-6, atol=0)
        maps = torch.rand(8, 14, 14)
        flipped = crops.clone()
        flipped[:, 6] = 1 - flipped[:, 6]
        a = crop_patch_weights(maps, crops, 224, map_crop=mode).reshape(8, 14, 14)
        b = crop_patch_weights(maps, flipped, 224, map_crop=mode).reshape(8, 14, 14)
        torch.testing.assert_close(a, b.flip(-1), rtol=1e-6, atol=1e-6)
    # a 140 x 140 image (10 px per cell of a 14 x 14 map): the box of cell (5, 9)'s centre region
    maps = torch.zeros(1, 14, 14)
    maps[0, 5, 9] = 1.0
    far = torch.ones(1, 14, 14)
    far[0, 4:7, 8:11] = 0  # the same map's far cells, without the cell's 3 x 3 neighbourhood
    crops = torch.tensor([[52, 92, 6, 6, 140, 140, 0]])
    assert float(crop_patch_weights(maps, crops, 32).min()) > 0
    assert float(crop_patch_weights(far, crops, 32).abs().max()) < 1e-6


def test_cell_weights_for_simmim_amt():
    """SimMIM-AMT samples 7 x 7 cells of 32 px: patch_size=32 equals amt_cell_weights of the 16 px weights, and
    in paper mode SimMIM-AMT's maskgenerate cell sums of the published per-pixel map."""
    maps = torch.rand(8, 14, 14)
    crops = _crops(8, 375, 500, scale=(0.67, 1.0))
    for mode in ("box", "paper"):
        cells = crop_patch_weights(maps, crops, 224, patch_size=32, map_crop=mode)
        patches = crop_patch_weights(maps, crops, 224, patch_size=16, map_crop=mode)
        torch.testing.assert_close(cells, amt_cell_weights(patches.reshape(8, 14, 14), 2).flatten(1), rtol=1e-5, atol=1e-4)
    for b, (i, j, h, w, H, W, flip) in enumerate(crops.tolist()):
        pixels = published_map_flip(published_map_crop(maps[b], i, j, h, w, W, H, (224, 224)), bool(flip))
        torch.testing.assert_close(cells[b], published_cell_sum(pixels), rtol=1e-5, atol=1e-4)


# --- the recording crop and the dataset ------------------------------------------------------------------------


def test_recording_crop_draws_and_crops_as_torchvision(rng):
    from PIL import Image

    crop = AMTRandomResizedCrop(64, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC)
    for t in range(20):
        H, W = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        arr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        for image in (Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1).contiguous()):
            torch.manual_seed(t)
            got, record = crop(image)
            torch.manual_seed(t)  # the published draws: box, then the flip
            i, j, h, w = RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3])
            flip = bool(torch.rand(1) < 0.5)
            want = TF.resized_crop(image, i, j, h, w, [64, 64], InterpolationMode.BICUBIC, antialias=True)
            want = TF.hflip(want) if flip else want
            assert record.dtype == torch.int64 and record.tolist() == [i, j, h, w, H, W, int(flip)]
            assert np.array_equal(np.asarray(got), np.asarray(want))
    assert len(CROP_FIELDS) == 7


def test_amt_dataset_batches_feed_amt_masking():
    base = [(torch.rand(3, int(h), int(w)), k) for k, (h, w) in enumerate([(40, 50), (64, 30), (33, 33), (90, 70)])]
    bank = AttentionBank(len(base), grid=4)
    bank.update(torch.arange(4), torch.rand(4, 4, 4))
    loader = DataLoader(AMTDataset(base, AMTRandomResizedCrop(32)), batch_size=4)
    images, targets, index, crops = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and targets.tolist() == [0, 1, 2, 3] and index.tolist() == [0, 1, 2, 3]
    assert crops.shape == (4, 7) and crops[:, 4:6].tolist() == [[40, 50], [64, 30], [33, 33], [90, 70]]
    for mode in ("box", "paper"):
        w = bank.patch_weights(index, crops, 32, patch_size=8, map_crop=mode)
        torch.testing.assert_close(w, crop_patch_weights_ref(bank[index], crops, 32, patch_size=8, map_crop=mode),
                                   rtol=1e-5, atol=1e-4)
        m = amt_masking(w, **{k: AMT_DEFAULTS[k] for k in ("mask_ratio", "throw_ratio")})
        assert m.mask.shape == (4, 16) and m.num_masked == 7 and m.num_thrown == 6


# --- the bank: memory, workers, checkpoints --------------------------------------------------------------------


def test_bank_is_compact_shared_and_starts_at_ones():
    bank = AttentionBank(10, grid=(14, 14))
    assert bank.maps.dtype == torch.float16 and bank.bytes_per_image == 14 * 14 * 2 <= 2 * 196
    assert bank.maps.is_shared() and bank.maps.shape == (10, 14, 14) and bool((bank.maps == 1).all())
    assert bank.refreshes == 0 and len(bank) == 10
    for dtype in (torch.bfloat16, torch.float32):
        assert AttentionBank(2, 3, dtype=dtype).maps.dtype == dtype
    # float16's rounding of maps in [0, 1]: half an ulp on [0.5, 1], 2**-12 (from float32: the refresh's maps)
    maps = torch.rand(10, 14, 14)
    bank.update(torch.arange(10), maps)
    assert float((bank.maps.float() - maps).abs().max()) <= 2.0 ** -12


def test_checkpoint_round_trip(tmp_path):
    vit = _tiny_vit()
    images = torch.randn(5, 3, 64, 64)
    bank = AttentionBank(5, grid=4)
    bank.refresh(vit, [(images, torch.arange(5))], progress=False)
    torch.save({"bank": bank.state_dict(), "model": vit.state_dict()}, tmp_path / "ckpt.pt")
    resumed = AttentionBank(5, grid=4)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt")["bank"])
    assert torch.equal(resumed.maps, bank.maps) and resumed.refreshes == 1 and resumed.maps.is_shared()
    assert not bool((resumed.maps == 1).all())  # the refresh's maps, not the initial fill
    # a float32 bank's state loads into a float16 bank (rounded) and back
    wide = AttentionBank(5, grid=4, dtype=torch.float32)
    wide.load_state_dict(bank.state_dict())
    assert torch.equal(wide.maps.half(), bank.maps)


def _worker_maps(loader, epochs_between) -> list[torch.Tensor]:
    """Per epoch, the maps the workers read (the last element of each item), in dataset order."""
    seen = []
    for between in epochs_between:
        rows = {}
        for batch in loader:
            for i, m in zip(batch[-3].tolist(), batch[-1]):
                rows[i] = m
        seen.append(torch.stack([rows[i] for i in sorted(rows)]))
        between()
    return seen


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_see_a_refresh(context):
    """Workers read the bank's shared memory: a refresh (and a checkpoint load) in the main process between epochs
    reaches persistent workers, forked or spawned."""
    n = 6
    vit = _tiny_vit()
    images = torch.randn(n, 3, 64, 64)
    bank = AttentionBank(n, grid=4)
    base = [(images[k], k) for k in range(n)]
    ds = AMTDataset(base, AMTRandomResizedCrop(32, hflip=0.0), bank=bank)
    loader = DataLoader(ds, batch_size=3, num_workers=2 if context == "fork" else 1, persistent_workers=True,
                        multiprocessing_context=context)
    saved = {}

    def refresh():
        saved["state"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in bank.state_dict().items()}
        bank.refresh(vit, DataLoader(IndexedDataset(images), batch_size=4), progress=False)
        saved["refreshed"] = bank.maps.float().clone()

    def reload():
        bank.load_state_dict(saved["state"])

    epochs = _worker_maps(loader, [refresh, reload, lambda: None])
    assert bool((epochs[0] == 1).all())  # the initial ones
    assert torch.equal(epochs[1], saved["refreshed"]) and not bool((epochs[1] == 1).all())  # the refresh
    assert bool((epochs[2] == 1).all())  # the reloaded checkpoint of the ones
    del loader


# --- the refresh -------------------------------------------------------------------------------------------------


def test_refresh_equals_the_published_maps(rng):
    """The refresh's maps are update_mask's (transcribed: models_mae.forward_encoder_test's last-block attention,
    class-token row, per-head min-max, head mean) on real photographs, placed by index from a shuffled loader."""
    n = 7
    vit = _tiny_vit(seed=int(rng.integers(1 << 30))).eval()
    images = _photos(n, 64, rng)
    with torch.no_grad():
        want = published_update_mask_maps(published_last_block_attention(vit, images), (4, 4))
    gain = _map_gain(vit, images)
    loader = DataLoader(IndexedDataset(images), batch_size=3, shuffle=True)
    for dtype, store in ((torch.float32, 0.0), (torch.float16, 2.0 ** -12)):
        bank = AttentionBank(n, grid=4, dtype=dtype)
        vit.train()
        assert bank.refresh(vit, loader, progress=False) == n
        assert vit.training  # the model's mode is restored
        _assert_maps_close(bank.maps, want, gain, store)


def test_refresh_under_autocast_and_with_preprocess(rng):
    n = 5
    vit = _tiny_vit()
    images = _photos(n, 64, rng)
    exact = AttentionBank(n, grid=4, dtype=torch.float32)
    exact.refresh(vit, [(images, torch.arange(n))], progress=False)
    amp = AttentionBank(n, grid=4, dtype=torch.float32)
    amp.refresh(vit, [(images, torch.arange(n))], autocast=torch.bfloat16, progress=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = vit_class_attention(vit.eval(), images).reshape(n, 4, 4)
    assert torch.equal(amp.maps, want) and not torch.equal(amp.maps, exact.maps)  # bfloat16 matmuls ran
    # uint8 batches normalised on the device by preprocess
    u8 = (torch.rand(n, 3, 64, 64) * 255).to(torch.uint8)
    norm = lambda x: (x.float() / 255 - 0.5) / 0.25  # noqa: E731
    a, b = AttentionBank(n, grid=4, dtype=torch.float32), AttentionBank(n, grid=4, dtype=torch.float32)
    a.refresh(vit, [(u8, torch.arange(n))], preprocess=norm, progress=False)
    b.refresh(vit, [(norm(u8), torch.arange(n))], progress=False)
    assert torch.equal(a.maps, b.maps)


def test_refresh_with_a_progress_bar(capsys):
    vit = _tiny_vit()
    bank = AttentionBank(4, grid=4)
    bank.refresh(vit, [(torch.randn(2, 3, 64, 64), torch.tensor([0, 1])), (torch.randn(2, 3, 64, 64), torch.tensor([2, 3]))],
                 progress=True)
    assert "attention bank refresh" in capsys.readouterr().err


class _PublishedStyleMAE(torch.nn.Module):
    """An encoder laid out as models_mae's (blocks in an nn.ModuleList, no forward_features; forward_encoder_test
    runs every patch): the refresh reaches it through forward=."""

    def __init__(self):
        super().__init__()
        vit = _tiny_vit()
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed
        self.blocks = torch.nn.ModuleList(list(vit.blocks))

    def forward_encoder_test(self, x):
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return x


def test_refresh_of_other_encoders(rng):
    n = 5
    images = _photos(n, 64, rng)
    mae = _PublishedStyleMAE().eval()
    with torch.no_grad():
        want = published_update_mask_maps(published_last_block_attention(mae, images), (4, 4))
    bank = AttentionBank(n, grid=4, dtype=torch.float32)
    assert_raises_naming(lambda: bank.refresh(mae, [(images, torch.arange(n))], progress=False), TypeError,
                         ["forward_features", "forward=", "_PublishedStyleMAE"])
    bank.refresh(mae, [(images, torch.arange(n))], forward=mae.forward_encoder_test, progress=False)
    _assert_maps_close(bank.maps, want, _map_gain(mae, images))
    # attention= names the block explicitly (here the same one); a wrapper is unwrapped
    other = AttentionBank(n, grid=4, dtype=torch.float32)
    other.refresh(torch.compile(mae), [(images, torch.arange(n))], attention=mae.blocks[-1].attn,
                  forward=mae.forward_encoder_test, progress=False)
    assert torch.equal(other.maps, bank.maps)


def test_refresh_checks_coverage_and_the_grid():
    vit = _tiny_vit()
    images = torch.randn(4, 3, 64, 64)
    bank = AttentionBank(5, grid=4)
    assert_raises_naming(lambda: bank.refresh(vit, [(images, torch.arange(4))], progress=False), ValueError,
                         ["cover", "4 of 5", "unchanged"])
    assert bool((bank.maps == 1).all()) and bank.refreshes == 0
    assert bank.refresh(vit, [(images, torch.arange(4))], complete=False, progress=False) == 4
    assert bool((bank.maps[4] == 1).all()) and not bool((bank.maps[:4] == 1).all())
    assert_raises_naming(lambda: AttentionBank(4, grid=3).refresh(vit, [(images, torch.arange(4))], progress=False),
                         ValueError, ["16 patches", "3 x 3"])


# --- DDP ---------------------------------------------------------------------------------------------------------


def test_ddp_refresh_over_uneven_shards_equals_one_process(tmp_path):
    """2 gloo ranks, 7 images: shards of 3 and 4 (ShardSampler), and DistributedSampler's shuffled, padded ones;
    every rank's bank equals one process's refresh (and for a one-image dataset, rank 0's shard empty). A loader
that misses an image fails on both ranks."""
    seed = draw_seed()
    print(f"KAMIM_FAST_TEST_SEED={seed} (the ranks' data)")
    rng = np.random.default_rng(seed)
    n, grid = 7, (4, 4)
    vit = _tiny_vit(seed=int(rng.integers(1 << 30)))
    images = _photos(n, 64, rng)
    torch.save({"images": images, "state": vit.state_dict(), "vit": VIT, "grid": grid}, tmp_path / "data.pt")
    ranks = spawn_ranks(WORKER, 2, tmp_path / "data.pt", tmp_path, drop_env=())
    one = AttentionBank(n, grid, dtype=torch.float32)
    one.refresh(vit, DataLoader(IndexedDataset(images), batch_size=2), progress=False)
    assert [r["shard_size"] for r in ranks] == [3, 4] and [r["padded_size"] for r in ranks] == [4, 4]
    gain = _map_gain(vit.eval(), images)
    for r in ranks:
        _assert_maps_close(r["shard"], one.maps, gain)
        _assert_maps_close(r["padded"], one.maps, gain, store=2.0 ** -12)
        assert "6 of 7" in r["missing"] and bool((r["missing_bank"] == 1).all())
        _assert_maps_close(r["one"], one.maps[:1], gain[:1])
    assert torch.equal(ranks[0]["shard"], ranks[1]["shard"])


def test_the_published_padded_shards_give_the_same_bank(rng):
    """The published refresh's shards (SequentialDistributedSampler: contiguous blocks padded with the last index)
    and its gather (rank order, truncation), transcribed, against a refresh that reads the same padded index
    lists: the padding's repeated index is dropped, every map lands on its image."""
    n, batch, world = 7, 2, 2
    shards = published_eval_shards(n, batch, world)
    assert shards == [[0, 1, 2, 3], [4, 5, 6, 6]]
    vit = _tiny_vit(seed=int(rng.integers(1 << 30))).eval()
    images = _photos(n, 64, rng)
    per_rank = [vit_class_attention(vit, images[s]).reshape(-1, 4, 4) for s in shards]
    want = published_gather(per_rank, n)
    bank = AttentionBank(n, grid=4, dtype=torch.float32)
    loader = [(images[s[k:k + batch]], torch.tensor(s[k:k + batch])) for s in shards for k in range(0, len(s), batch)]
    assert bank.refresh(vit, loader, progress=False) == n
    _assert_maps_close(bank.maps, want, _map_gain(vit, images))


# --- the schedule ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup, interval", [(40, 40), (0, 1), (10, 40), (30, 20), (40, 7), (5, 3)])
def test_schedule_equals_the_published_trainer(warmup, interval):
    for epochs in (1, 2, 40, 41, 42, 81, 200, 401):
        s = AMTSchedule(epochs, warmup_epochs=warmup, refresh_interval=interval)
        want = [e for e in range(epochs) if published_refresh_after(e, epochs, warmup, interval)]
        assert s.refresh_epochs() == want
        assert [s.refresh_after(e) for e in range(epochs)] == [e in want for e in range(epochs)]
        # AMT from the epoch after the first refresh: the published models' epoch > 40 for the published values
        assert [s.amt_active(e) for e in range(epochs)] == [bool(want) and e > want[0] for e in range(epochs)]
        if (warmup, interval) == (40, 40):
            assert [s.amt_active(e) for e in range(epochs)] == [published_amt_epoch(e) for e in range(epochs)]


def test_presets():
    assert {k for k in AMT_DEFAULTS if AMT_DEFAULTS[k] != AMT_PAPER[k]} == {"map_crop", "refresh_on_resume"}
    assert AMT_PAPER["map_crop"] == "paper" and AMT_DEFAULTS["map_crop"] == "box" and AMT_PAPER["refresh_on_resume"]
    assert (AMT_DEFAULTS["mask_ratio"], AMT_DEFAULTS["throw_ratio"], AMT_DEFAULTS["warmup_epochs"],
            AMT_DEFAULTS["refresh_interval"]) == (0.45, 0.4, 40, 40)
    for name in ("AMT_DEFAULTS", "AMT_PAPER"):
        assert name in kamim_fast.__all__
    with pytest.raises(TypeError):
        AMT_DEFAULTS["map_crop"] = "paper"  # read-only
    maps, crops = torch.rand(3, 14, 14), _crops(3, 300, 400)
    assert torch.equal(crop_patch_weights(maps, crops, 224, **AMT_PAPER), crop_patch_weights(maps, crops, 224, map_crop="paper"))
    assert torch.equal(crop_patch_weights(maps, crops, 224, **AMT_DEFAULTS), crop_patch_weights(maps, crops, 224))
    assert AMTSchedule(400, **AMT_PAPER).refresh_on_resume and not AMTSchedule(400, **AMT_DEFAULTS).refresh_on_resume
    # every entry point's defaults are AMT_DEFAULTS'
    import inspect

    from kamim_fast.show_amt import show_amt

    for fn in (crop_patch_weights, crop_patch_weights_ref, AttentionBank.patch_weights, AMTSchedule.__init__, show_amt):
        params = inspect.signature(fn).parameters
        for name in set(params) & set(AMT_DEFAULTS):
            assert params[name].default == AMT_DEFAULTS[name], (fn, name)
    bank = AttentionBank(3)
    assert torch.equal(bank.patch_weights([0, 1, 2], crops, 224, **AMT_PAPER),
                       crop_patch_weights(bank[[0, 1, 2]], crops, 224, map_crop="paper"))


# --- helpers of the refresh's data -----------------------------------------------------------------------------


def test_shard_sampler_and_refresh_transform():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3):
            shards = [list(ShardSampler(n, rank=r, world_size=world)) for r in range(world)]
            assert sum(shards, []) == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    got = refresh_transform(32)(img)
    want = TF.normalize(TF.to_tensor(TF.resize(img, [32, 32])), list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert torch.equal(got, want)


# --- bad input -----------------------------------------------------------------------------------------------------


def test_bad_input_gets_named_errors():
    bank = AttentionBank(4, grid=4)
    vit = _tiny_vit()
    images = torch.randn(4, 3, 64, 64)
    maps, crops = torch.rand(2, 4, 4), torch.tensor([[0, 0, 10, 10, 20, 20, 0], [5, 5, 10, 10, 20, 20, 1]])
    no_cls = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, class_token=False,
                               global_pool="avg", **VIT)
    cases = [
        (lambda: AttentionBank(0), ValueError, ["num_images", "0"]),
        (lambda: AttentionBank(3, grid=(4, 0)), ValueError, ["grid[1]", "0"]),
        (lambda: AttentionBank(3, dtype=torch.int8), TypeError, ["dtype", "float16", "int8"]),
        (lambda: AttentionBank(3, fill=2.0), ValueError, ["fill", "[0, 1]", "2.0"]),
        (lambda: bank.update(torch.tensor([0, 1]), torch.rand(2, 4, 5)), ValueError, ["maps", "(2, 4, 4)", "(2, 4, 5)"]),
        (lambda: bank.update(torch.tensor([0, 1]), torch.rand(2, 16)), ValueError, ["maps", "(B, h, w)", "(2, 16)"]),
        (lambda: bank.update(torch.tensor([0, 1]), torch.ones(2, 4, 4, dtype=torch.int32)), TypeError,
         ["maps", "float", "int32"]),
        (lambda: bank.update(torch.tensor([0, 1]), torch.full((2, 4, 4), 1.5)), ValueError, ["maps", "[0, 1]", "1.5"]),
        (lambda: bank.update(torch.tensor([0, 4]), maps), ValueError, ["indices", "[0, 4)", "4"]),
        (lambda: bank.update(torch.tensor([-1, 0]), maps), ValueError, ["indices", "[0, 4)", "-1"]),
        (lambda: bank.update(torch.tensor([0.0, 1.0]), maps), TypeError, ["indices", "int64", "float32"]),
        (lambda: bank.update(torch.tensor([1, 1]), maps), ValueError, ["indices", "distinct", "got 1 2 times"]),
        (lambda: bank[7], ValueError, ["indices", "[0, 4)", "7"]),
        (lambda: bank.load_state_dict({"maps": torch.rand(3, 4, 4), "refreshes": 1}), ValueError,
         ["state['maps']", "(4, 4, 4)", "(3, 4, 4)"]),
        (lambda: bank.load_state_dict({"maps": torch.ones(4, 4, 4, dtype=torch.uint8), "refreshes": 1}), TypeError,
         ["state['maps']", "float", "uint8"]),
        (lambda: bank.load_state_dict(torch.rand(4, 4, 4)), TypeError, ["state", "state_dict", "Tensor"]),
        (lambda: bank.patch_weights(torch.tensor([0, 9]), crops, 20, patch_size=10), ValueError, ["indices", "9"]),
        (lambda: crop_patch_weights(maps[0], crops, 20), ValueError, ["maps", "(B, h, w)", "(4, 4)"]),
        (lambda: crop_patch_weights(maps, crops.float(), 20), TypeError, ["crops", "int64", "float32"]),
        (lambda: crop_patch_weights(maps, crops[:, :6], 20), ValueError, ["crops", "(B, 7)", "(2, 6)"]),
        (lambda: crop_patch_weights(maps, crops[:1], 20), ValueError, ["crops", "one row per map", "(1, 7)"]),
        (lambda: crop_patch_weights(maps, crops + torch.tensor([15, 0, 0, 0, 0, 0, 0]), 20), ValueError,
         ["crops", "inside their images", "row 0"]),
        (lambda: crop_patch_weights(maps, crops, 20, patch_size=16), ValueError, ["size", "divisible", "patch_size=16"]),
        (lambda: crop_patch_weights(maps, crops, 20, map_crop="corner"), ValueError, ["map_crop", "paper", "corner"]),
        (lambda: crop_patch_weights(maps * 3, crops, 20, map_crop="paper"), ValueError, ["maps", "[0, 1]"]),
        (lambda: crop_patch_weights(-maps - 1, crops, 20), ValueError, ["maps", ">= 0"]),
        (lambda: crop_patch_weights(maps, crops, 20, masking="amt"), TypeError, ["masking", "map_crop"]),
        (lambda: bank.refresh(no_cls, [(images, torch.arange(4))], progress=False), ValueError,
         ["class token", "num_prefix_tokens"]),
        (lambda: bank.refresh(torch.nn.Linear(2, 2), [(images, torch.arange(4))], progress=False), TypeError,
         ["model", "blocks[-1].attn", "Linear"]),
        (lambda: bank.refresh(vit, [images], progress=False), TypeError, ["loader", "(images, ..., indices)", "Tensor"]),
        (lambda: bank.refresh(vit, [(images, torch.arange(4) + 1)], progress=False), ValueError,
         ["the loader's indices", "[0, 4)", "4"]),
        (lambda: bank.refresh(vit, [(images, torch.arange(4.0))], progress=False), TypeError,
         ["the loader's indices", "int64", "float32"]),
        (lambda: bank.refresh(vit, [(images, torch.arange(3))], progress=False), ValueError, ["one entry per image", "4", "3"]),
        (lambda: bank.refresh(vit, [(images, torch.arange(4))], autocast=torch.float64, progress=False), TypeError,
         ["autocast", "bfloat16", "float64"]),
        (lambda: AMTSchedule(-1), ValueError, ["epochs", "-1"]),
        (lambda: AMTSchedule(10, refresh_interval=0), ValueError, ["refresh_interval", "0"]),
        (lambda: AMTSchedule(10, interval=5), TypeError, ["AMTSchedule", "interval", "refresh_interval"]),
        (lambda: AMTSchedule(10).refresh_after(-2), ValueError, ["epoch", "-2"]),
        (lambda: AMTRandomResizedCrop(hflip=2), ValueError, ["hflip", "[0, 1]", "2"]),
        (lambda: AMTRandomResizedCrop(interpolation=3), TypeError, ["interpolation", "InterpolationMode", "int"]),
        (lambda: AMTRandomResizedCrop(scale=(0.5, 0.2)), ValueError, ["scale", "low <= high", "0.5"]),
        (lambda: AMTDataset([1, 2], AMTRandomResizedCrop(), bank=bank), ValueError, ["bank", "2", "4"]),
        (lambda: ShardSampler(5, rank=2, world_size=2), ValueError, ["rank", "[0, 1]", "2"]),
    ]
    for make, exc, words in cases:
        assert_raises_naming(make, exc, words)


# --- kamim-fast show --amt ------------------------------------------------------------------------------------------


def test_show_amt_command_line(tmp_path, capsys):
    import skimage.data
    import skimage.io

    from kamim_fast import cli

    image = tmp_path / "coffee.png"
    skimage.io.imsave(image, skimage.data.coffee()[:120, :160])
    out = tmp_path / "amt.png"
    assert cli.main(["show", str(image), "--amt", "--input-size", "64", "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64)
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    assert cli.main(["show", str(image), "--amt", "--input-size", "64", "--checkpoint", str(tmp_path / "vit.pt"),
                     "-o", str(tmp_path / "amt2.png")]) == 0
    torch.save(_tiny_vit(img_size=64).state_dict(), tmp_path / "other.pt")  # another ViT's weights
    for bad in (["--model", "no_such_model"], ["--checkpoint", str(tmp_path / "missing.pt")],
                ["--checkpoint", str(tmp_path / "other.pt")], ["--input-size", "0"]):
        with pytest.raises(SystemExit) as info:
            cli.main(["show", str(image), "--amt", "--input-size", "64", "-o", str(tmp_path / "x.png"), *bad])
        assert info.value.code == 2, bad
    err = capsys.readouterr().err
    assert "usage: kamim-fast show" in err and "--input-size must be >= 1, got 0" in err and "--model must name" in err
