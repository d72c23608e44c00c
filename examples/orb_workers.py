"""KAMIM with ORB keypoints: the weights computed in persistent DataLoader workers, the loss on the device.

ORB and SIFT are OpenCV's CPU detectors (the published ``--detector orb|sift``). ``KamimWeights`` is a
picklable transform: each worker turns its augmented uint8 crop into the (H/8, W/8) weight map, and the
loss takes the batch of maps as a tensor. ``persistent_workers=True`` keeps the workers, and what they set
up at their first call, from one epoch to the next.

    python examples/orb_workers.py              # 3 epochs of a small SimMIM ViT at 96 px
    python examples/orb_workers.py --quick      # seconds (what CI runs)

Needs ``pip install "kamim-fast[demo]"`` (OpenCV, timm, scikit-image).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import skimage.data
import torch
from torch.utils.data import DataLoader, Dataset

from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, KAMIM_PAPER, KamimWeights, weighted_mim_loss
from kamim_fast.integrations.data import simmim_mask
from kamim_fast.integrations.timm import simmim_vit

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")        # the colour photographs scikit-image ships


class CropsWithWeights(Dataset):
    """Random flipped crops of ``size`` px: (normalised (3, size, size) float32, (size/8, size/8) ORB weights)."""

    def __init__(self, length: int, size: int, detector: str = "orb") -> None:
        self.photos = [getattr(skimage.data, name)() for name in PHOTOS]
        self.length, self.size = length, size
        self.weights = KamimWeights(detector=detector, **KAMIM_PAPER)   # picklable: it travels to the workers
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(index)
        photo = self.photos[index % len(self.photos)]
        y, x = (int(rng.integers(n - self.size + 1)) for n in photo.shape[:2])
        crop = photo[y:y + self.size, x:x + self.size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.ascontiguousarray(crop)                       # the augmented (H, W, 3) uint8 image
        weights = self.weights(crop)                            # (H/8, W/8) float32: ORB, drawKeypoints, pooling
        image = (torch.from_numpy(crop).permute(2, 0, 1) / 255 - self.mean) / self.std
        return image, weights


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("KAMIM_FAST_EXAMPLE_QUICK") == "1",
                        help="a few steps of a tiny model (also KAMIM_FAST_EXAMPLE_QUICK=1)")
    parser.add_argument("--detector", choices=("orb", "sift", "fast"), default="orb")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 3)
    size, batch, length = (64, 4, 8) if args.quick else (96, 16, 256)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    model = simmim_vit(img_size=size, patch_size=16, embed_dim=32 if args.quick else 192, depth=1 if args.quick else 6,
                       num_heads=2 if args.quick else 3).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    generator = torch.Generator(device).manual_seed(0)
    loader = DataLoader(CropsWithWeights(length, size, args.detector), batch_size=batch, shuffle=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda", drop_last=True)
    loss = torch.tensor(float("nan"))
    for epoch in range(epochs):
        for images, weights in loader:
            images, weights = images.to(device, non_blocking=True), weights.to(device, non_blocking=True)
            mask = simmim_mask(len(images), size, model_patch_size=16, device=device, generator=generator)
            pred = model.reconstruct(images, mask)
            loss = weighted_mim_loss(pred, images, mask, weights)   # tensor weights: any detector's
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} ({args.detector} weights from the workers)")
    return loss.item()


if __name__ == "__main__":
    main()
