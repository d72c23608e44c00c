"""docs/ERRORS.md is executable: each row's call raises the documented exception with the documented message, on
every backend this machine runs (the ops check their arguments before dispatch, the same for every backend)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import kamim_fast
from conftest import runnable
from kamim_fast import _backend

ROW = re.compile(r"^\| `(?P<call>.+)` \| (?P<exc>\w+) \| (?P<message>.+) \|$")
ROWS = [m.groupdict() for line in (Path(__file__).resolve().parents[1] / "docs" / "ERRORS.md").read_text().splitlines()
        if (m := ROW.match(line))]


# The backends the rows run under on CPU tensors: each the registry lists and this machine runs.
BACKENDS = ["torch"] + [b for b in ("cpp", "triton") if runnable(b, "cpu")
                        and any(b in e.impls and "cpu" in e.impls[b].devices for e in _backend.TABLE.values())]


def test_the_table_covers_every_public_function_that_calls_an_op():
    called = {row["call"].split("(")[0] for row in ROWS}
    assert len(ROWS) >= 30
    calling = {name for name in kamim_fast.__all__ if inspect.isfunction(getattr(kamim_fast, name))
               and "torch.ops.kamim_fast." in inspect.getsource(getattr(kamim_fast, name))}
    assert calling and calling <= called, calling - called
    assert {"WeightedMIMLoss", "KamimWeights", "hf_mim_loss"} <= called
    assert {"vit_class_attention", "AttentionBank", "crop_patch_weights", "AMTSchedule", "AMTRandomResizedCrop",
            "AMTDataset", "ShardSampler"} <= called


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("row", ROWS, ids=[r["call"][:60] for r in ROWS])
def test_documented_error(row, backend, monkeypatch):
    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    import timm
    from transformers import ViTImageProcessor

    from kamim_fast.integrations import amt_bank, amt_data
    from kamim_fast.integrations.hf import hf_mim_loss, processor_stats, vitmae_amt_noise
    from kamim_fast.integrations.mae import MaskedAutoencoderViT
    from kamim_fast.integrations.simmim import amt_mask

    namespace = {"torch": torch, "z": torch.zeros, "np": np, "timm": timm, "hf_mim_loss": hf_mim_loss,
                 "processor_stats": processor_stats, "ViTImageProcessor": ViTImageProcessor,
                 "vitmae_amt_noise": vitmae_amt_noise, "MaskedAutoencoderViT": MaskedAutoencoderViT,
                 "amt_mask": amt_mask,
                 **{name: value for module in (amt_bank, amt_data) for name, value in vars(module).items()
                    if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__},
                 **{name: getattr(kamim_fast, name) for name in kamim_fast.__all__}}
    with pytest.raises(getattr(__builtins__, row["exc"], None) or __builtins__[row["exc"]]) as info:
        eval(row["call"], namespace)
    assert str(info.value) == row["message"]
