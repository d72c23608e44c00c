"""MAE and MAE+AMT under DistributedDataParallel: 2 gloo processes on the CPU (tests/ddp_mae_worker.py is one rank).

Every image masks and throws the same number of patches, so each rank's loss is the mean over the same number
of masked patches per image, and DDP's averaged gradient is that of the concatenated batch: one training step
on two ranks equals one process on the whole batch.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from ranks import spawn_ranks

from kamim_fast.integrations.mae import MaskedAutoencoderViT

WORKER = Path(__file__).with_name("ddp_mae_worker.py")
CONFIG = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
              decoder_num_heads=2, mlp_ratio=2.0, norm_pix_loss=True)  # the worker adds MAE's LayerNorm(eps=1e-6)
NORM = partial(torch.nn.LayerNorm, eps=1e-6)


@pytest.fixture(scope="module")
def ddp_mae_run(tmp_path_factory):
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(**CONFIG, norm_layer=NORM)
    B, N = 6, 16
    g = torch.Generator().manual_seed(1)
    data = {"config": CONFIG, "state": model.state_dict(), "images": torch.randn(B, 3, 32, 32, generator=g),
            "weights": torch.rand(B, 1, 32, 32, generator=g), "q": torch.empty(B, N).exponential_(generator=g),
            "noise": torch.rand(B, N, generator=g)}
    d = tmp_path_factory.mktemp("ddp_mae")
    torch.save(data, d / "data.pt")
    return data, spawn_ranks(WORKER, 2, d / "data.pt", d)


@pytest.mark.parametrize("branch", ["amt", "mae"])
def test_a_ddp_step_equals_one_process_on_the_concatenated_batch(ddp_mae_run, branch):
    data, ranks = ddp_mae_run
    model = MaskedAutoencoderViT(**data["config"], norm_layer=NORM)
    model.load_state_dict(data["state"])
    # SGD, not Adam: Adam divides by the root of the squared gradient, so a gradient that is 0 but for rounding
    # (the attention key bias) would step by +-lr on the sign of that rounding
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    if branch == "amt":
        loss, _, _ = model(data["images"], data["weights"], noise=data["q"])
    else:
        loss, _, _ = model(data["images"], noise=data["noise"])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    # the mean of the ranks' losses is the batch's (equal shards, equal masked counts per image)
    torch.testing.assert_close((ranks[0][branch]["loss"] + ranks[1][branch]["loss"]) / 2, loss.detach(), rtol=1e-5,
                               atol=0)
    for r in range(2):
        got = ranks[r][branch]
        assert got["grads"].keys() == grads.keys()
        for n, want in grads.items():  # equal up to float32 summation order (two shards and an all-reduce)
            scale = float(want.abs().max())
            err = float((got["grads"][n] - want).abs().max())
            assert err <= 1e-5 * scale + 1e-9, (n, err, scale)
        for n, p in model.named_parameters():
            torch.testing.assert_close(got["params"][n], p.detach(), rtol=1e-5, atol=1e-7, msg=n)
    # the ranks saw different data: their losses differ
    assert not torch.equal(ranks[0][branch]["loss"], ranks[1][branch]["loss"])
