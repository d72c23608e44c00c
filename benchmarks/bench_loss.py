"""Weighted masked L1 forward+backward: kamim_fast vs the eager PyTorch reference vs torch.compile of it.

    python -m benchmarks.bench_loss [--out benchmarks/results] [--quick]

Issue 3's case: B=256, 3x192x192, pred bf16, target fp32, SimMIM mask (patch 16), weights per 8 px
cell. Two measurements: ``weights="fast"`` end to end (KAMIM_PAPER), and the loss with given weights
alone (the Triton L1 kernels). The floor is the bytes: read pred and target once, write grad_pred once
(24 B/pixel here), over the copy bandwidth measured on the same device in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from benchmarks.bench_fast import _device_name, _git_commit


def copy_bandwidth() -> float:
    """Bytes/s of a 2 GB device-to-device copy (read + write counted)."""
    import triton.testing

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=20, rep=200, return_mode="median")
    return 2 * src.numel() / (ms * 1e-3)


def run(quick: bool) -> dict:
    import triton.testing

    from kamim_fast import KAMIM_PAPER, weighted_mim_loss
    from kamim_fast.loss import expand_cells, weighted_mim_loss_ref

    B, C, H, W = (16 if quick else 256), 3, 192, 192
    g = torch.Generator(device="cuda").manual_seed(0)
    target = torch.randn(B, C, H, W, device="cuda", generator=g)
    pred = (target + torch.randn(B, C, H, W, device="cuda", generator=g)).bfloat16().requires_grad_()
    mask = (torch.rand(B, H // 32, W // 32, device="cuda", generator=g) < 0.6).repeat_interleave(2, 1).repeat_interleave(2, 2)
    weights = 1 + torch.rand(B, H // 8, W // 8, device="cuda", generator=g)
    bandwidth = copy_bandwidth()
    floor_ms = B * H * W * C * (2 + 4 + 2) / bandwidth * 1e3

    def step(fn):
        def go():
            pred.grad = None
            fn().backward()
        return go

    def time(fn, backend):
        os.environ["KAMIM_FAST_BACKEND"] = backend
        return float(triton.testing.do_bench(step(fn), warmup=25, rep=200, return_mode="median"))

    def ref_given(p):
        return weighted_mim_loss_ref(p, target, expand_cells(mask.float(), 16), weights)

    compiled_ref = torch.compile(ref_given)
    rows = [
        {"case": "loss, given weights", "kamim_fast_ms": time(lambda: weighted_mim_loss(pred, target, mask, weights), "triton"),
         "eager_ref_ms": time(lambda: ref_given(pred), "torch"), "compiled_ref_ms": time(lambda: compiled_ref(pred), "torch")},
        {"case": 'loss, weights="fast" (KAMIM_PAPER)',
         "kamim_fast_ms": time(lambda: weighted_mim_loss(pred, target, mask, "fast", **KAMIM_PAPER), "triton"),
         "eager_ref_ms": time(lambda: weighted_mim_loss(pred, target, mask, "fast", **KAMIM_PAPER), "torch"),
         "compiled_ref_ms": None},
    ]
    for r in rows:
        r["floor_ms"] = floor_ms
        r["fraction_of_floor"] = floor_ms / r["kamim_fast_ms"]
    return {"device": _device_name(), "commit": _git_commit(), "torch": torch.__version__, "shape": [B, C, H, W],
            "copy_bandwidth_GBps": bandwidth / 1e9, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_loss times GPU kernels: run it on a machine with CUDA")
    result = run(args.quick)
    lines = [f"weighted masked L1 fwd+bwd, {result['shape']}, pred bf16; {result['device']}, commit {result['commit']}; "
             f"copy {result['copy_bandwidth_GBps']:.0f} GB/s", "",
             "| case | kamim_fast (ms) | eager ref (ms) | compiled ref (ms) | floor (ms) | floor / kamim_fast |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        comp = f"{r['compiled_ref_ms']:.3f}" if r["compiled_ref_ms"] is not None else "-"
        lines.append(f"| {r['case']} | {r['kamim_fast_ms']:.3f} | {r['eager_ref_ms']:.3f} | {comp} | {r['floor_ms']:.3f} | {r['fraction_of_floor']:.2f} |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"loss-{result['device'].replace(' ', '_')}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
