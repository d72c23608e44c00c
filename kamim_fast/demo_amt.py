"""The demo's AMT part: a tiny MAE pre-trained on the bundled photographs, first with MAE's random masking, then
with AMT's masking and throwing from an attention bank that the encoder refreshes every few steps.

Used by :func:`kamim_fast.demo.run` (``make demo``, ``kamim-fast demo``); ``kamim-fast demo --method amt`` runs
this part alone. It prints the steps/s of the MAE and the MAE+AMT phases side by side (the same model, batch and
data; AMT's encoder sees 0.15 of the patches where MAE's sees 0.25, its decoder 0.6 where MAE's sees all).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from .demo import TRAIN_IMAGES, _sync, load_bundled

IMAGES_PER_PHOTO = 4  # the bank's images: this many fixed crops of each bundled colour photograph
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class AMTConfig:
    """Sizes of the AMT demo: full (a minute or two on 2 CPU cores) or quick (seconds)."""

    def __init__(self, quick: bool, steps: int | None = None, batch_size: int | None = None) -> None:
        self.quick = quick
        self.img_size = 64 if quick else 96
        self.batch_size = batch_size or (8 if quick else 32)
        self.steps = steps or (8 if quick else 60)  # per phase: MAE, then MAE+AMT
        self.refresh_every = max(1, self.steps // 3)
        self.model = dict(img_size=self.img_size, patch_size=16, embed_dim=48 if quick else 96,
                          depth=2 if quick else 4, num_heads=3, decoder_embed_dim=32 if quick else 64,
                          decoder_depth=1 if quick else 2, decoder_num_heads=2, mlp_ratio=2.0, norm_pix_loss=True)

    def describe(self) -> str:
        m = self.model
        return (f"MAE (kamim_fast.integrations.mae) {m['img_size']} px, patch {m['patch_size']}, width "
                f"{m['embed_dim']}, depth {m['depth']}, decoder {m['decoder_embed_dim']} x {m['decoder_depth']}; batch "
                f"{self.batch_size}, {self.steps} MAE steps then {self.steps} MAE+AMT steps, the bank refreshed "
                f"before the AMT phase and every {self.refresh_every} steps in it")


def _images() -> list[torch.Tensor]:
    """The bank's images: IMAGES_PER_PHOTO fixed uint8 crops (3, h, w) of each bundled colour photograph."""
    out = []
    for name in TRAIN_IMAGES:
        photo = torch.from_numpy(load_bundled(name)).permute(2, 0, 1).contiguous()
        _, H, W = photo.shape
        h, w = 3 * H // 4, 3 * W // 4
        out += [photo[:, y : y + h, x : x + w].contiguous() for y in (0, H - h) for x in (0, W - w)]
    return out


def train_amt(cfg: AMTConfig, device: torch.device, seed: int = 0) -> dict:
    """MAE, then MAE+AMT, on the same model; returns the losses, steps/s of each phase and the refreshes."""
    from tqdm.auto import tqdm

    from .integrations.amt_bank import AttentionBank
    from .integrations.amt_data import AMTRandomResizedCrop
    from .integrations.mae import MaskedAutoencoderViT

    torch.manual_seed(seed)
    images = _images()
    size = cfg.img_size
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    crop = AMTRandomResizedCrop(size)
    model = MaskedAutoencoderViT(**cfg.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-3, weight_decay=0.05, betas=(0.9, 0.95))
    bank = AttentionBank(len(images), grid=size // 16)
    resized = torch.stack([torch.nn.functional.interpolate(i[None].float(), size=(size, size), mode="bilinear",
                                                           antialias=True)[0] for i in images])
    resized = ((resized.to(device) / 255 - mean) / std)
    refresh_loader = [(resized[k : k + 2 * cfg.batch_size], torch.arange(k, min(k + 2 * cfg.batch_size, len(images))))
                      for k in range(0, len(images), 2 * cfg.batch_size)]  # the published refresh: resized, no crop

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.randint(len(images), (cfg.batch_size,))
        pairs = [crop(images[k]) for k in index.tolist()]  # the workers' part: crop, flip, record the box
        x = torch.stack([p[0] for p in pairs]).to(device).float()
        return (x / 255 - mean) / std, index, torch.stack([p[1] for p in pairs])

    def step(amt: bool) -> float:
        x, index, crops = batch()
        weights = bank.patch_weights(index, crops, size, device=device) if amt else None
        loss, _, _ = model(x, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    result: dict = dict(losses={}, steps_per_s={}, refresh_s=0.0, refreshes=0)
    for phase, amt in (("MAE", False), ("MAE+AMT", True)):
        if amt:
            t = time.perf_counter()
            bank.refresh(model, refresh_loader, progress=False)
            result["refresh_s"] += time.perf_counter() - t
        step(amt)  # one untimed step: first-call set-up stays out of the rate
        losses, times = [], []
        bar = tqdm(range(cfg.steps), desc=phase, unit="step", file=sys.stdout, mininterval=0.5)
        for k in bar:
            if amt and k and k % cfg.refresh_every == 0:
                t = time.perf_counter()
                bank.refresh(model, refresh_loader, progress=False)  # in place; the next batch reads it
                result["refresh_s"] += time.perf_counter() - t
            _sync(device)
            t = time.perf_counter()
            losses.append(step(amt))
            _sync(device)
            times.append(time.perf_counter() - t)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refreshes=bank.refreshes)
        bar.close()
        result["losses"][phase] = losses
        result["steps_per_s"][phase] = 1 / statistics.median(times)  # the median step: robust to a busy machine
    result["refreshes"] = bank.refreshes
    return result


def report_amt(cfg: AMTConfig, result: dict) -> str:
    mae, amt = result["steps_per_s"]["MAE"], result["steps_per_s"]["MAE+AMT"]
    lines = [f"| {'phase':<12} | {'steps/s':>8} | {'images/s':>9} | {'first loss':>10} | {'last loss':>9} |",
             f"|{'-' * 14}|{'-' * 10}|{'-' * 11}|{'-' * 12}|{'-' * 11}|"]
    for phase, rate in (("MAE", mae), ("MAE+AMT", amt)):
        losses = result["losses"][phase]
        lines.append(f"| {phase:<12} | {rate:>8.2f} | {rate * cfg.batch_size:>9.1f} | {losses[0]:>10.4f} | "
                     f"{losses[-1]:>9.4f} |")
    lines.append(f"MAE+AMT step / MAE step (median times): {mae / amt:.2f}; {result['refreshes']} bank refreshes, "
                 f"{1e3 * result['refresh_s'] / max(1, result['refreshes']):.0f} ms each (not in the rates)")
    return "\n".join(lines)
