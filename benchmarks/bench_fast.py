"""FAST timing: kamim_fast's Triton kernel vs the PyTorch reference on the same GPU vs OpenCV on the CPU.

    python -m benchmarks.bench_fast [--out benchmarks/results] [--quick]

GPU times are triton.testing.do_bench medians over several input sets in rotation (so L2 does not
flatter a 9 MB batch); OpenCV is timed per image, single process. Writes a JSON file named after the
device and the date, and prints a Markdown table. benchmarks/NOTES.md has the two floors (3 bytes
per pixel moved, ~200 integer ops per pixel computed): FAST is bound by arithmetic, not bytes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

CASES = {  # name: (B, H, W)
    "B=256 192x192": (256, 192, 192),
    "1x 4096x4096": (1, 4096, 4096),
}
ROTATE = 4  # distinct input sets cycled through while timing


def _device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def _textured_batch(B: int, H: int, W: int, seed: int, device: str) -> torch.Tensor:
    """Real texture (scikit-image's gravel and grass, tiled and shifted) so keypoint density is natural."""
    import skimage.data

    g = torch.Generator().manual_seed(seed)
    tiles = [torch.from_numpy(skimage.data.gravel()), torch.from_numpy(skimage.data.grass())]
    out = torch.empty((B, H, W), dtype=torch.uint8)
    for b in range(B):
        src = tiles[b % 2]
        reps = (-(-H // src.shape[0]) + 1, -(-W // src.shape[1]) + 1)
        big = src.repeat(*reps)
        y, x = (int(torch.randint(0, s, (1,), generator=g)) for s in src.shape)
        out[b] = big[y : y + H, x : x + W]
    return out.to(device)


def _do_bench_rotating(fn, inputs: list) -> float:
    import triton.testing

    state = {"i": 0}

    def step():
        state["i"] = (state["i"] + 1) % len(inputs)
        fn(inputs[state["i"]])

    return float(triton.testing.do_bench(step, warmup=50, rep=300, return_mode="median"))


def _time_opencv(batch: np.ndarray, repeats: int) -> float:
    import cv2

    detector = cv2.FastFeatureDetector_create(10, True)
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        for img in batch:
            detector.detect(img)
        best.append(time.perf_counter() - t)
    return float(np.median(best)) * 1e3


def run(quick: bool) -> dict:
    import os

    from kamim_fast import fast_corners, fast_corners_ref

    if not torch.cuda.is_available():
        raise SystemExit("bench_fast times the GPU kernel: run it on a machine with CUDA")
    rows = []
    for name, (B, H, W) in CASES.items():
        if quick:
            B, H, W = max(1, B // 16), min(H, 1024), min(W, 1024)
        inputs = [_textured_batch(B, H, W, seed, "cuda") for seed in range(ROTATE)]
        pixels = B * H * W
        os.environ["KAMIM_FAST_BACKEND"] = "triton"
        kernel_ms = _do_bench_rotating(lambda x: fast_corners(x, 10, True), inputs)
        ref_ms = _do_bench_rotating(lambda x: fast_corners_ref(x, 10, True), inputs[:2])
        cpu = inputs[0].cpu().numpy()
        cv_ms = _time_opencv(cpu[: min(B, 64)], 3) * (B / min(B, 64))
        rows.append({
            "case": name if not quick else f"{name} (quick: {B}x{H}x{W})",
            "pixels": pixels,
            "kamim_fast_ms": kernel_ms,
            "torch_reference_gpu_ms": ref_ms,
            "opencv_cpu_1proc_ms": cv_ms,
            "kamim_fast_gpix_per_s": pixels / kernel_ms / 1e6,
            "floor_ms_at_3TBps": pixels * 3 / 3.0e12 * 1e3,
        })
    return {
        "device": _device_name(),
        "date": datetime.date.today().isoformat(),
        "commit": _git_commit(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "opencv": __import__("cv2").__version__,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"FAST-9/16, threshold 10, NMS on; {result['device']}, torch {result['torch']}, triton {result['triton']}, "
        f"commit {result['commit']}, {result['date']}",
        "",
        "| case | kamim_fast (ms) | Gpixel/s | PyTorch ref, same GPU (ms) | OpenCV CPU, 1 process (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['kamim_fast_ms']:.3f} | {r['kamim_fast_gpix_per_s']:.1f} | "
                     f"{r['torch_reference_gpu_ms']:.2f} | {r['opencv_cpu_1proc_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = parser.parse_args(argv)
    result = run(args.quick)
    table = markdown(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"fast-{result['device'].replace(' ', '_')}-{result['date']}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
