"""MAE + AMT pretraining: kamim_fast's MAE, its attention bank with the published refresh schedule, one trainer.

What an MAE trainer changes for AMT (github.com/guijiejie/AMT), all of it below:

- the dataset records each image's index and random-resized-crop box (``AMTDataset``, ``AMTRandomResizedCrop``);
- an ``AttentionBank`` holds one attention map per image, refreshed by the encoder every few epochs
  (``AMTSchedule``: after epoch 40 and every 40 epochs in the published runs; here every epoch after the first);
- the step crops each image's map like the image (``bank.patch_weights``) and passes it to the model:
  ``model(images, weights)``; with ``weights=None`` the same model is MAE (random masking at 0.75), which is
  how the published trainer runs until the first refresh;
- the bank goes into the checkpoint beside the model (``bank.state_dict()``).

The data loader's workers only crop and record the box: the map's crop runs in the step, on the device. Images
are the colour photographs scikit-image ships (and crops of them), at 64 px (``--quick``) or 96 px.

    python examples/mae_amt.py              # a few minutes on a CPU
    python examples/mae_amt.py --quick      # seconds (what CI runs)
    python examples/mae_amt.py --compile    # the whole step under torch.compile (no graph break)

Needs ``pip install "kamim-fast[demo]"`` (timm, scikit-image) and torchvision.
"""

from __future__ import annotations

import argparse
import os

import skimage.data
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from kamim_fast.integrations.amt_bank import AMTSchedule, AttentionBank, IndexedDataset, ShardSampler, refresh_transform
from kamim_fast.integrations.amt_data import AMTDataset, AMTRandomResizedCrop
from kamim_fast.integrations.mae import MaskedAutoencoderViT

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")        # the colour photographs scikit-image ships
NORMALISE = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406],
                                                                            [0.229, 0.224, 0.225])])


def photo_dataset(copies: int) -> list[tuple[Image.Image, int]]:
    """``(PIL image, 0)`` items, like ``ImageFolder``'s: the photographs and ``copies - 1`` crops of each."""
    items = []
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)())
        W, H = photo.size
        items += [(photo.crop((k * W // (4 * copies), 0, W - k * W // (4 * copies), H)), 0) for k in range(copies)]
    return items


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("KAMIM_FAST_EXAMPLE_QUICK") == "1",
                        help="a few steps of a tiny model (also KAMIM_FAST_EXAMPLE_QUICK=1)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (fullgraph)")
    parser.add_argument("--save", help="write a checkpoint (model, optimiser, attention bank) there at the end")
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 20)
    size, batch, copies = (64, 4, 2) if args.quick else (96, 8, 8)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    model = MaskedAutoencoderViT(img_size=size, patch_size=16, embed_dim=32 if args.quick else 192,
                                 depth=1 if args.quick else 6, num_heads=2 if args.quick else 3,
                                 decoder_embed_dim=32 if args.quick else 128, decoder_depth=1 if args.quick else 2,
                                 decoder_num_heads=2 if args.quick else 4, norm_pix_loss=True).to(device)
    step_model = torch.compile(model, fullgraph=True) if args.compile else model
    optimiser = torch.optim.AdamW(model.parameters(), lr=1.5e-4 * batch / 256 * 10, betas=(0.9, 0.95),
                                  weight_decay=0.05)

    photos = photo_dataset(copies)
    bank = AttentionBank(len(photos), grid=size // 16)        # ones until the first refresh, as published
    schedule = AMTSchedule(epochs, warmup_epochs=1, refresh_interval=1)  # published: AMTSchedule(epochs, **AMT_DEFAULTS)
    train = DataLoader(AMTDataset(photos, AMTRandomResizedCrop(size), NORMALISE), batch_size=batch, shuffle=True,
                       num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=True)
    # the refresh: each image resized (no crop), as published; under DDP ShardSampler gives each rank its shard
    refresh = DataLoader(IndexedDataset(photos, refresh_transform(size)), batch_size=2 * batch,
                         sampler=ShardSampler(len(photos)), num_workers=0)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    loss = torch.tensor(float("nan"))
    for epoch in range(epochs):
        amt = schedule.amt_active(epoch)
        for images, _, index, crops in train:
            images = images.to(device, non_blocking=True)
            # the one line MAE's step changes: the attention maps, cropped like the images (None: MAE's masking)
            weights = bank.patch_weights(index, crops, size, device=device) if amt else None
            with torch.autocast(**autocast):
                loss, _, mask = step_model(images, weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if schedule.refresh_after(epoch):
            bank.refresh(model, refresh, progress=False)       # in place: the persistent workers need nothing
        how = (f"AMT: {int((mask[0] == 1).sum())} masked, {int((mask[0] == -1).sum())} thrown of {mask.shape[1]}"
               if amt else f"MAE: {int(mask[0].sum())} masked of {mask.shape[1]}")
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} ({how})")
    if args.save:                                              # a resumed run keeps its bank
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "bank": bank.state_dict(),
                    "epoch": epochs}, args.save)
    return loss.item()


if __name__ == "__main__":
    main()
