"""``make demo`` / ``kamim-fast demo``: kamim_fast end to end on the images bundled with scikit-image.

1. FAST on one image on the device, checked against OpenCV, drawn to ``fast_<image>.png``.
2. ``kamim-fast show`` on that image: ``show_<image>.png``.
3. A tiny timm ViT pretrained with SimMIM + KAMIM for a few hundred steps on random crops of the bundled
   colour images, everything on the device: uint8 crops -> kornia augmentation -> SimMIM masks ->
   model -> ``weighted_mim_loss(..., "fast")``. Prints the loss curve, the fused path's loss against the
   PyTorch reference's at the first step, steps/s and where the time goes; writes ``loss_curve.png``.

4. A tiny MAE (``kamim_fast.integrations.mae``) pretrained on crops of the same photographs, first with MAE's
   random masking, then with AMT's masking and throwing from an attention bank the encoder refreshes every few
   steps (``kamim_fast/demo_amt.py``). Prints steps/s of MAE and MAE+AMT side by side.

``KAMIM_FAST_DEMO_QUICK=1`` (or ``--quick``) shrinks steps 3 and 4 to seconds (CI runs it so). ``method="amt"``
(``kamim-fast demo --method amt``) runs step 4 alone, ``method="kamim"`` steps 1-3.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ._backend import ENV_VAR as BACKEND_ENV_VAR

QUICK_ENV_VAR = "KAMIM_FAST_DEMO_QUICK"
TRAIN_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")  # the colour photographs bundled with scikit-image
SOURCE_CROP = 256  # side of the uint8 crops drawn from the photographs before the GPU augmentation
# 2-D images shipped inside scikit-image (others in skimage.data are fetched from the network: not offered)
BUNDLED_IMAGES = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel", "moon",
                  "page", "rocket", "text")
INTERPRETED_COMPARE_IMAGES = 8  # on the CPU the Triton interpreter is slow: compare on this many images


def quick_requested() -> bool:
    return os.environ.get(QUICK_ENV_VAR, "").strip().lower() not in ("", "0", "false", "no")


def load_bundled(name: str) -> np.ndarray:
    """A scikit-image bundled image (no download) as an array; SystemExit naming the choices when unknown."""
    import skimage.data

    if name not in BUNDLED_IMAGES:
        raise SystemExit(f"--image must be one of the images bundled with scikit-image {BUNDLED_IMAGES}, got {name!r}")
    return np.ascontiguousarray(getattr(skimage.data, name)())


@contextlib.contextmanager
def backend(value: str) -> Iterator[None]:
    """Set KAMIM_FAST_BACKEND for the block (it is read at every call)."""
    old = os.environ.get(BACKEND_ENV_VAR)
    os.environ[BACKEND_ENV_VAR] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[BACKEND_ENV_VAR]
        else:
            os.environ[BACKEND_ENV_VAR] = old


def fast_check(image: str, out_dir: Path, threshold: int, device: torch.device) -> Path:
    """Step 1: FAST on the device against OpenCV, drawn to a PNG. Raises SystemExit when they differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import fast_corners, rgb_to_gray_u8
    from ._backend import requested_backend, resolve

    img = load_bundled(image)
    rgb = torch.from_numpy(img).to(device)
    gray = rgb_to_gray_u8(rgb.permute(2, 0, 1)) if img.ndim == 3 else rgb
    used = resolve("fast_corners", gray.device).backend
    fast_corners(gray, threshold)  # warm-up: Triton compiles on the first call
    _sync(device)
    start = time.perf_counter()
    keypoints, scores = fast_corners(gray, threshold)
    _sync(device)
    elapsed = time.perf_counter() - start
    ys, xs = keypoints.nonzero(as_tuple=True)
    print(f"image      {image} {tuple(img.shape)} on {device} ({BACKEND_ENV_VAR}={requested_backend()} -> {used})")
    print(f"keypoints  {len(xs)} at threshold {threshold} with non-max suppression, in {elapsed * 1e3:.2f} ms")
    try:
        import cv2
    except ImportError:
        print("opencv     not installed: skipped the comparison")
    else:
        cv_points = {(int(k.pt[1]), int(k.pt[0])) for k in cv2.FastFeatureDetector_create(threshold, True).detect(gray.cpu().numpy())}
        ours = set(zip(ys.tolist(), xs.tolist()))
        verdict = "identical" if ours == cv_points else f"DIFFERENT ({len(ours ^ cv_points)} points)"
        print(f"opencv     {cv2.__version__}: {len(cv_points)} keypoints, {verdict}")
        if ours != cv_points:
            raise SystemExit("kamim_fast's keypoints differ from OpenCV's")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"fast_{image}.png"
    fig, ax = plt.subplots(figsize=(8, 8 * img.shape[0] / img.shape[1]), dpi=100)
    ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
    sc = ax.scatter(xs.cpu(), ys.cpu(), s=5, c=scores[ys, xs].cpu(), cmap="autumn", linewidths=0.2, edgecolors="k")
    fig.colorbar(sc, ax=ax, fraction=0.035, label="FAST score")
    ax.set_title(f"FAST-9/16 keypoints ({len(xs)}), threshold {threshold}")
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote      {path}")
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainConfig:
    """Sizes of the training demo: full (a couple of minutes on 2 CPU cores) or quick (seconds)."""

    def __init__(self, quick: bool, steps: int | None = None, batch_size: int | None = None) -> None:
        self.quick = quick
        self.img_size = 64 if quick else 96
        self.batch_size = batch_size or (8 if quick else 32)
        self.steps = steps or (12 if quick else 300)
        self.lr = 1.5e-3
        self.warmup = max(1, self.steps // 10)
        self.vit = dict(img_size=self.img_size, patch_size=16, embed_dim=48 if quick else 96, depth=2 if quick else 4,
                        num_heads=3, mlp_ratio=2.0)

    def describe(self) -> str:
        v = self.vit
        return (f"ViT (timm) {v['img_size']} px, patch {v['patch_size']}, width {v['embed_dim']}, depth {v['depth']}; "
                f"batch {self.batch_size}, {self.steps} steps, AdamW lr {self.lr:g} (warm-up {self.warmup}, cosine)")


class BundledCrops:
    """Random SOURCE_CROP-px uint8 crops of the bundled colour photographs, drawn on the device."""

    def __init__(self, device: torch.device, generator: torch.Generator) -> None:
        self.images = [torch.from_numpy(load_bundled(n)).permute(2, 0, 1).contiguous().to(device) for n in TRAIN_IMAGES]
        self.side = min(SOURCE_CROP, *(min(i.shape[1:]) for i in self.images))
        self.generator = generator
        self.device = device

    def batch(self, batch_size: int) -> torch.Tensor:
        g = self.generator
        which = torch.randint(len(self.images), (batch_size,), generator=g).tolist()
        out = []
        for k in which:
            img = self.images[k]
            y = int(torch.randint(img.shape[1] - self.side + 1, (1,), generator=g))
            x = int(torch.randint(img.shape[2] - self.side + 1, (1,), generator=g))
            out.append(img[:, y : y + self.side, x : x + self.side])
        return torch.stack(out)


PHASES = ("data", "model forward", "weights + loss", "backward", "optimiser")


def train(cfg: TrainConfig, device: torch.device, out_dir: Path, seed: int = 0) -> dict:
    """Step 3: SimMIM + KAMIM pretraining of a tiny timm ViT. Returns the losses, timings and comparison."""
    from tqdm.auto import tqdm

    from .integrations.data import SimMIMAugment, simmim_mask
    from .integrations.timm import simmim_vit
    from .weights import KAMIM_PAPER

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mask_gen = torch.Generator(device).manual_seed(seed)
    data = BundledCrops(device, gen)
    augment = SimMIMAugment(cfg.img_size).to(device)
    model = simmim_vit(weights="fast", loss_options=dict(KAMIM_PAPER), **cfg.vit).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 *
                                              (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    times = dict.fromkeys(PHASES, 0.0)
    losses: list[float] = []
    comparison = None
    bar = tqdm(range(cfg.steps), desc="SimMIM+KAMIM", unit="step", file=sys.stdout, mininterval=0.5)
    start = time.perf_counter()
    for step in bar:
        t0 = time.perf_counter()
        x = augment(data.batch(cfg.batch_size))
        mask = simmim_mask(cfg.batch_size, cfg.img_size, device=device, generator=mask_gen)
        _sync(device)
        t1 = time.perf_counter()
        rec = model.reconstruct(x, mask)
        _sync(device)
        t2 = time.perf_counter()
        loss = model.criterion(rec, x, mask)
        _sync(device)
        t3 = time.perf_counter()
        loss_dt = t3 - t2
        if step == 0:  # the comparison is kept out of the timings
            comparison = compare_first_step(rec.detach(), x, mask, device)
            skipped = time.perf_counter() - t3
            start += skipped
            t3 += skipped
        loss.backward()
        _sync(device)
        t4 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        _sync(device)
        t5 = time.perf_counter()
        for name, dt in zip(PHASES, (t1 - t0, t2 - t1, loss_dt, t4 - t3, t5 - t4)):
            times[name] += dt
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    elapsed = time.perf_counter() - start
    bar.close()
    curve = _plot_curve(losses, out_dir / "loss_curve.png", cfg)
    return dict(losses=losses, times=times, elapsed=elapsed, comparison=comparison, curve=curve)


def compare_first_step(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, device: torch.device) -> dict:
    """The fused Triton path's loss and gradient against the PyTorch reference on step 1's tensors.

    On CUDA both run here (``KAMIM_FAST_BACKEND=triton`` vs ``torch``). On the CPU the Triton kernels need
    the interpreter, which must be switched on before triton is imported, so the comparison runs in a
    child process with ``TRITON_INTERPRET=1``, on the first ``INTERPRETED_COMPARE_IMAGES`` images.
    """
    if device.type == "cuda":
        result = _compare(pred, target, mask)
        result["where"] = f"CUDA, full batch of {pred.shape[0]}"
        return result
    n = min(pred.shape[0], INTERPRETED_COMPARE_IMAGES)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "step1.pt"
        torch.save({"pred": pred[:n].cpu(), "target": target[:n].cpu(), "mask": mask[:n].cpu()}, path)
        env = {**os.environ, "TRITON_INTERPRET": "1", BACKEND_ENV_VAR: "triton"}
        proc = subprocess.run([sys.executable, "-m", "kamim_fast.demo", "--compare", str(path)], env=env,
                              capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"the fused-vs-reference comparison failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["where"] = f"CPU, Triton interpreter, first {n} of {pred.shape[0]} images"
    return result


def _compare(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict:
    from .mim_loss import KAMIM_PAPER, weighted_mim_loss

    out = {}
    for name in ("triton", "torch"):
        p = pred.detach().clone().requires_grad_()
        with backend(name):
            loss = weighted_mim_loss(p, target, mask, "fast", **KAMIM_PAPER)
            loss.backward()
        out[name] = (loss.item(), p.grad)
    (lf, gf), (lr, gr) = out["triton"], out["torch"]
    return dict(fused=lf, reference=lr, loss_rel_diff=abs(lf - lr) / max(abs(lr), 1e-30),
                grad_max_abs_diff=float((gf - gr).abs().max()), grad_max_abs=float(gr.abs().max()))


def _compare_main(path: str) -> None:
    """Child process of :func:`compare_first_step` (TRITON_INTERPRET=1 set before triton's import)."""
    state = torch.load(path)
    print(json.dumps(_compare(state["pred"], state["target"], state["mask"])))


def _plot_curve(losses: list[float], path: Path, cfg: TrainConfig) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100, constrained_layout=True)
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.5, label="per step")
    k = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    ax.plot(range(k, len(losses) + 1), smooth, lw=1.8, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("KAMIM loss")
    ax.set_title(cfg.describe(), fontsize=7)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def sparkline(values: list[float], width: int = 30) -> str:
    """The curve as block characters, ``width`` buckets of means."""
    blocks = "▁▂▃▄▅▆▇█"
    chunks = np.array_split(np.asarray(values, dtype=np.float64), min(width, len(values)))
    means = np.array([c.mean() for c in chunks])
    lo, hi = means.min(), means.max()
    idx = np.zeros(len(means), int) if hi == lo else np.rint((means - lo) / (hi - lo) * 7).astype(int)
    return "".join(blocks[i] for i in idx)


def report(cfg: TrainConfig, device: torch.device, result: dict) -> str:
    losses, times, elapsed, cmp = result["losses"], result["times"], result["elapsed"], result["comparison"]
    k = max(1, len(losses) // 10)
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    lines = [
        f"loss curve {sparkline(losses)}",
        f"           step 1: {losses[0]:.4f}   mean of first {k}: {first:.4f}   mean of last {k}: {last:.4f}   "
        f"min: {min(losses):.4f}   change: {100 * (last - first) / first:+.1f}%",
        "",
        f"| {'measure':<48} | {'value':>44} |",
        f"|{'-' * 50}|{'-' * 46}|",
    ]

    def row(name: str, value: str) -> None:
        lines.append(f"| {name:<48} | {value:>44} |")

    row("step-1 loss (compared images), fused Triton", f"{cmp['fused']:.7f}")
    row("step-1 loss (compared images), PyTorch ref.", f"{cmp['reference']:.7f}")
    row("  relative difference", f"{cmp['loss_rel_diff']:.2e}")
    row("  gradient max |difference| (max |grad|)", f"{cmp['grad_max_abs_diff']:.1e} ({cmp['grad_max_abs']:.1e})")
    row("  compared on", cmp["where"])
    from ._backend import resolve

    path = {"triton": "fused Triton", "cpp": "native C++", "torch": "PyTorch reference"}
    row("training loss path (KAMIM_FAST_BACKEND)", path[resolve("fast_weighted_mim_loss", device).backend])
    row("steps/s", f"{len(losses) / elapsed:.2f}")
    row("images/s", f"{len(losses) * cfg.batch_size / elapsed:.1f}")
    total = sum(times.values())
    for name in PHASES:
        ms = 1e3 * times[name] / len(losses)
        row(f"time per step: {name}", f"{ms:.1f} ms ({100 * times[name] / total:.0f}%)")
    return "\n".join(lines)


METHODS = ("both", "kamim", "amt")


def run(image: str = "astronaut", out_dir: Path = Path("demo_out"), threshold: int = 10, quick: bool | None = None,
        steps: int | None = None, batch_size: int | None = None, seed: int = 0, method: str = "both") -> dict:
    """The whole demo; returns the training results (see :func:`train`; ``"amt"``: :func:`.demo_amt.train_amt`)."""
    from .show import show

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    quick = quick_requested() if quick is None else quick
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if method == "amt":
        return dict(amt=run_amt(device, quick, steps, batch_size, seed))
    load_bundled(image)  # fail before any work on an unknown name
    print(f"== 1. FAST on the {device.type.upper()} against OpenCV")
    fast_check(image, out_dir, threshold, device)
    print(f"\n== 2. kamim-fast show {image}")
    path = show(load_bundled(image), out_dir / f"show_{image}.png", threshold=threshold, device=device, channel_order="bgr",
                title=f"{image}: KAMIM_PAPER options (gray as OpenCV's BGR2GRAY of the RGB array, as published)")
    print(f"wrote      {path}")
    cfg = TrainConfig(quick, steps, batch_size)
    print(f"\n== 3. SimMIM + KAMIM pretraining on {device.type.upper()}{' (quick mode: --quick or ' + QUICK_ENV_VAR + '=1)' if quick else ''}")
    print(f"           {cfg.describe()}")
    print(f"           data: random {SOURCE_CROP} px crops of {', '.join(TRAIN_IMAGES)} -> kornia RandomResizedCrop "
          f"(0.67-1) + flips on {device.type} -> SimMIM masks (32 px, 60%)")
    result = train(cfg, device, out_dir, seed)
    print(report(cfg, device, result))
    print(f"wrote      {out_dir / 'loss_curve.png'}")
    cmp = result["comparison"]
    if not (cmp["loss_rel_diff"] <= 1e-5 and cmp["grad_max_abs_diff"] <= 1e-5 * max(cmp["grad_max_abs"], 1e-30)):
        raise SystemExit("the fused path's loss or gradient differs from the PyTorch reference at step 1")
    if method == "both":
        result["amt"] = run_amt(device, quick, steps, batch_size, seed)
    return result


def run_amt(device: torch.device, quick: bool, steps: int | None, batch_size: int | None, seed: int) -> dict:
    """Step 4: MAE, then MAE+AMT with its attention bank; prints the table and returns the result."""
    from .demo_amt import AMTConfig, report_amt, train_amt

    cfg = AMTConfig(quick, steps, batch_size)
    print(f"\n== 4. MAE + AMT pretraining on {device.type.upper()}{' (quick mode)' if quick else ''}")
    print(f"           {cfg.describe()}")
    print(f"           data: {', '.join(TRAIN_IMAGES)}, 4 crops each, in an attention bank; per step a random resized "
          f"crop and flip with its box recorded, the map cropped like the image")
    result = train_amt(cfg, device, seed)
    print(report_amt(cfg, result))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compare":
        _compare_main(sys.argv[2])
    else:
        raise SystemExit("usage: python -m kamim_fast demo (this module's own entry is the comparison's child process)")
