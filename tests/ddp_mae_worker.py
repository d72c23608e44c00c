"""One rank of tests/test_ddp_mae.py: ``python ddp_mae_worker.py RANK WORLD PORT DATA OUT``.

Joins a gloo process group on the CPU, builds kamim_fast's MAE from DATA's state, wraps it in
DistributedDataParallel and runs one training step (forward, backward, SGD step) on its shard of the batch,
for MAE+AMT (the given weights and q) and for MAE (the given noise); saves the synchronised gradients, the
loss and the parameters after the step.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import torch
import torch.distributed as dist
from ranks import finish_rank
from torch.nn.parallel import DistributedDataParallel as DDP

from kamim_fast.integrations.mae import MaskedAutoencoderViT


def main(rank: int, world: int, port: int, data_path: str, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = torch.load(data_path)
    shard = slice(rank * data["images"].shape[0] // world, (rank + 1) * data["images"].shape[0] // world)
    out = {}
    for branch in ("amt", "mae"):
        model = MaskedAutoencoderViT(**data["config"], norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
        model.load_state_dict(data["state"])
        ddp = DDP(model)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        if branch == "amt":
            loss, _, _ = ddp(data["images"][shard], data["weights"][shard], noise=data["q"][shard])
        else:
            loss, _, _ = ddp(data["images"][shard], noise=data["noise"][shard])
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        out[branch] = {"loss": loss.detach(), "grads": grads,
                       "params": {n: p.detach().clone() for n, p in model.named_parameters()}}
    torch.save(out, out_path)
    finish_rank()


if __name__ == "__main__":
    r, w, port, data_path, out_path = sys.argv[1:]
    main(int(r), int(w), int(port), data_path, out_path)
