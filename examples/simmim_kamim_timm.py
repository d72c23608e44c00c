"""SimMIM + KAMIM pretraining of a timm ViT, fed by a torch DataLoader.

The DataLoader's workers only cut uint8 crops out of photographs (here the colour photographs scikit-image
ships; put your own image folder in ``PhotoCrops``). On the device, one batch at a time: kornia
augmentation (``SimMIMAugment``), SimMIM's mask (``simmim_mask``) and the model, whose loss computes KAMIM's
FAST weights from the normalised batch itself. Nothing runs OpenCV in the workers.

    python examples/simmim_kamim_timm.py              # 200 steps of a small ViT at 96 px (a few minutes on a CPU)
    python examples/simmim_kamim_timm.py --quick      # seconds (what CI runs)

Needs ``pip install "kamim-fast[demo]"`` (timm, kornia, scikit-image).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import skimage.data
import torch
from torch.utils.data import DataLoader, Dataset

from kamim_fast import KAMIM_PAPER
from kamim_fast.integrations.data import SimMIMAugment, simmim_mask
from kamim_fast.integrations.timm import simmim_vit

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")        # the colour photographs scikit-image ships


class PhotoCrops(Dataset):
    """``length`` random square uint8 crops of ``crop`` px from a few photographs: (3, crop, crop) uint8."""

    def __init__(self, length: int, crop: int = 160) -> None:
        self.photos = [getattr(skimage.data, name)() for name in PHOTOS]                  # (H, W, 3) uint8
        self.length, self.crop = length, crop

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng(index)                      # reproducible per item, whatever the worker
        photo = self.photos[index % len(self.photos)]
        y = rng.integers(photo.shape[0] - self.crop + 1)
        x = rng.integers(photo.shape[1] - self.crop + 1)
        return torch.from_numpy(photo[y:y + self.crop, x:x + self.crop]).permute(2, 0, 1).contiguous()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("KAMIM_FAST_EXAMPLE_QUICK") == "1",
                        help="a few steps of a tiny model (also KAMIM_FAST_EXAMPLE_QUICK=1)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    steps = args.steps or (4 if args.quick else 200)
    size, batch = (64, 4) if args.quick else (96, 32)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    model = simmim_vit(img_size=size, patch_size=16, embed_dim=32 if args.quick else 192, depth=1 if args.quick else 6,
                       num_heads=2 if args.quick else 3, loss_options=KAMIM_PAPER).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    augment = SimMIMAugment(size).to(device)                  # crop, flips and ImageNet normalisation, per image
    generator = torch.Generator(device).manual_seed(0)
    loader = DataLoader(PhotoCrops(steps * batch), batch_size=batch, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda", drop_last=True)

    loss = torch.tensor(float("nan"))
    for step, uint8_batch in enumerate(loader):
        x = augment(uint8_batch.to(device, non_blocking=True))                     # (B, 3, size, size) float32
        mask = simmim_mask(len(x), size, model_patch_size=16, device=device, generator=generator)
        loss = model(x, mask)                                  # KAMIM's weights come from x, inside the loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps}: loss {loss.item():.4f}")
    return loss.item()


if __name__ == "__main__":
    main()
