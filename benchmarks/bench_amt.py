"""AMT and MAE token selection + kept-patch gather, forward+backward: the extension vs the published sequence.

    python -m benchmarks.bench_amt [--out benchmarks/results] [--quick] [--device cuda]

Issue 4's case: B=256, N=196, D=768, bf16 tokens. Two selections: MAE's random_masking (0.75) and AMT's
masking (mask 0.45, throw 0.4). The published sequences are timed on the same device: MAE's argsort,
argsort, gather; AMT's torch.multinomial, argsort, mask gather and the boolean-index removal of thrown
and masked tokens. Also gather_rows and scatter_rows alone, against the device's copy bandwidth (bytes
read + written). ``--device cpu`` is a smoke run of the same code (no figures worth reporting).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.bench_fast import _device_name, _git_commit


def bench(fn, device: str) -> float:
    """Median milliseconds."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def copy_bandwidth(device: str) -> float:
    src = torch.empty(1 << (30 if device == "cuda" else 26), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / (bench(lambda: dst.copy_(src), device) * 1e-3)


def run(quick: bool, device: str) -> dict:
    from kamim_fast import amt_masking, gather_patches, random_masking

    B, N, D = (16 if quick else 256), 196, 768
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, N, D, device=device, generator=g).bfloat16().requires_grad_()
    w = torch.rand(B, N, device=device, generator=g) + 0.01
    up = torch.randn(B, N, D, device=device, generator=g).bfloat16()

    def mae_published():
        noise = torch.rand(B, N, device=device)
        K = int(N * 0.25)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        kept = torch.gather(x, 1, ids_shuffle[:, :K].unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones(B, N, device=device)
        mask[:, :K] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return kept, mask

    def amt_published():
        nm, nt = int(N * 0.45), int(N * 0.4)
        ids_shuffle = torch.multinomial(w, N, replacement=False)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        mask = torch.zeros(B, N, device=device)
        mask[:, :nm] = 1
        mask[:, nm:nm + nt] = -1
        mask = torch.gather(mask, 1, ids_restore)
        kept = x[mask == 0].reshape(B, N - nm - nt, D)  # boolean-index removal (a host synchronisation)
        return kept, mask

    def mae_ours():
        kept, mask, _ = random_masking(x, 0.75)
        return kept, mask

    def amt_ours():
        m = amt_masking(w)
        return gather_patches(x, m.ids_keep), m.mask

    def step(fn):
        def go():
            x.grad = None
            kept, _ = fn()
            kept.backward(up[:, : kept.shape[1]])
        return go

    rows = []
    for case, ours, theirs in (("mae-0.75", mae_ours, mae_published), ("amt-0.45-0.4", amt_ours, amt_published)):
        os.environ["KAMIM_FAST_BACKEND"] = "auto"
        t_ours = bench(step(ours), device)
        t_theirs = bench(step(theirs), device)
        rows.append(dict(case=case, ours_ms=t_ours, published_ms=t_theirs, speedup=t_theirs / t_ours))

    bandwidth = copy_bandwidth(device)
    ids = torch.stack([torch.randperm(N, device=device)[: N // 4] for _ in range(B)])
    xd = x.detach()
    grad = torch.randn(B, N // 4, D, device=device).bfloat16()
    moved = 2 * B * (N // 4) * D * 2  # bytes read + written by the gather
    t_gather = bench(lambda: torch.ops.kamim_fast.gather_rows(xd, ids), device)
    t_scatter = bench(lambda: torch.ops.kamim_fast.scatter_rows(grad, ids, N), device)
    scatter_bytes = B * (N // 4) * D * 2 + B * N * D * 2  # read the rows, write every output row once
    return dict(
        device=_device_name() if device == "cuda" else "cpu", commit=_git_commit(), B=B, N=N, D=D, dtype="bfloat16",
        steps=rows, copy_bandwidth_GBps=bandwidth / 1e9,
        gather_ms=t_gather, gather_share_of_copy=moved / (t_gather * 1e-3) / bandwidth,
        scatter_ms=t_scatter, scatter_share_of_copy=scatter_bytes / (t_scatter * 1e-3) / bandwidth,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    result = run(args.quick, args.device)
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"bench_amt_{args.device}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
