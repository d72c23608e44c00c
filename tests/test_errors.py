"""docs/ERRORS.md is executable: each row's call raises the documented exception with the documented message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import kamim_fast

ROW = re.compile(r"^\| `(?P<call>.+)` \| (?P<exc>\w+) \| (?P<message>.+) \|$")
ROWS = [m.groupdict() for line in (Path(__file__).resolve().parents[1] / "docs" / "ERRORS.md").read_text().splitlines()
        if (m := ROW.match(line))]


def test_the_table_covers_every_module():
    called = {row["call"].split("(")[0] for row in ROWS}
    assert len(ROWS) >= 30
    assert {"weighted_mim_loss", "fast_corners", "rgb_to_gray_u8", "keypoint_density", "patch_weights", "amt_masking",
            "gather_patches", "random_masking", "unshuffle_with_mask_token", "WeightedMIMLoss", "KamimWeights",
            "hf_mim_loss", "vit_class_attention", "AttentionBank", "crop_patch_weights", "AMTSchedule",
            "AMTRandomResizedCrop", "AMTDataset", "ShardSampler"} <= called


@pytest.mark.parametrize("row", ROWS, ids=[r["call"][:60] for r in ROWS])
def test_documented_error(row, monkeypatch):
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "torch")
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
