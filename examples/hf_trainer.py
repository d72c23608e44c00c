"""KAMIM with Hugging Face's ``Trainer``: ``ViTForMaskedImageModeling`` wrapped by ``HFMaskedImageModeling``.

``HFMaskedImageModeling(model, processor=processor)`` returns the model's output with ``loss`` replaced by
KAMIM's, which is what ``Trainer`` optimises. The processor's statistics (``ViTImageProcessor``: 0.5, not
ImageNet's) reach the weights, which recover the uint8 image from ``pixel_values``. The model is built
from a config (no download); the data are crops of the photographs scikit-image ships.

    python examples/hf_trainer.py              # 100 steps of a small ViT at 96 px
    python examples/hf_trainer.py --quick      # seconds (what CI runs)

Needs ``pip install "kamim-fast[demo]" transformers accelerate``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import skimage.data
import torch
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForMaskedImageModeling, ViTImageProcessor

from kamim_fast import KAMIM_PAPER
from kamim_fast.integrations.hf import HFMaskedImageModeling

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")        # the colour photographs scikit-image ships


class MaskedImages(torch.utils.data.Dataset):
    """Random crops through the processor, each with SimMIM's mask: {"pixel_values", "bool_masked_pos"}."""

    def __init__(self, length: int, processor: ViTImageProcessor, size: int, patch: int, mask_cell: int = 32):
        self.photos = [getattr(skimage.data, name)() for name in PHOTOS]
        self.length, self.processor, self.size = length, processor, size
        self.cells, self.repeat = size // mask_cell, mask_cell // patch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(index)
        photo = self.photos[index % len(self.photos)]
        side = int(rng.integers(self.size, min(photo.shape[:2]) + 1))
        y, x = (int(rng.integers(n - side + 1)) for n in photo.shape[:2])
        pixel_values = self.processor(photo[y:y + side, x:x + side], return_tensors="pt")["pixel_values"][0]
        cells = torch.zeros(self.cells * self.cells, dtype=torch.bool)    # SimMIM's: 60% of the 32 px cells
        cells[torch.from_numpy(rng.permutation(cells.numel())[: int(np.ceil(cells.numel() * 0.6))])] = True
        mask = cells.view(self.cells, self.cells).repeat_interleave(self.repeat, 0).repeat_interleave(self.repeat, 1)
        return {"pixel_values": pixel_values, "bool_masked_pos": mask.flatten()}       # (3, H, W), (N,)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("KAMIM_FAST_EXAMPLE_QUICK") == "1",
                        help="a few steps of a tiny model (also KAMIM_FAST_EXAMPLE_QUICK=1)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--output-dir", default=None, help="Trainer's output_dir (default: a temporary folder)")
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.quick else 100)
    size, patch, batch = (64, 16, 4) if args.quick else (96, 16, 16)

    config = ViTConfig(image_size=size, patch_size=patch, encoder_stride=patch, hidden_size=32 if args.quick else 192,
                       num_hidden_layers=1 if args.quick else 6, num_attention_heads=2 if args.quick else 3,
                       intermediate_size=64 if args.quick else 768)
    processor = ViTImageProcessor(size={"height": size, "width": size})   # normalises with mean = std = 0.5
    model = HFMaskedImageModeling(ViTForMaskedImageModeling(config), processor=processor, **KAMIM_PAPER)
    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingArguments(
            output_dir=args.output_dir or tmp, max_steps=steps, per_device_train_batch_size=batch,
            learning_rate=1e-3, logging_steps=1 if args.quick else 10, report_to=[], save_strategy="no",
            remove_unused_columns=False,        # the wrapper's forward takes **kwargs: keep both columns
            dataloader_num_workers=0 if args.quick else 2, use_cpu=not torch.cuda.is_available(),
            disable_tqdm=args.quick)
        trainer = Trainer(model=model, args=training, train_dataset=MaskedImages(steps * batch, processor, size, patch))
        result = trainer.train()
    last = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1]
    print(f"trained {result.global_step} steps, last logged loss {last:.4f}")
    return result.training_loss


if __name__ == "__main__":
    main()
