"""AMT's attention bank: one map per image in shared memory, its refresh over the dataset, and its schedule.

The published code keeps a (num_images, 14, 14) float32 tensor on the dataset, initialised to ones, and
every ``--loc_interval`` epochs from epoch 40 replaces it with the current encoder's class attention over
the whole training set (REFERENCE.md section 5). :class:`AttentionBank` does the same with three changes:

- It holds the maps once, in shared memory, at 2 bytes per patch (float16 by default): DataLoader workers,
  forked or spawned, persistent or not, read the same pages, and a refresh writes into them in place, so
  every worker sees it (the published attribute assignment never reaches persistent workers).
- :meth:`AttentionBank.refresh` places each map by its dataset index, which the loader yields: under DDP
  each rank computes a disjoint shard of any size (:class:`ShardSampler`), the ranks exchange (index, map)
  pairs, and every rank writes the whole bank; no padding reaches it and no sampler order is assumed.
- It is part of the checkpoint (:meth:`AttentionBank.state_dict`), so a resumed run keeps its bank.

:class:`AMTSchedule` says, per epoch, when to refresh and when AMT's masking is on, as the published
trainer decides it.

A training loop (``bank.patch_weights`` crops each map like its image, see :mod:`.amt_data`)::

    bank = AttentionBank(len(train_set), grid=14)
    schedule = AMTSchedule(epochs, **AMT_DEFAULTS)
    for epoch in range(start_epoch, epochs):
        for images, _, index, crops in loader:  # AMTDataset(ImageFolder(...), AMTRandomResizedCrop(224), ...)
            weights = bank.patch_weights(index, crops, 224, device="cuda") if schedule.amt_active(epoch) else None
            ...  # MAE's random masking without weights, amt_masking(weights, ...) with them
        if schedule.refresh_after(epoch):
            bank.refresh(model_without_ddp, refresh_loader)  # IndexedDataset + ShardSampler, see refresh()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._checks import check_bool, check_int, check_size_pair, check_tensor
from ..amt import vit_class_attention
from ..amt_presets import AMT_DEFAULTS, check_amt_options
from ..gray import IMAGENET_MEAN, IMAGENET_STD, ChannelStats
from .amt_data import check_crops, check_maps, crop_patch_weights

BANK_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_DTYPES = (torch.int32, torch.int64)
STATE_VERSION = 1


def _check_indices(indices: object, num_images: int, name: str = "indices") -> torch.Tensor:
    """A 0-d or 1-d integer tensor (or int, or sequence of ints) of dataset indices in [0, num_images), as int64."""
    if isinstance(indices, int) and not isinstance(indices, bool):
        indices = torch.tensor(indices)
    elif isinstance(indices, Sequence) and not isinstance(indices, str):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise TypeError(f"{name} must hold ints, got {list(indices)[:4]!r}...")
        indices = torch.tensor(list(indices), dtype=torch.int64)
    check_tensor(name, indices, dtypes=INDEX_DTYPES, ndims=(0, 1), shape_doc="(B,)")
    if indices.device.type == "cpu" and indices.numel():
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= num_images:
            raise ValueError(f"{name} must be in [0, {num_images}) (the bank's images), got {lo if lo < 0 else hi}")
    return indices.long()


class AttentionBank:
    """One attention map per image, (num_images, h, w), in shared memory; refreshed in place, checkpointable.

    Initialised to ``fill`` (ones, as published: until the first refresh every patch weighs the same).
    Storage: float16 by default, 2 bytes per patch (ImageNet-1k at ViT-B/16: 1,281,167 x 196 x 2 bytes =
    0.50 GB); maps are in [0, 1], where float16 rounds to within 2**-12 (relative 2**-11), far below what
    moves ``torch.multinomial``'s draws; bfloat16 (2**-9) or float32 (exact, 4 bytes) on request.

    The tensor lives in shared memory (``share_memory_``, /dev/shm on Linux: give containers enough of it).
    DataLoader workers see the same pages: forked workers inherit them, spawned workers receive them through
    torch.multiprocessing's pickler, and since every write (:meth:`refresh`, :meth:`update`,
    :meth:`load_state_dict`) is in place, persistent workers see each one. Refresh between epochs: a
    worker that reads maps (``AMTDataset(..., bank=bank)``) during a write could read a half-written batch.

    Args:
        num_images: the dataset's length.
        grid: (h, w) patches of the map, an int or a pair: the encoder's image size over its patch size
            during the refresh (14 for ViT-B/16 at 224).
        dtype: float16, bfloat16 or float32.
        fill: the initial value of every patch, in [0, 1].

    Example:
        >>> bank = AttentionBank(3, grid=2)
        >>> bank.maps.shape, bank.maps.dtype, bank.maps.is_shared(), bank.bytes_per_image
        (torch.Size([3, 2, 2]), torch.float16, True, 8)
        >>> bank.update(torch.tensor([2]), torch.tensor([[[0.0, 0.5], [1.0, 0.25]]]))
        >>> bank[2]
        tensor([[0.0000, 0.5000],
                [1.0000, 0.2500]])
        >>> crops = torch.tensor([[0, 0, 32, 32, 32, 32, 1]])  # the whole 32 x 32 image, flipped
        >>> bank.patch_weights([2], crops, 32, patch_size=16).shape  # (B, N) for amt_masking
        torch.Size([1, 4])
    """

    def __init__(
        self,
        num_images: int,
        grid: int | tuple[int, int] = 14,
        *,
        dtype: torch.dtype = torch.float16,
        fill: float = 1.0,
    ) -> None:
        n = check_int("num_images", num_images, 1, 1 << 40)
        h, w = check_size_pair("grid", grid)
        if dtype not in BANK_DTYPES:
            raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype!r}")
        if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0 <= fill <= 1:
            raise ValueError(f"fill must be a float in [0, 1], got {fill!r}")
        self._maps = torch.empty((n, h, w), dtype=dtype).share_memory_()
        self._maps.fill_(float(fill))
        self._refreshes = torch.zeros((), dtype=torch.int64).share_memory_()

    # --- what it holds ------------------------------------------------------------------------------------

    @property
    def maps(self) -> torch.Tensor:
        """(num_images, h, w), the shared tensor itself (writes to it reach the workers; prefer :meth:`update`)."""
        return self._maps

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w): the patches of one map."""
        return tuple(self._maps.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return self._maps.dtype

    @property
    def bytes_per_image(self) -> int:
        """Bytes of one map: h * w * 2 for float16."""
        return self._maps[0].numel() * self._maps.element_size()

    @property
    def refreshes(self) -> int:
        """How many refreshes the maps come from (0: still the initial fill); checkpointed with them."""
        return int(self._refreshes)

    def __len__(self) -> int:
        return self._maps.shape[0]

    def __getitem__(self, indices: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The maps of ``indices`` as float32: (h, w) for one index, (B, h, w) for a (B,) tensor or sequence."""
        idx = _check_indices(indices, len(self))
        return self._maps[idx.cpu()].float()

    def __repr__(self) -> str:
        h, w = self.grid
        return (f"{type(self).__name__}(num_images={len(self)}, grid=({h}, {w}), dtype={self.dtype}, "
                f"refreshes={self.refreshes}, {self._maps.nbytes / 2**20:.1f} MiB shared)")

    def __setstate__(self, state: dict) -> None:
        """Unpickled by torch.multiprocessing (a spawned worker) the tensors are the shared ones; unpickled from a
        plain pickle they are copies, moved to shared memory here."""
        self.__dict__.update(state)
        for t in (self._maps, self._refreshes):
            if not t.is_shared():
                t.share_memory_()

    # --- writing --------------------------------------------------------------------------------------------

    def update(self, indices: torch.Tensor | Sequence[int], maps: torch.Tensor) -> None:
        """Writes ``maps`` at ``indices`` in place (cast to the bank's dtype; every worker sees it).

        Args:
            indices: (B,) distinct dataset indices, int32/int64, in [0, num_images).
            maps: (B, h, w) float maps in [0, 1] (the map of ``vit_class_attention``), on any device.
        """
        idx = _check_indices(indices, len(self)).reshape(-1).cpu()
        check_maps(maps, "paper")  # in [0, 1]
        if tuple(maps.shape) != (idx.numel(), *self.grid):
            raise ValueError(f"maps must have shape (B, h, w) = {(idx.numel(), *self.grid)} for {idx.numel()} indices, "
                             f"got {tuple(maps.shape)}")
        values, counts = idx.unique(return_counts=True)
        if bool((counts > 1).any()):
            repeated = int(values[counts > 1][0])
            raise ValueError(f"indices must be distinct (one map per image), got {repeated} "
                             f"{int(counts[values == repeated][0])} times")
        self._maps[idx] = maps.detach().to("cpu", self.dtype)

    def fill_(self, value: float = 1.0) -> None:
        """Every map back to ``value`` (in [0, 1]) and the refresh count to 0."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"value must be a float in [0, 1], got {value!r}")
        self._maps.fill_(float(value))
        self._refreshes.zero_()

    # --- checkpoints ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"maps": (num_images, h, w) tensor (the shared one, not a copy), "refreshes": int, "version": 1}``
        for ``torch.save`` beside the model's."""
        return {"maps": self._maps, "refreshes": self.refreshes, "version": STATE_VERSION}

    def load_state_dict(self, state: dict) -> None:
        """Copies a :meth:`state_dict` into the bank in place (cast to the bank's dtype; workers see it).

        Raises:
            TypeError: ``state`` is not such a dict, or its maps are not a float tensor.
            ValueError: its maps' shape is not this bank's (num_images, h, w), or their values are not in [0, 1].
        """
        if not isinstance(state, dict) or "maps" not in state or "refreshes" not in state:
            raise TypeError(f"state must be an AttentionBank.state_dict() (keys maps, refreshes), got "
                            f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        maps = check_maps(state["maps"], "paper", name="state['maps']")
        if tuple(maps.shape) != tuple(self._maps.shape):
            raise ValueError(f"state['maps'] must have the bank's shape (num_images, h, w) = {tuple(self._maps.shape)}, "
                             f"got {tuple(maps.shape)}")
        refreshes = check_int("state['refreshes']", state["refreshes"], 0, 1 << 62)
        self._maps.copy_(maps.detach().to("cpu"))
        self._refreshes.fill_(refreshes)

    # --- the training step's side ----------------------------------------------------------------------------

    def patch_weights(
        self,
        indices: torch.Tensor | Sequence[int],
        crops: torch.Tensor,
        size: int | tuple[int, int],
        *,
        patch_size: int = 16,
        map_crop: str = AMT_DEFAULTS["map_crop"],
        device: torch.device | str | None = None,
        **preset: object,
    ) -> torch.Tensor:
        """The batch's per-patch weights for :func:`kamim_fast.amt_masking`: its maps, cropped like its images.

        Reads the maps of ``indices`` (B x h x w x 2 bytes), moves them and ``crops`` to ``device`` and runs
        :func:`kamim_fast.integrations.amt_data.crop_patch_weights` there.

        Args:
            indices: (B,) the batch's dataset indices, as :class:`~.amt_data.AMTDataset` yields them.
            crops: (B, 7) their crop records (:data:`~.amt_data.CROP_FIELDS`).
            size: the crop's output size; patch_size: the weighted patch's side (16; SimMIM-AMT's cells: 32).
            map_crop: ``"box"`` (default) or ``"paper"`` (the published corner slice).
            device: where to compute (default: the CPU).
            **preset: the other options of :data:`kamim_fast.AMT_DEFAULTS` (``**AMT_PAPER`` whole); unused here.

        Returns:
            (B, N) float32 weights on ``device``.
        """
        check_amt_options("patch_weights", preset)
        idx = _check_indices(indices, len(self)).reshape(-1)
        check_crops(crops, idx.numel())
        device = torch.device("cpu") if device is None else torch.device(device)
        maps = self._maps[idx.cpu()].to(device, non_blocking=True)
        return crop_patch_weights(maps, crops.to(device, non_blocking=True), size, patch_size=patch_size,
                                  map_crop=map_crop)

    # --- the refresh ------------------------------------------------------------------------------------------

    def refresh(
        self,
        model: nn.Module,
        loader: object,
        *,
        attention: nn.Module | None = None,
        forward: Callable[[torch.Tensor], object] | None = None,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        autocast: torch.dtype | str | None = "auto",
        device: torch.device | str | None = None,
        progress: bool | None = None,
        group: object | None = None,
        complete: bool = True,
    ) -> int:
        """Recomputes the maps with the current encoder: :func:`kamim_fast.vit_class_attention` over ``loader``.

        Each batch of ``loader`` is a tuple whose first element is the images and whose last is their dataset
        indices (:class:`IndexedDataset`); as published, the images are only resized to the encoder's input
        size (:func:`refresh_transform`). Every map is placed by its index. Under ``torch.distributed`` each
        rank iterates its own shard (:class:`ShardSampler`: disjoint, of any size); the ranks then exchange
        their (index, map) pairs and every rank writes the whole bank. The model runs in eval mode (its mode
        is restored after), under ``torch.no_grad`` and autocast. Under DDP every rank of ``group`` must call it
        (the exchange is a collective).

        Encoders: a timm ``VisionTransformer`` with a class token; kamim_fast's MAE and any encoder that keeps
        its blocks in ``model.blocks`` (the last one's attention as ``.attn``, timm's layout) and runs every
        patch in ``model.forward_features``; any other encoder with ``attention=`` (its last attention block)
        and ``forward=`` (a callable running it over unmasked images). See :func:`kamim_fast.vit_class_attention`.

        Args:
            model: the encoder (a DistributedDataParallel or torch.compile wrapper is unwrapped).
            loader: an iterable of (images (B, C, H, W), ..., indices (B,) int) batches.
            attention: the last attention block, when it is not ``model.blocks[-1].attn``.
            forward: the encoder's full forward, when it is not ``model.forward_features``.
            preprocess: applied to each batch on ``device`` before the model (e.g. uint8 to normalised float).
            autocast: the autocast dtype; ``"auto"``: float16 on CUDA (as published), none elsewhere; None: off.
            device: where the model runs (default: its parameters' device).
            progress: a tqdm bar on rank 0; None: when tqdm is installed.
            group: the process group (default: the world, when torch.distributed is initialised).
            complete: require every image of the bank to be refreshed (the loader covers the dataset).

        Returns:
            The number of maps written (``len(bank)`` when ``complete``).

        Raises:
            TypeError: a batch is not (images, ..., indices) or its indices are not integers; the model has no
                timm-style last attention block.
            ValueError: indices out of range; the encoder's patch grid is not the bank's; a model without a class
                token; with ``complete``, images the loader did not cover (the bank is left unchanged).

        Example:
            >>> import timm
            >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0)
            >>> images = torch.randn(5, 3, 32, 32)
            >>> loader = [(images[:3], torch.tensor([0, 1, 2])), (images[3:], torch.tensor([3, 4]))]
            >>> bank = AttentionBank(5, grid=2)
            >>> bank.refresh(vit, loader, progress=False), bank.refreshes
            (5, 1)
            >>> bool((bank.maps.float() - vit_class_attention(vit, images).reshape(5, 2, 2)).abs().max() < 1e-3)
            True
        """
        import torch.distributed as dist

        model = _unwrap(model)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (the encoder), got {type(model).__name__}")
        complete = check_bool("complete", complete)
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be callable or None, got {type(preprocess).__name__}")
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        device = torch.device(device)
        amp = _autocast_context(autocast, device)
        distributed = dist.is_available() and dist.is_initialized()
        rank = dist.get_rank(group) if distributed else 0
        bar = _progress(loader, progress, rank)
        h, w = self.grid
        idx_parts, map_parts = [], []
        was_training = model.training
        model.eval()
        try:
            for batch in bar:
                images, index = _split_batch(batch, len(self))
                images = images.to(device, non_blocking=True)
                if preprocess is not None:
                    images = preprocess(images)
                with amp:
                    attn = vit_class_attention(model, images, attention=attention, forward=forward)
                if attn.shape[1] != h * w:
                    raise ValueError(f"the encoder gives {attn.shape[1]} patches per image, the bank's grid is "
                                     f"{h} x {w} = {h * w}")
                map_parts.append(attn.reshape(-1, h, w).to(self.dtype))  # kept on the device: no sync per batch
                idx_parts.append(index)
        finally:
            model.train(was_training)
            if hasattr(bar, "close"):
                bar.close()
        idx = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.int64)
        maps = torch.cat(map_parts).cpu() if map_parts else self._maps.new_zeros((0, h, w))
        if distributed and dist.get_world_size(group) > 1:
            idx, maps = _all_gather_pairs(idx, maps, group)
        idx, maps = _first_of_each(idx, maps)
        if complete and idx.numel() != len(self):
            raise ValueError(f"loader must cover every image of the bank (complete=True): it gave {idx.numel()} of "
                             f"{len(self)} distinct indices; the bank is unchanged")
        self._maps[idx] = maps
        self._refreshes += 1
        return int(idx.numel())


# --- refresh helpers ------------------------------------------------------------------------------------------


def _unwrap(model: object) -> object:
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _autocast_context(autocast: object, device: torch.device):
    if autocast == "auto":
        autocast = torch.float16 if device.type == "cuda" else None
    if autocast is None:
        return contextlib.nullcontext()
    if not isinstance(autocast, torch.dtype) or autocast not in (torch.float16, torch.bfloat16):
        raise TypeError(f"autocast must be 'auto', None, torch.float16 or torch.bfloat16, got {autocast!r}")
    return torch.autocast(device.type, dtype=autocast)


def _progress(loader: object, progress: bool | None, rank: int) -> object:
    if progress is not None:
        check_bool("progress", progress)
    if progress is False or rank != 0:
        return loader
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress:
            raise ImportError("progress=True needs tqdm (pip install tqdm)") from None
        return loader
    total = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(loader, total=total, desc="attention bank refresh", unit="batch")


def _split_batch(batch: object, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"loader must yield (images, ..., indices) tuples, got {type(batch).__name__}"
                        + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    images, index = batch[0], batch[-1]
    check_tensor("images", images, ndims=(4,), shape_doc="(B, C, H, W)")
    index = _check_indices(index, num_images, name="the loader's indices").reshape(-1)
    if index.numel() != images.shape[0]:
        raise ValueError(f"the loader's indices must have one entry per image ({images.shape[0]}), got {index.numel()}")
    return images, index.cpu()


def _all_gather_pairs(idx: torch.Tensor, maps: torch.Tensor, group: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (index, map) pairs on every rank, in rank order; uneven counts padded for the collective
    and the padding dropped by each rank's count (maps travel as their bytes: any dtype, any backend)."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")
    count = torch.tensor([idx.numel()], dtype=torch.int64, device=comm)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    counts = [int(c) for c in counts]
    most = max(counts)
    row_bytes = int(torch.Size(maps.shape[1:]).numel()) * maps.element_size()
    raw = maps.contiguous().view(torch.uint8).reshape(maps.shape[0], row_bytes)
    pad_idx = torch.full((most,), -1, dtype=torch.int64, device=comm)
    pad_idx[: idx.numel()] = idx.to(comm)
    pad_raw = torch.zeros((most, raw.shape[1]), dtype=torch.uint8, device=comm)
    pad_raw[: raw.shape[0]] = raw.to(comm)
    all_idx = [torch.empty_like(pad_idx) for _ in range(world)]
    all_raw = [torch.empty_like(pad_raw) for _ in range(world)]
    dist.all_gather(all_idx, pad_idx, group=group)
    dist.all_gather(all_raw, pad_raw, group=group)
    idx = torch.cat([t[:c] for t, c in zip(all_idx, counts)]).cpu()
    raw = torch.cat([t[:c] for t, c in zip(all_raw, counts)]).cpu()
    return idx, raw.view(maps.dtype).reshape(-1, *maps.shape[1:])


def _first_of_each(idx: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (index, map) pair of each index, in a fixed order (a sampler that pads repeats some images)."""
    order = torch.sort(idx, stable=True).indices
    sorted_idx = idx[order]
    first = torch.ones_like(sorted_idx, dtype=torch.bool)
    first[1:] = sorted_idx[1:] != sorted_idx[:-1]
    keep = order[first]
    return idx[keep], maps[keep]


# --- the refresh's data -----------------------------------------------------------------------------------------


class IndexedDataset(torch.utils.data.Dataset):
    """``(transform(image), index)`` for each image of ``dataset``: the refresh loader's items.

    Args:
        dataset: any map-style dataset of images or of tuples whose first element is the image.
        transform: applied to the image (:func:`refresh_transform` for the published resize).

    Example:
        >>> ds = IndexedDataset([(torch.zeros(3, 4, 4), 0), (torch.ones(3, 4, 4), 1)])
        >>> image, index = ds[1]
        >>> image.mean().item(), index
        (1.0, 1)
    """

    def __init__(self, dataset: Sequence | torch.utils.data.Dataset,
                 transform: Callable[[object], torch.Tensor] | None = None) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[object, int]:
        item = self.dataset[index]
        image = item[0] if isinstance(item, (tuple, list)) else item
        return (self.transform(image) if self.transform is not None else image), index


def refresh_transform(size: int = 224, mean: ChannelStats = IMAGENET_MEAN, std: ChannelStats = IMAGENET_STD):
    """The published refresh's image transform: ``Resize((size, size))`` (no crop), ``ToTensor``, ``Normalize``.

    Example:
        >>> from PIL import Image
        >>> refresh_transform(32)(Image.new("RGB", (50, 40))).shape
        torch.Size([3, 32, 32])
    """
    from torchvision import transforms

    s = check_int("size", size, 1, 1 << 16)
    return transforms.Compose([transforms.Resize((s, s)), transforms.ToTensor(),
                               transforms.Normalize(mean=list(mean), std=list(std))])


class ShardSampler(torch.utils.data.Sampler):
    """Rank r's contiguous shard of ``range(num_images)``: disjoint, covering, sizes differing by at most one.

    No index is repeated to even the shards out (the published sampler pads with the last one), so the
    refresh computes each image once; :meth:`AttentionBank.refresh` places maps by index and handles
    uneven shards.

    Args:
        num_images: the dataset's length.
        rank, world_size: default: torch.distributed's, or 0 and 1 without a process group.

    Example:
        >>> list(ShardSampler(5, rank=0, world_size=2)), list(ShardSampler(5, rank=1, world_size=2))
        ([0, 1], [2, 3, 4])
    """

    def __init__(self, num_images: int, rank: int | None = None, world_size: int | None = None) -> None:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        self.num_images = check_int("num_images", num_images, 0, 1 << 40)
        self.world_size = check_int("world_size", world_size, 1, 1 << 20)
        self.rank = check_int("rank", rank, 0, self.world_size - 1)
        self.start = self.rank * self.num_images // self.world_size
        self.stop = (self.rank + 1) * self.num_images // self.world_size

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


# --- the schedule ---------------------------------------------------------------------------------------------


class AMTSchedule:
    """When the bank is refreshed and AMT's masking is on, per epoch (0-based), as the published trainer decides.

    - :meth:`refresh_after` (epoch): refresh once the epoch's training is done, when ``epoch >= warmup_epochs``,
      ``epoch % refresh_interval == 0`` and it is not the last epoch (``main_pretrain.py``: ``epoch >=
      args.warmup_epochs and epoch + 1 != args.epochs and epoch % args.loc_interval == 0``; the interval
      counts from epoch 0, not from the warm-up).
    - :meth:`amt_active` (epoch): AMT's masking from the epoch after the first refresh; before it, MAE's
      random masking (0.75). With the published values that is ``epoch > 40``, the published models'
      condition (``models_mae.py`` and SimMIM-AMT's ``AMT_START_EPOCH`` hard-code 40).
    - ``refresh_on_resume``: refresh right after resuming from a checkpoint (the published trainer does,
      since it does not save the bank; :data:`kamim_fast.AMT_PAPER`). False by default: the bank is
      checkpointed.

    Args:
        epochs: the run's number of epochs.
        warmup_epochs: the first epoch after which a refresh may run (40).
        refresh_interval: refresh after epochs that are multiples of it (``--loc_interval``, 40).
        refresh_on_resume: see above.
        **preset: the other options of :data:`kamim_fast.AMT_DEFAULTS` (``**AMT_PAPER`` whole); unused here.

    Example:
        >>> s = AMTSchedule(200, warmup_epochs=40, refresh_interval=40)
        >>> s.refresh_epochs(), s.amt_active(40), s.amt_active(41)
        ([40, 80, 120, 160], False, True)
        >>> AMTSchedule(161).refresh_epochs()  # never after the last epoch (160)
        [40, 80, 120]
    """

    def __init__(
        self,
        epochs: int,
        *,
        warmup_epochs: int = AMT_DEFAULTS["warmup_epochs"],
        refresh_interval: int = AMT_DEFAULTS["refresh_interval"],
        refresh_on_resume: bool = AMT_DEFAULTS["refresh_on_resume"],
        **preset: object,
    ) -> None:
        check_amt_options("AMTSchedule", preset)
        self.epochs = check_int("epochs", epochs, 0, 1 << 31)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0, 1 << 31)
        self.refresh_interval = check_int("refresh_interval", refresh_interval, 1, 1 << 31)
        self.refresh_on_resume = check_bool("refresh_on_resume", refresh_on_resume)
        first = -(-self.warmup_epochs // self.refresh_interval) * self.refresh_interval  # first multiple >= warm-up
        self.first_refresh = first if first + 1 < self.epochs else None

    def refresh_after(self, epoch: int) -> bool:
        """Whether to refresh the bank after training ``epoch``."""
        e = check_int("epoch", epoch, 0, 1 << 31)
        return e >= self.warmup_epochs and e + 1 != self.epochs and e % self.refresh_interval == 0

    def amt_active(self, epoch: int) -> bool:
        """Whether ``epoch`` trains with AMT's masking (else MAE's random masking)."""
        e = check_int("epoch", epoch, 0, 1 << 31)
        return self.first_refresh is not None and e > self.first_refresh

    def refresh_epochs(self) -> list[int]:
        """The epochs after which a refresh runs."""
        return [e for e in range(self.epochs) if self.refresh_after(e)]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(epochs={self.epochs}, warmup_epochs={self.warmup_epochs}, "
                f"refresh_interval={self.refresh_interval}, refresh_on_resume={self.refresh_on_resume})")
