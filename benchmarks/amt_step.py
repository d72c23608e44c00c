"""MAE+AMT training steps and the AMT ops on the CPU, side by side, at 1 and 2 threads.

    python -m benchmarks.amt_step [--quick] [--threads 1,2] [--rounds 5] [--out benchmarks/results/amt-cpu]

Three measurements per thread count, every implementation timed in the same rounds (round-robin, so a change in
the machine's load reaches all of them alike):

- **ops**: select + gather + unshuffle, forward and backward, B=64, N=196, D=768, fp32 (``cases_amt``:
  kamim_fast's ops against the published model's PyTorch sequence);
- **steps**: forward + backward of a small MAE (ViT-Ti/16 encoder: 192 wide, 12 blocks, 3 heads; decoder 128
  wide, 4 blocks; 224 px, B=32, ``norm_pix_loss``): kamim_fast's MAE+AMT (0.45 / 0.4) and MAE (0.75), and the
  published model's, ``tests/published_amt_model.py`` (checked equal to the real ``models_mae.py``: loss,
  prediction, mask and gradients, max abs difference 0), with the same parameters and batch;
- **share**: the time inside the AMT ops (``kamim_fast::*`` ops, forward and backward, the noise draw and the
  sort of ``ids_unthrown``) in one profiled kamim_fast MAE+AMT step, over that step's time.

Writes ``<out>/<device>-<date>.json`` and ``.md`` (min and median per implementation, ratios of medians and of
mins) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

from .cases_amt import kamim_fast_amt_ops, published_amt_ops
from .harness import device_name, git_commit, versions

ROOT = Path(__file__).resolve().parent.parent
MODEL = dict(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128,
             decoder_depth=4, decoder_num_heads=4, mlp_ratio=4.0, norm_pix_loss=True)
QUICK_MODEL = dict(MODEL, img_size=64, depth=2, decoder_depth=1)


def _published_model_class():
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from published_amt_model import PublishedMAE
    finally:
        sys.path.pop(0)
    return PublishedMAE


def interleaved(steps: dict, rounds: int) -> dict:
    """Times each step once per round, in turn; returns name -> list of seconds."""
    for fn in steps.values():  # warm-up: allocator, first-call dispatch caches
        fn()
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return samples


def ops_steps(quick: bool) -> dict:
    B, N, D = (8, 196, 192) if quick else (64, 196, 768)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(B, N, D, generator=g).requires_grad_() for _ in range(3)]
    ws = [torch.rand(B, N, generator=g) + 1e-3 for _ in range(3)]
    token = torch.zeros(1, 1, D, requires_grad=True)
    state = {"i": 0}

    def make(fn):
        def step():
            i = state["i"] = (state["i"] + 1) % 3
            xs[i].grad = token.grad = None
            out = fn(xs[i], ws[i], token, 0.45, 0.4)
            out.backward(torch.ones_like(out))

        return step

    return {"kamim_fast ops": make(kamim_fast_amt_ops), "published ops": make(published_amt_ops)}


def model_steps(quick: bool):
    from kamim_fast.integrations.mae import MaskedAutoencoderViT

    cfg = QUICK_MODEL if quick else MODEL
    norm = partial(torch.nn.LayerNorm, eps=1e-6)
    torch.manual_seed(0)
    ours = MaskedAutoencoderViT(**cfg, norm_layer=norm)

    def published(fused_attn: bool):
        model = _published_model_class()(**cfg, norm_layer=norm)
        model.load_state_dict(ours.state_dict())
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = fused_attn
        return model

    # The published trainers pin timm==0.5.4 (requirements.txt of guijiejie/AMT), whose Attention computes
    # softmax(q k^T) v in three ops; today's timm calls F.scaled_dot_product_attention. Today's Block with
    # fused_attn=False is the 0.5.4 Block: the same forward and gradients to the bit (checked against timm 0.5.4
    # installed beside it, B=32, 31 tokens, 192 wide).
    theirs, pinned = published(True), published(False)
    B, S = (8 if quick else 32), cfg["img_size"]
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(B, 3, S, S, generator=g) for _ in range(2)]
    maps = [torch.rand(B, 1, S, S, generator=g) for _ in range(2)]  # mae-AMT's per-pixel maps
    state = {"i": 0}

    def make(model, run):
        def step():
            i = state["i"] = (state["i"] + 1) % 2
            model.zero_grad(set_to_none=True)
            run(images[i], maps[i])[0].backward()

        return step

    steps = {
        "kamim_fast MAE+AMT": make(ours, lambda x, m: ours(x, m)),
        "published MAE+AMT": make(theirs, lambda x, m: theirs(x, m, 0.45, 0.4, amt=True)),
        "published MAE+AMT, timm 0.5.4": make(pinned, lambda x, m: pinned(x, m, 0.45, 0.4, amt=True)),
        "kamim_fast MAE": make(ours, lambda x, m: ours(x)),
        "published MAE": make(theirs, lambda x, m: theirs(x, amt=False)),
    }
    return steps


def profiled(step) -> tuple[list, float]:
    """One step under the profiler, after a warm-up one: (its events averaged by name, its wall time in s)."""
    from torch.profiler import ProfilerActivity, profile

    step()  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        step()
        total = time.perf_counter() - t
    return prof.key_averages(), total


def ops_share(events, total: float) -> dict:
    """Time inside the AMT ops over the whole kamim_fast MAE+AMT step, from one profiled step (``profiled``)."""
    ops, per_op = 0.0, {}
    for e in events:
        if e.key.startswith("kamim_fast::") or e.key in ("aten::exponential_", "aten::sort"):
            per_op[e.key] = e.cpu_time_total / 1e3
            ops += e.cpu_time_total / 1e6
    return {"step_ms": total * 1e3, "ops_ms": ops * 1e3, "share": ops / total, "per_op_ms": per_op}


# The dense layers both models run on the same tokens: the Linear layers' matmuls, attention, GELU, LayerNorm,
# forward and backward.
SHARED_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::gelu", "aten::gelu_backward", "aten::native_layer_norm",
              "aten::native_layer_norm_backward", "aten::_softmax", "aten::_softmax_backward_data")


def shared_floor(ours_events, peer_events: dict) -> dict:
    """What a step ratio can reach: the self time of SHARED_OPS (and the scaled-dot-product attention ops) in one
    profiled kamim_fast MAE+AMT step, over one profiled published step's whole time. If everything in kamim_fast's
    step but those layers took no time, its ratio to the published step would be this."""

    def self_ms(events):
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        shared = sum(e.self_cpu_time_total for e in events
                     if e.key in SHARED_OPS or "scaled_dot_product" in e.key) / 1e3
        return total, shared

    ours_total, ours_shared = self_ms(ours_events)
    out = {"kamim_fast_ms": ours_total, "kamim_fast_shared_ms": ours_shared}
    for name, events in peer_events.items():
        total, shared = self_ms(events)
        out[name] = {"ms": total, "shared_ms": shared, "floor": ours_shared / total}
    return out


def summarise(samples: dict) -> dict:
    return {name: {"min_ms": min(v) * 1e3, "median_ms": statistics.median(v) * 1e3, "n": len(v)}
            for name, v in samples.items()}


def ratio(t: dict, a: str, b: str) -> dict:
    return {"median": t[a]["median_ms"] / t[b]["median_ms"], "min": t[a]["min_ms"] / t[b]["min_ms"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.amt_step", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "amt-cpu")
    args = parser.parse_args(argv)
    rows = []
    load_before = os.getloadavg()
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        ops = summarise(interleaved(ops_steps(args.quick), max(args.rounds, 10)))
        steps = model_steps(args.quick)
        timed = summarise(interleaved(steps, args.rounds))
        ours_events, ours_s = profiled(steps["kamim_fast MAE+AMT"])
        share = ops_share(ours_events, ours_s)
        floor = shared_floor(ours_events, {name: profiled(steps[name])[0]
                                           for name in ("published MAE+AMT", "published MAE+AMT, timm 0.5.4")})
        rows.append({
            "threads": threads, "ops": ops, "steps": timed, "share": share, "floor": floor,
            "ops_speedup": ratio(ops, "published ops", "kamim_fast ops"),
            "amt_vs_mae": ratio(timed, "kamim_fast MAE+AMT", "kamim_fast MAE"),
            "published_amt_vs_mae": ratio(timed, "published MAE+AMT", "published MAE"),
            "amt_vs_published": ratio(timed, "kamim_fast MAE+AMT", "published MAE+AMT"),
            "amt_vs_pinned": ratio(timed, "kamim_fast MAE+AMT", "published MAE+AMT, timm 0.5.4"),
            "mae_vs_published": ratio(timed, "kamim_fast MAE", "published MAE"),
        })
    result = {"device": device_name("cpu"), "date": time.strftime("%Y-%m-%d"), "commit": git_commit(),
              "versions": versions(), "quick": args.quick, "model": QUICK_MODEL if args.quick else MODEL,
              "batch": 8 if args.quick else 32, "rounds": args.rounds, "rows": rows,
              "load_average": {"before": load_before, "after": os.getloadavg()}}  # 1, 5, 15 minutes
    text = markdown(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{result['device']}-{result['date']}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(text)
    print("wrote", args.out / f"{stem}.json", args.out / f"{stem}.md")
    return 0


def markdown(result: dict) -> str:
    m = result["model"]
    load = result.get("load_average")
    lines = [f"{result['device']}, commit {result['commit']}, {result['date']}, torch {result['versions']['torch']}"
             + (f", load average {load['before'][0]:.1f} before and {load['after'][0]:.1f} after" if load else "")
             + (" (quick sizes)" if result["quick"] else ""),
             "", f"Model: encoder {m['embed_dim']} wide x {m['depth']} blocks, decoder {m['decoder_embed_dim']} x "
                 f"{m['decoder_depth']}, {m['img_size']} px, patch {m['patch_size']}, batch {result['batch']}; "
                 f"forward + backward; ms: min / median.", "",
             "| threads | what | kamim_fast | peer | ratio (median) | ratio (min) |", "|---|---|---:|---:|---:|---:|"]

    def cell(t):
        return f"{t['min_ms']:.1f} / {t['median_ms']:.1f}"

    for r in result["rows"]:
        o, s = r["ops"], r["steps"]
        lines += [
            f"| {r['threads']} | AMT ops (select + gather + unshuffle, fwd + bwd) vs published sequence | "
            f"{cell(o['kamim_fast ops'])} | {cell(o['published ops'])} | {r['ops_speedup']['median']:.2f}x faster | "
            f"{r['ops_speedup']['min']:.2f}x faster |",
            f"| {r['threads']} | MAE+AMT step vs published MAE+AMT step | {cell(s['kamim_fast MAE+AMT'])} | "
            f"{cell(s['published MAE+AMT'])} | {r['amt_vs_published']['median']:.3f} | "
            f"{r['amt_vs_published']['min']:.3f} |",
            f"| {r['threads']} | MAE+AMT step vs published MAE+AMT step with its pinned timm 0.5.4 (attention in "
            f"three ops) | {cell(s['kamim_fast MAE+AMT'])} | {cell(s['published MAE+AMT, timm 0.5.4'])} | "
            f"{r['amt_vs_pinned']['median']:.3f} | {r['amt_vs_pinned']['min']:.3f} |",
            *(f"| {r['threads']} | the floor of that ratio against the {label}: kamim_fast's shared dense layers "
              f"(profiled) over the whole published step | {r['floor']['kamim_fast_shared_ms']:.0f} ms of "
              f"{r['floor']['kamim_fast_ms']:.0f} | {r['floor'][key]['ms']:.0f} ms | {r['floor'][key]['floor']:.3f} | |"
              for key, label in (("published MAE+AMT", "published step"),
                                 ("published MAE+AMT, timm 0.5.4", "published step on timm 0.5.4"))),
            f"| {r['threads']} | MAE step vs published MAE step | {cell(s['kamim_fast MAE'])} | "
            f"{cell(s['published MAE'])} | {r['mae_vs_published']['median']:.3f} | "
            f"{r['mae_vs_published']['min']:.3f} |",
            f"| {r['threads']} | MAE+AMT step vs MAE step (kamim_fast) | {cell(s['kamim_fast MAE+AMT'])} | "
            f"{cell(s['kamim_fast MAE'])} | {r['amt_vs_mae']['median']:.3f} | {r['amt_vs_mae']['min']:.3f} |",
            f"| {r['threads']} | MAE+AMT step vs MAE step (published) | {cell(s['published MAE+AMT'])} | "
            f"{cell(s['published MAE'])} | {r['published_amt_vs_mae']['median']:.3f} | "
            f"{r['published_amt_vs_mae']['min']:.3f} |",
            f"| {r['threads']} | AMT ops' share of the kamim_fast MAE+AMT step (profiled) | "
            f"{r['share']['ops_ms']:.1f} ms | step {r['share']['step_ms']:.0f} ms | {r['share']['share']:.2%} | |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
