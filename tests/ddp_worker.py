"""One rank of tests/test_ddp.py: ``python ddp_worker.py RANK WORLD PORT DATA OUT [GROUPS]``.

Joins a gloo process group on the CPU, trains nothing: builds the SimMIM model from DATA's state, wraps it
in DistributedDataParallel, and saves the synchronised gradients of one backward for ``normalize="local"``
and ``"global"``, the loss values, and the global loss under ``torch.compile`` (aot_eager, fullgraph).

With GROUPS (e.g. ``0,2:1,3``: the ranks of each subgroup), every rank creates those subgroups and, in its
own, runs ``normalize="global"`` with ``process_group=`` that subgroup: DDP over the subgroup (its
gradients), and the loss itself with each kind of weights (its values and the gradients of pred).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from ranks import finish_rank
from torch.nn.parallel import DistributedDataParallel as DDP

from kamim_fast import KAMIM_PAPER, weighted_mim_loss
from kamim_fast.integrations.timm import simmim_vit


def main(rank: int, world: int, port: int, data_path: str, out_path: str, groups: str | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = torch.load(data_path)
    if groups is not None:
        subgroups(rank, world, data, [[int(r) for r in g.split(",")] for g in groups.split(":")], out_path)
        return
    x, mask = data["x"][rank::world], data["mask"][rank::world]  # this rank's shard
    out = {}
    for normalize in ("local", "global"):
        model = simmim_vit(loss_options={"normalize": normalize}, **data["vit"])
        model.load_state_dict(data["state"])
        ddp = DDP(model)
        loss = ddp(x, mask)
        loss.backward()
        out[normalize] = {"loss": loss.detach(), "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}
    # the all-reduce of the mask count traced by torch.compile: same value and gradient as eager
    pred = data["pred"][rank::world]
    eager_p = pred.clone().requires_grad_()
    eager = weighted_mim_loss(eager_p, x, mask, "fast", normalize="global", **KAMIM_PAPER)
    eager.backward()
    compiled_fn = torch.compile(lambda p, t, m: weighted_mim_loss(p, t, m, "fast", normalize="global", **KAMIM_PAPER),
                                backend="aot_eager", fullgraph=True)
    comp_p = pred.clone().requires_grad_()
    comp = compiled_fn(comp_p, x, mask)
    comp.backward()
    out["compile"] = {"eager": eager.detach(), "compiled": comp.detach(), "eager_grad": eager_p.grad,
                      "compiled_grad": comp_p.grad}
    torch.save(out, out_path)
    finish_rank()


def subgroups(rank: int, world: int, data: dict, groups: list[list[int]], out_path: str) -> None:
    made = [dist.new_group(g) for g in groups]  # every rank creates every group, in the same order
    group = next(made[i] for i, g in enumerate(groups) if rank in g)
    x, mask, pred = data["x"][rank::world], data["mask"][rank::world], data["pred"][rank::world]
    model = simmim_vit(loss_options={"normalize": "global", "process_group": group}, **data["vit"])
    model.load_state_dict(data["state"])
    ddp = DDP(model, process_group=group)
    loss = ddp(x, mask)
    loss.backward()
    out = {"ddp": {"loss": loss.detach(), "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}}
    for kind, weights in (("none", None), ("tensor", data["weights"][rank::world]), ("fast", "fast")):
        p = pred.clone().requires_grad_()
        value = weighted_mim_loss(p, x, mask, weights, normalize="global", process_group=group)
        value.backward()
        out[kind] = {"loss": value.detach(), "grad": p.grad}
    torch.save(out, out_path)
    finish_rank()


if __name__ == "__main__":
    r, w, port, data_path, out_path, *groups = sys.argv[1:]
    main(int(r), int(w), int(port), data_path, out_path, *groups)
