"""KAMIM weights + weighted masked L1, forward and backward, on real photographs.

- ``kamim_fast``: ``weighted_mim_loss(pred, target, mask, "fast", **KAMIM_PAPER)``, one fused kernel and
  the sign-code backward.
- ``published pipeline``: what the published code does per step: OpenCV FAST + drawKeypoints per image
  in CPU worker processes (the dataloader's), the ring maps copied to the device, conv2d pooling,
  exp/clip/min, SimMIM's loss with the weight, autograd.
- ``eager PyTorch reference``: the same pipeline written in PyTorch on the same device (kamim_fast's
  ``*_ref`` functions), autograd backward.
- ``torch.compile(reference)``: that function compiled (Inductor). Compiling costs minutes per shape,
  so it runs on the issue's headline shapes only (B=256, 192x192, p=8), unless ``compile_all``.

Minimal bytes: read pred and target once, write grad_pred once.

CPU cases of the native kernels (``cpu_native_cases``, issue 11): B=16, 3x192x192, p=8, pred fp32 and bf16,
weights None and "fast", at one thread and at all threads, each against SimMIM's eager loss (None) or the
published pipeline (FAST + drawKeypoints per image with OpenCV, in process at one thread, in a pool of one
process per core at all threads) + its loss, and ``torch.compile`` of the reference. Their floor is the
bytes the native kernels must move (read pred and target once, write the 2-bit sign codes, read them, write
grad_pred: 2 x pred bytes + target bytes + 0.5 B per element) at this machine's copy bandwidth measured in
the same run, at the same thread count, on buffers larger than the last-level cache; the inputs rotate over
enough sets to leave the cache too.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from .cases_fast import worker_pool
from .harness import Case, Impl, rotating, table_impls

GPU_SHAPES = [(B, S, p, dtype) for B in (64, 256) for S in (192, 224) for p in (8, 16, 32)
              for dtype in (torch.float32, torch.bfloat16)]
QUICK_GPU_SHAPES = [(16, 192, 8, torch.bfloat16), (16, 224, 16, torch.float32)]
CPU_SHAPES = [(2, 64, 8, torch.float32), (2, 96, 16, torch.bfloat16)]
HEADLINE = (256, 192, 8)  # issue 3's case: the compiled reference runs here
ROTATE = 2
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def photo_batch(B: int, S: int, seed: int) -> np.ndarray:
    """(B, S, S, 3) uint8 RGB crops of scikit-image's colour photographs."""
    import skimage.data

    rng = np.random.default_rng(seed)
    out = np.empty((B, S, S, 3), np.uint8)
    for b in range(B):
        img = getattr(skimage.data, PHOTOS[b % len(PHOTOS)])()
        y, x = rng.integers(0, img.shape[0] - S + 1), rng.integers(0, img.shape[1] - S + 1)
        out[b] = img[y : y + S, x : x + S]
    return out


def published_ring_map(img: np.ndarray) -> np.ndarray:
    """The published dataloader's per-image work: FAST on the RGB array, drawKeypoints rings, sign."""
    import cv2

    kps = cv2.FastFeatureDetector_create(10).detect(img)
    drawn = cv2.drawKeypoints(np.zeros_like(img), kps, None, color=(255, 0, 0))
    return np.sign(drawn[..., 0]).astype(np.float32)


def published_loss(ring_maps: torch.Tensor, pred, target, mask_pixels, p: int, temperature: float = 0.25):
    """The published weighting and SimMIM's loss from (B, H, W) ring maps."""
    d = F.conv2d(ring_maps.unsqueeze(1), torch.ones(1, 1, p, p, device=ring_maps.device) / p**2, stride=p).squeeze(1)
    w = torch.exp(torch.clamp(d / temperature, -20, 20))
    w = w / w.flatten(1).min(1).values.view(-1, 1, 1)
    w = w.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)
    loss = w * F.l1_loss(target, pred, reduction="none")
    return (loss * mask_pixels).sum() / (mask_pixels.sum() + 1e-5) / pred.shape[1]


def reference_loss(pred, target, mask_pixels, p: int):
    """The eager PyTorch reference of ``weighted_mim_loss(..., "fast", **KAMIM_PAPER)``."""
    from kamim_fast import fast_corners_ref, rgb_to_gray_u8_ref, weighted_mim_loss_ref
    from kamim_fast.weights import weights_from_keypoints

    with torch.no_grad():
        keypoints, _ = fast_corners_ref(rgb_to_gray_u8_ref(target, True, MEAN, STD), 10, True)
        weights = weights_from_keypoints(keypoints, p, "ring", 0.25)
    return weighted_mim_loss_ref(pred, target, mask_pixels, weights)


def cases(device: str, quick: bool, compile_all: bool = False, compile_any: bool = True) -> list[Case]:
    shapes = CPU_SHAPES if device == "cpu" else QUICK_GPU_SHAPES if quick else GPU_SHAPES
    found = [_case(*shape, device, compile_any and (compile_all or shape[:3] == HEADLINE)) for shape in shapes]
    if device == "cpu":
        found += cpu_native_cases(quick, compile_any)
    return found


def _case(B: int, S: int, p: int, dtype: torch.dtype, device: str, with_compile: bool) -> Case:
    from kamim_fast import KAMIM_PAPER, weighted_mim_loss

    options = {**KAMIM_PAPER, "weight_patch_size": p}

    def make(i):
        g = torch.Generator().manual_seed(i)
        u8 = photo_batch(B, S, i)
        target = ((torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(3, 1, 1))
                  / torch.tensor(STD).view(3, 1, 1))
        pred = (target + 0.5 * torch.randn(target.shape, generator=g)).to(dtype)
        mask = (torch.rand(B, S // 32, S // 32, generator=g) < 0.6).repeat_interleave(2, 1).repeat_interleave(2, 2)
        pixels = mask.repeat_interleave(16, 1).repeat_interleave(16, 2).unsqueeze(1).float()
        return (u8, pred.to(device).requires_grad_(), target.to(device), mask.to(device), pixels.to(device))

    inputs = rotating(make, ROTATE)

    def ours():
        _, pred, target, mask, _ = inputs()
        pred.grad = None
        weighted_mim_loss(pred, target, mask, "fast", **options).backward()

    def published():
        u8, pred, target, _, pixels = inputs()
        pred.grad = None
        maps = np.stack(worker_pool().map(published_ring_map, list(u8), chunksize=8))
        published_loss(torch.from_numpy(maps).to(device), pred, target, pixels, p).backward()

    def eager(fn=reference_loss):
        _, pred, target, _, pixels = inputs()
        pred.grad = None
        fn(pred, target, pixels, p).backward()

    impls = [Impl("kamim_fast", ours, device), Impl("published pipeline", published, device),
             Impl("eager PyTorch reference", eager, device)]
    if with_compile:
        compiled = torch.compile(reference_loss)
        impls.append(Impl("torch.compile(reference)", lambda: eager(compiled), device))
    size = 2 if dtype == torch.bfloat16 else 4
    name = f"B={B} 3x{S}x{S} p={p} {str(dtype).removeprefix('torch.')}"
    return Case("mim_loss", name, B * 3 * S * S, "kamim_fast", impls, min_bytes=B * 3 * S * S * (size + 4 + size))


# --- CPU: the native kernels (csrc/mim_loss_cpu.cpp) ------------------------------------------------------

CPU_NATIVE_SHAPE = (16, 192, 8)  # B, S, weight cell p; SimMIM's mask (32 px cells) at model patch 16
QUICK_CPU_NATIVE_SHAPE = (4, 96, 8)
CPU_ROTATE = 4  # 4 input sets of 16 x 3 x 192 x 192 fp32 pred + target: 57 MB, more than a 32 MB L3


def cpu_copy_bandwidth(threads: int, nbytes: int = 256 << 20) -> float:
    """Bytes/s (read + written) of a tensor copy on the CPU at ``threads`` threads, buffers beyond the cache."""
    torch.set_num_threads(threads)
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    return 2 * nbytes / float(np.median(times))


def _native():
    from kamim_fast import _ext

    _ext.status()
    ops = torch.ops.kamim_fast_cpp
    return ops if hasattr(ops, "weighted_mim_loss") else None


def simmim_eager_loss(x_rec, x, mask, patch_size: int = 16):
    """SimMIM's models/simmim.py loss, mask upsampling included (its forward does it every step)."""
    mask = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1).contiguous()
    loss_recon = F.l1_loss(x, x_rec, reduction="none")
    return (loss_recon * mask).sum() / (mask.sum() + 1e-5) / x.shape[1]


def plain_reference_loss(pred, target, mask_pixels, p: int):
    """The eager PyTorch reference of ``weighted_mim_loss(pred, target, mask)`` (no weights)."""
    from kamim_fast import weighted_mim_loss_ref

    return weighted_mim_loss_ref(pred, target, mask_pixels, None)


_COMPILED: dict = {}


def _compiled(fn):
    """One torch.compile per reference function, shared by the thread counts and dtypes (Inductor, CPU)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn]


def cpu_native_cases(quick: bool, with_compile: bool = True) -> list[Case]:
    """Native CPU forward + backward at one thread and at all threads; empty when the extension lacks the ops."""
    if _native() is None:
        return []
    B, S, p = QUICK_CPU_NATIVE_SHAPE if quick else CPU_NATIVE_SHAPE
    found = []
    for threads in dict.fromkeys((1, os.cpu_count() or 1)):
        bandwidth = cpu_copy_bandwidth(threads, (32 if quick else 256) << 20)
        for dtype in (torch.float32, torch.bfloat16):
            for fast in (False, True):
                found.append(_native_case(B, S, p, dtype, fast, threads, bandwidth, with_compile and not quick))
    torch.set_num_threads(os.cpu_count() or 1)
    return found


def _native_case(B, S, p, dtype, fast, threads, bandwidth, with_compile) -> Case:
    from kamim_fast import KAMIM_PAPER, weighted_mim_loss

    def make(i):
        g = torch.Generator().manual_seed(100 + i)
        u8 = photo_batch(B, S, 100 + i)
        target = ((torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(3, 1, 1))
                  / torch.tensor(STD).view(3, 1, 1)).contiguous()
        pred = (target + 0.5 * torch.randn(target.shape, generator=g)).to(dtype).requires_grad_()
        mask = (torch.rand(B, S // 32, S // 32, generator=g) < 0.6).repeat_interleave(2, 1).repeat_interleave(2, 2)
        pixels = mask.repeat_interleave(16, 1).repeat_interleave(16, 2).unsqueeze(1).float()
        return u8, pred, target, mask, mask.float(), pixels

    inputs = rotating(make, CPU_ROTATE)

    def at_threads(fn):
        def step():
            torch.set_num_threads(threads)
            return fn()
        return step

    def ours_under(backend):
        def step():
            _, pred, target, mask, _, _ = inputs()
            pred.grad = None
            options = {**KAMIM_PAPER, "weight_patch_size": p} if fast else {}
            weighted_mim_loss(pred, target, mask, "fast" if fast else None, **options).backward()
        return step

    def eager(fn):
        _, pred, target, _, _, pixels = inputs()
        pred.grad = None
        fn(pred, target, pixels, p).backward()

    impls = [Impl(impl.name, at_threads(impl.step), "cpu")
             for impl in table_impls("fast_weighted_mim_loss" if fast else "weighted_mim_loss", "cpu", ours_under)]
    if fast:
        def published():
            u8, pred, target, _, _, pixels = inputs()
            pred.grad = None
            if threads == 1:  # the dataloader's work in this process
                maps = np.stack([published_ring_map(img) for img in u8])
            else:  # one worker process per core, as the published DataLoader
                maps = np.stack(worker_pool().map(published_ring_map, list(u8), chunksize=max(1, B // threads)))
            published_loss(torch.from_numpy(maps), pred, target, pixels, p).backward()

        impls.append(Impl("published pipeline + loss", at_threads(published), "cpu"))
        reference = reference_loss
    else:
        def simmim():
            _, pred, target, mask, _, _ = inputs()
            pred.grad = None
            simmim_eager_loss(pred, target, mask).backward()

        impls.append(Impl("SimMIM eager loss", at_threads(simmim), "cpu"))
        reference = plain_reference_loss
    impls.append(Impl("eager PyTorch reference", at_threads(lambda: eager(reference)), "cpu"))
    if with_compile:
        impls.append(Impl("torch.compile(reference)", at_threads(lambda: eager(_compiled(reference))), "cpu"))
    size = torch.finfo(dtype).bits // 8
    n = B * 3 * S * S
    min_bytes = int(n * (2 * size + 4 + 0.5))
    name = (f"CPU {threads} thread{'s' if threads > 1 else ''} B={B} 3x{S}x{S} p={p} "
            f"{str(dtype).removeprefix('torch.')} weights={'fast' if fast else 'None'}")
    return Case("mim_loss", name, n, "kamim_fast cpp", impls, min_bytes=min_bytes, bandwidth=bandwidth,
                notes={"threads": threads, "bytes_per_element": min_bytes / n})
