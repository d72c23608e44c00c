"""Command line: ``kamim-fast demo`` (also ``python -m kamim_fast demo``).

``demo`` runs FAST on an image bundled with scikit-image (no download) on the GPU when there is one,
checks it against OpenCV when OpenCV is installed, and writes a PNG of the keypoints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

DEFAULT_OUT = Path("demo_out")


def _load_bundled(name: str):
    import skimage.data

    try:
        return getattr(skimage.data, name)()
    except AttributeError:
        raise SystemExit(f"--image must name an image bundled with scikit-image, e.g. astronaut; got {name!r}") from None


def demo(image: str, out_dir: Path, threshold: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from kamim_fast import fast_corners, rgb_to_gray_u8
    from kamim_fast._backend import requested_backend, use_triton

    img = np.ascontiguousarray(_load_bundled(image))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rgb = torch.from_numpy(img).to(device)
    if img.ndim == 3:
        gray = rgb_to_gray_u8(rgb.permute(2, 0, 1))
    else:
        gray = rgb
    backend = "triton" if use_triton(gray) else "torch"
    fast_corners(gray, threshold)  # warm-up: Triton compiles on the first call
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    keypoints, scores = fast_corners(gray, threshold)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    ys, xs = keypoints.nonzero(as_tuple=True)
    print(f"image      {image} {tuple(img.shape)} on {device} (KAMIM_FAST_BACKEND={requested_backend()} -> {backend})")
    print(f"keypoints  {len(xs)} at threshold {threshold} with non-max suppression, in {elapsed * 1e3:.2f} ms")
    try:
        import cv2
    except ImportError:
        print("opencv     not installed: skipped the comparison")
    else:
        gray_np = gray.cpu().numpy()
        cv_points = {(int(k.pt[1]), int(k.pt[0])) for k in cv2.FastFeatureDetector_create(threshold, True).detect(gray_np)}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kamim-fast", description="kamim_fast command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="FAST on a bundled image, checked against OpenCV, drawn to a PNG")
    p.add_argument("--image", default="astronaut", help="an image bundled with scikit-image (default: astronaut)")
    p.add_argument("--threshold", type=int, default=10)
    p.add_argument("-o", "--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.image, args.out_dir, args.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
