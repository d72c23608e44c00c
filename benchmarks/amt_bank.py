"""AMT's data side: refresh throughput, the bank's memory with DataLoader workers, and the crop step's cost.

    python -m benchmarks.amt_bank [--quick] [--only refresh,crop,memory] [--threads 1,2] [--out benchmarks/results]

- ``refresh``: ``AttentionBank.refresh`` over batches in memory (the maps of every image, placed by index,
  stored as float16) against a plain ``torch.no_grad()`` forward of the same timm encoder over the same
  batches, and against the published way of getting the map (the last block's full attention matrix:
  ``vit_class_attention_ref``). Images/s, ratio refresh / plain forward.
- ``crop``: the training step's AMT data work for a batch (``bank.patch_weights``: the batch's maps read from
  the bank, cropped like the images, summed per patch; box and paper modes) against the AMT step it serves
  (an MAE with AMT masking and throwing, mask 0.45, throw 0.4, forward + backward, built here from timm
  blocks and kamim_fast's ops), the AMT ops alone (``amt_masking`` + ``gather_patches`` +
  ``unshuffle_with_mask_token``, forward + backward) and the published per-image map crop the workers did
  (slice, ``F.resize`` to 224 x 224, clamp, flip, patch sums).
- ``memory``: bytes per image of an ImageNet-1k-sized bank (1,281,167 x 14 x 14, float16) and, with 4
  persistent DataLoader workers (fork and spawn) that each read every page of it, each process's resident
  memory from ``/proc/<pid>/smaps_rollup`` (RSS, PSS, USS = private pages): the bank is held once.

CPU timing: ``time.perf_counter`` around whole calls after two warm-up calls of each, the implementations of a
case interleaved round by round (so that the load of a shared machine falls on all of them alike); median and
min per implementation, ratios of medians. Writes ``<out>/amt-bank-<device>-<date>.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .harness import device_name, git_commit, summary, versions

IMAGENET_TRAIN = 1_281_167


def interleaved(steps: dict, quick: bool) -> tuple[dict, dict]:
    """({label: summary of ms per call}, {label: the samples}): two warm-up calls each, then rounds calling each step
    once, in turn, until at least 5 rounds (3 quick) and the time budget (20 s, 2 s quick) are done, at most 40."""
    for step in steps.values():
        step()
        step()
    samples = {k: [] for k in steps}
    budget = time.perf_counter() + (2.0 if quick else 20.0)
    rounds = 0
    while rounds < (3 if quick else 5) or (time.perf_counter() < budget and rounds < 40):
        for label, step in steps.items():
            t = time.perf_counter()
            step()
            samples[label].append((time.perf_counter() - t) * 1e3)
        rounds += 1
    return {k: summary(v) for k, v in samples.items()}, samples


def paired(samples: dict, num: str, den: str) -> float:
    """The median over rounds of samples[num][r] / samples[den][r]: each ratio from two calls made back to back,
    so a change of the machine's load between rounds cancels."""
    import statistics

    return statistics.median(a / b for a, b in zip(samples[num], samples[den]))


# --- refresh -----------------------------------------------------------------------------------------------


def _encoder(name: str, img: int):
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=0, img_size=img).eval()


def refresh_rows(quick: bool, threads: int) -> list[dict]:
    from kamim_fast import vit_class_attention_ref
    from kamim_fast.integrations.amt_bank import AttentionBank

    rows = []
    for name, B, batches in ([("vit_tiny_patch16_224", 8, 2)] if quick else
                             [("vit_tiny_patch16_224", 32, 2), ("vit_small_patch16_224", 16, 2)]):
        vit = _encoder(name, 224)
        g = torch.Generator().manual_seed(0)
        data = [(torch.randn(B, 3, 224, 224, generator=g), torch.arange(k * B, (k + 1) * B)) for k in range(batches)]
        n = B * batches
        bank = AttentionBank(n, 14)

        def plain():
            with torch.no_grad():
                for images, _ in data:
                    vit(images)

        def refresh():
            bank.refresh(vit, data, progress=False)

        def published():
            maps = [vit_class_attention_ref(vit, images).reshape(-1, 14, 14) for images, _ in data]
            bank.maps[:] = torch.cat(maps).half()

        timed, samples = interleaved({"plain no_grad forward": plain, "bank.refresh": refresh,
                                      "full attention matrix (published way)": published}, quick)
        rows.append({"group": "refresh", "case": f"{name} B={B} x {batches} batches, 224 px", "threads": threads,
                     "images": n, "times_ms": timed,
                     "images_per_s": {k: n / (t["median"] / 1e3) for k, t in timed.items()},
                     "throughput_vs_plain": {k: paired(samples, "plain no_grad forward", k) for k in timed}})
    return rows


# --- crop step vs the AMT step ----------------------------------------------------------------------------------


class AMTMAE(nn.Module):
    """An MAE with AMT masking and throwing: timm blocks and kamim_fast's ops, the thrown tokens dropped with fixed
    counts (the benchmark's training step; kamim_fast.integrations has the full model)."""

    def __init__(self, img=224, p=16, dim=192, depth=12, heads=3, ddim=128, ddepth=4, dheads=4):
        super().__init__()
        from timm.models.vision_transformer import Block, PatchEmbed

        self.p = p
        self.patch_embed = PatchEmbed(img, p, 3, dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.register_buffer("pos_embed", torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, 4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, ddim) * 0.02)
        self.register_buffer("decoder_pos_embed", torch.randn(1, n + 1, ddim) * 0.02)
        self.decoder_blocks = nn.Sequential(*[Block(ddim, dheads, 4.0, qkv_bias=True) for _ in range(ddepth)])
        self.decoder_norm = nn.LayerNorm(ddim)
        self.decoder_pred = nn.Linear(ddim, p * p * 3)

    def forward(self, imgs, weights, mask_ratio=0.45, throw_ratio=0.4):
        from kamim_fast import amt_masking, gather_patches, unshuffle_with_mask_token

        B = imgs.shape[0]
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        m = amt_masking(weights, mask_ratio=mask_ratio, throw_ratio=throw_ratio)
        x = gather_patches(x, m.ids_keep)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1), x], 1)
        x = self.norm(self.blocks(x))
        y = self.decoder_embed(x)
        tokens = unshuffle_with_mask_token(y[:, 1:], self.mask_token, m)  # (B, N - thrown, ddim), original order
        nm, nt = m.num_masked, m.num_thrown
        kept = torch.sort(torch.cat([m.ids_shuffle[:, :nm], m.ids_shuffle[:, nm + nt:]], 1), 1).values
        pos = self.decoder_pos_embed[:, 1:].expand(B, -1, -1)
        tokens = tokens + gather_patches(pos, kept)
        y = torch.cat([(self.decoder_pos_embed[:, :1]).expand(B, -1, -1), tokens], 1)
        pred = self.decoder_pred(self.decoder_norm(self.decoder_blocks(y)))[:, 1:]
        p, h = self.p, imgs.shape[2] // self.p
        target = imgs.reshape(B, 3, h, p, h, p).permute(0, 2, 4, 3, 5, 1).reshape(B, h * h, p * p * 3)
        target = gather_patches(target, kept)
        masked = torch.gather(m.masked, 1, kept).to(pred.dtype)
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * masked).sum() / masked.sum()


def crop_rows(quick: bool, threads: int) -> list[dict]:
    import torchvision.transforms.functional as TF
    from torchvision.transforms import RandomResizedCrop

    from kamim_fast import amt_masking, gather_patches, unshuffle_with_mask_token
    from kamim_fast.integrations.amt_bank import AttentionBank

    B = 16 if quick else 64
    size, N = 224, 196
    g = torch.Generator().manual_seed(0)
    bank = AttentionBank(IMAGENET_TRAIN if not quick else 10_000, 14)
    bank.maps.uniform_(0, 1, generator=g)
    index = torch.randint(0, len(bank), (B,), generator=g)
    torch.manual_seed(0)
    crops = []
    for _ in range(B):
        H, W = 375, 500
        i, j, h, w = RandomResizedCrop.get_params(torch.empty(1, H, W), [0.2, 1.0], [3 / 4, 4 / 3])
        crops.append([i, j, h, w, H, W, int(torch.rand(1) < 0.5)])
    crops = torch.tensor(crops)
    model = AMTMAE()
    imgs = torch.randn(B, 3, size, size, generator=g)
    weights = bank.patch_weights(index, crops, size)

    def step():
        model.zero_grad(set_to_none=True)
        model(imgs, weights).backward()

    x = torch.randn(B, N, 192, generator=g, requires_grad=True)
    token = torch.randn(128, generator=g, requires_grad=True)
    dec = nn.Linear(192, 128)

    def amt_ops():
        m = amt_masking(weights, mask_ratio=0.45, throw_ratio=0.4)
        kept = gather_patches(x, m.ids_keep)
        out = unshuffle_with_mask_token(dec(kept), token, m)
        out.sum().backward()

    def crop_box():
        bank.patch_weights(index, crops, size)

    def crop_paper():
        bank.patch_weights(index, crops, size, map_crop="paper")

    maps = bank[index]

    def published_workers():  # what the published workers did per image, summed over the batch
        out = []
        for m, (i, j, h, w, H, W, flip) in zip(maps, crops.tolist()):
            pixel = TF.resize(m[i // H:(i + h) // H + 2, j // W:(j + w) // W + 2].unsqueeze(0), [size, size]).clamp(0, 1)
            pixel = TF.hflip(pixel) if flip else pixel
            out.append(pixel.reshape(14, 16, 14, 16).sum((1, 3)).flatten())
        return torch.stack(out)

    timed, samples = interleaved({"AMT step (MAE ViT-Ti/16 enc + 4x128 dec, fwd+bwd)": step,
                         "AMT ops (amt_masking + gather_patches + unshuffle, fwd+bwd)": amt_ops,
                         "bank.patch_weights box": crop_box, "bank.patch_weights paper": crop_paper,
                                  "published per-image map crop (workers' CPU time)": published_workers}, quick)
    step = "AMT step (MAE ViT-Ti/16 enc + 4x128 dec, fwd+bwd)"
    shares = {k: paired(samples, k, step) for k in timed}
    ops = "AMT ops (amt_masking + gather_patches + unshuffle, fwd+bwd)"
    samples["ops + box"] = [a + b for a, b in zip(samples[ops], samples["bank.patch_weights box"])]
    shares["AMT ops + bank.patch_weights box"] = paired(samples, "ops + box", step)
    return [{"group": "crop", "case": f"B={B}, 224 px, 14x14 map, bank of {len(bank):,} images, mask 0.45 throw 0.4",
             "threads": threads, "times_ms": timed, "share_of_step": shares}]


# --- memory -----------------------------------------------------------------------------------------------------


def smaps(pid: int | str = "self") -> dict:
    """kB fields of /proc/<pid>/smaps_rollup, and USS = Private_Clean + Private_Dirty."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    fields["USS"] = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {k: fields[k] for k in ("Rss", "Pss", "USS", "Shared_Clean", "Shared_Dirty") if k in fields}


class TouchBank(torch.utils.data.Dataset):
    """Item k: the worker's memory before and after reading every page of the bank (and its pid)."""

    def __init__(self, bank, n):
        self.bank, self.n = bank, n

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        before = smaps()
        total = float(self.bank.maps.view(-1)[:: 2048 // self.bank.maps.element_size()].float().sum())  # a read per page
        after = smaps()
        return {"pid": os.getpid(), "before": before, "after": after, "checksum": total}


def memory_rows(quick: bool) -> list[dict]:
    from kamim_fast.integrations.amt_bank import AttentionBank

    n = 100_000 if quick else IMAGENET_TRAIN
    rows = []
    for context in ("fork", "spawn"):
        bank = AttentionBank(n, 14)
        main_before = smaps()
        loader = torch.utils.data.DataLoader(TouchBank(bank, 4), batch_size=None, num_workers=4,
                                             persistent_workers=True, multiprocessing_context=context)
        items = list(loader)
        workers = {it["pid"]: it for it in items}
        now = {pid: smaps(pid) for pid in workers}
        main = smaps()
        bank_kb = bank.maps.nbytes / 1024
        rows.append({
            "group": "memory", "case": f"{n:,} images x 14 x 14 float16, 4 persistent workers ({context})",
            "bank_MB": bank.maps.nbytes / 1e6, "bytes_per_image": bank.bytes_per_image,
            "main_kB": main, "main_before_workers_kB": main_before,
            "workers_kB": [{"pid": pid, "before_touch": it["before"], "after_touch": it["after"], "now": now[pid]}
                           for pid, it in workers.items()],
            "worker_USS_growth_kB": [it["after"]["USS"] - it["before"]["USS"] for it in workers.values()],
            "worker_RSS_growth_kB": [it["after"]["Rss"] - it["before"]["Rss"] for it in workers.values()],
            "sum_PSS_kB": main["Pss"] + sum(v["Pss"] for v in now.values()),
            "bank_kB": bank_kb,
        })
        del loader, items
    return rows


# --- output -------------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    lines = [f"{result['device']}, commit {result['commit']}, {result['date']}, torch {result['versions']['torch']}"
             + (" (quick sizes)" if result["quick"] else ""), ""]
    refresh = [r for r in result["rows"] if r["group"] == "refresh"]
    if refresh:
        lines += ["### Refresh throughput (images/s of the median call; of the fastest in brackets); refresh / plain: the "
                  "median over rounds of the two calls' time ratio", "",
                  "| encoder, batches | threads | plain no_grad forward | bank.refresh | refresh / plain | full attention matrix (published way) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in refresh:
            t, ips = r["times_ms"], r["images_per_s"]
            best = {k: r["images"] / (v["min"] / 1e3) for k, v in t.items()}
            cell = lambda k: f"{ips[k]:.1f} ({best[k]:.1f})"  # noqa: E731
            lines.append(f"| {r['case']} | {r['threads']} | {cell('plain no_grad forward')} | {cell('bank.refresh')} | "
                         f"{r['throughput_vs_plain']['bank.refresh']:.2f}x | {cell('full attention matrix (published way)')} |")
        lines.append("")
    crop = [r for r in result["rows"] if r["group"] == "crop"]
    if crop:
        lines += ["### The crop step against the AMT step (ms per batch, median (min); share: the median over rounds of "
                  "its time over the step's in the same round)", ""]
        for r in crop:
            lines += [f"{r['case']}, {r['threads']} thread(s):", "", "| work | ms | share of the AMT step |", "|---|---:|---:|"]
            for k, t in r["times_ms"].items():
                lines.append(f"| {k} | {t['median']:.2f} ({t['min']:.2f}) | {r['share_of_step'][k]:.2%} |")
            lines.append(f"| AMT ops + bank.patch_weights box | | {r['share_of_step']['AMT ops + bank.patch_weights box']:.2%} |")
            lines.append("")
    memory = [r for r in result["rows"] if r["group"] == "memory"]
    if memory:
        lines += ["### Bank memory (kB from /proc/<pid>/smaps_rollup; each worker read every page of the bank)", "",
                  "| bank | bytes/image | bank size | main RSS / PSS / USS | per worker: RSS / PSS / USS (min-max) | worker USS growth on reading the bank | sum of PSS, main + 4 workers |",
                  "|---|---:|---:|---|---|---:|---:|"]
        for r in memory:
            ws = [w["now"] for w in r["workers_kB"]]
            rng = lambda key: f"{min(w[key] for w in ws):,}-{max(w[key] for w in ws):,}"  # noqa: E731
            m = r["main_kB"]
            lines.append(f"| {r['case']} | {r['bytes_per_image']} | {r['bank_MB']:.1f} MB | {m['Rss']:,} / {m['Pss']:,} / "
                         f"{m['USS']:,} | {rng('Rss')} / {rng('Pss')} / {rng('USS')} | "
                         f"{min(r['worker_USS_growth_kB']):,}-{max(r['worker_USS_growth_kB']):,} kB (RSS +"
                         f"{min(r['worker_RSS_growth_kB']):,}-{max(r['worker_RSS_growth_kB']):,}) | {r['sum_PSS_kB']:,} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.amt_bank", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="refresh,crop,memory")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    rows = []
    for t in [int(s) for s in args.threads.split(",")]:
        torch.set_num_threads(t)
        if "refresh" in only:
            rows += refresh_rows(args.quick, t)
        if "crop" in only:
            rows += crop_rows(args.quick, t)
    if "memory" in only:
        rows += memory_rows(args.quick)
    result = {"device": device_name("cpu"), "date": datetime.date.today().isoformat(), "commit": git_commit(),
              "versions": versions(), "quick": args.quick, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"amt-bank-{result['device']}-{result['date']}")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    print("wrote", args.out / f"{stem}.json", args.out / f"{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
