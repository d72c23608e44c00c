"""One rank of tests/test_amt_bank.py's DDP refresh: ``python ddp_amt_bank_worker.py RANK WORLD PORT DATA OUT``.

Joins a gloo process group on the CPU, builds the tiny ViT from DATA's state and refreshes three banks over
DATA's images: with :class:`ShardSampler` (disjoint shards of unequal size), with torch's
``DistributedSampler`` shuffled (it pads by repeating indices, and its order is not the dataset's), and
with this rank's loader missing an image (the refresh must refuse, on every rank alike), and of a one-image
dataset (rank 0's shard is empty). Saves the banks.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from ranks import finish_rank
from torch.utils.data import DataLoader, DistributedSampler

from kamim_fast.integrations.amt_bank import AttentionBank, IndexedDataset, ShardSampler


def main(rank: int, world: int, port: int, data_path: str, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = torch.load(data_path)
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **data["vit"])
    vit.load_state_dict(data["state"])
    images = data["images"]
    dataset = IndexedDataset(list(images))
    n, grid = len(images), data["grid"]
    out = {}
    shard = ShardSampler(n)
    bank = AttentionBank(n, grid, dtype=torch.float32)
    bank.refresh(vit, DataLoader(dataset, batch_size=2, sampler=shard), progress=False)
    out["shard"], out["shard_size"] = bank.maps.clone(), len(shard)
    padded = DistributedSampler(dataset, shuffle=True, seed=3)
    bank = AttentionBank(n, grid)
    bank.refresh(vit, DataLoader(dataset, batch_size=3, sampler=padded), progress=False)
    out["padded"], out["padded_size"] = bank.maps.clone(), len(padded)
    bank = AttentionBank(n, grid)
    missing = list(shard)[1:] if rank == world - 1 else list(shard)
    try:
        bank.refresh(vit, DataLoader(dataset, batch_size=2, sampler=missing), progress=False)
        out["missing"] = "no error"
    except ValueError as e:
        out["missing"] = str(e)
    out["missing_bank"] = bank.maps.clone()
    one = AttentionBank(1, grid, dtype=torch.float32)  # shards of 0 and 1 images
    one.refresh(vit, DataLoader(IndexedDataset(list(images[:1])), batch_size=2, sampler=ShardSampler(1)), progress=False)
    out["one"] = one.maps.clone()
    torch.save(out, out_path)
    finish_rank()


if __name__ == "__main__":
    r, w, port, data_path, out_path = sys.argv[1:]
    main(int(r), int(w), int(port), data_path, out_path)
