"""An independent implementation of the published KAMIM pipeline, the oracle for weights and loss.

Written from REFERENCE.md section 3 the way the published code does it, per image with OpenCV: FAST at
its defaults on the uint8 RGB array (which OpenCV converts with COLOR_BGR2GRAY), drawKeypoints rings,
density by conv2d pooling, exp/clip/min, then SimMIM's masked L1 with the weight in the numerator.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def published_keypoints(arr: np.ndarray, detector: str = "fast", threshold: int = 10) -> list:
    """The published dataset's ``kp_detector`` branch (KAMIM_Dataset.__getitem__), on the colour array."""
    if detector == "fast":
        return cv2.FastFeatureDetector_create(threshold).detect(arr, None)
    if detector == "sift":
        return cv2.SIFT_create().detect(arr, None)
    if detector == "orb":
        return cv2.ORB_create().detect(arr, None)
    raise ValueError(detector)


def published_weights(images_hwc: np.ndarray, patch: int, temperature: float, threshold: int = 10,
                      channel_order: str = "bgr", density: str = "ring", detector: str = "fast") -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB arrays -> (B, H/p, W/p) float32 weights."""
    maps = []
    for img in images_hwc:
        # The published code hands the RGB array to OpenCV as is ("bgr"); "rgb" flips it first.
        arr = img if channel_order == "bgr" else np.ascontiguousarray(img[..., ::-1])
        kps = published_keypoints(arr, detector, threshold)
        if density == "ring":
            drawn = cv2.drawKeypoints(np.zeros_like(img), kps, None, color=(255, 0, 0))
            maps.append(np.sign(drawn[..., 0]).astype(np.float32))
        else:
            m = np.zeros(img.shape[:2], np.float32)
            for k in kps:
                m[int(k.pt[1]), int(k.pt[0])] = 1
            maps.append(m)
    kernel = torch.ones(1, 1, patch, patch) / patch**2
    d = F.conv2d(torch.from_numpy(np.stack(maps)).unsqueeze(1), kernel, stride=patch).squeeze(1)
    w = torch.exp(torch.clamp(d / temperature, -20, 20))
    return w / w.flatten(1).min(1).values.view(-1, 1, 1)


def simmim_loss(x: torch.Tensor, x_rec: torch.Tensor, mask: torch.Tensor, patch_size: int,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """SimMIM's loss (models/simmim.py), KAMIM's weight multiplied into the numerator."""
    in_chans = x.shape[1]
    mask = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1).contiguous()
    loss_recon = F.l1_loss(x, x_rec, reduction="none")
    if weights is not None:
        p = x.shape[-1] // weights.shape[-1]
        loss_recon = weights.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1) * loss_recon
    return (loss_recon * mask).sum() / (mask.sum() + 1e-5) / in_chans


def normalise(u8_nchw: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision's ToTensor + Normalize."""
    return (u8_nchw.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
