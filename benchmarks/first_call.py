"""The time a user waits before the first result: ``import kamim_fast`` and the first call in a fresh process, and
KAMIM weights in DataLoader workers that start afresh each epoch or persist.

Every measurement runs in a fresh child process (``python -c``), several times, side by side with torch's own
custom-op path: the same process with the ops' kernels put back behind ``torch._disable_dynamo``, as
``torch.library.custom_op`` registers them (which imports ``torch._dynamo`` at the first call, about 1 s).

    python -m benchmarks.first_call [--runs 7] [--epochs 4] [--images 64] [--out benchmarks/results/first-call]

Cases:

- ``first call``: ``import torch, kamim_fast``, then ``patch_weights`` of one (1, 3, 224, 224) uint8 image, then
  ``weighted_mim_loss(..., "fast")`` forward and backward on (2, 3, 224, 224); each call's time in ms.
- ``DataLoader``: ``KamimWeights`` of 64 (3, 224, 224) uint8 images in the workers (2, batch 8, fork), over
  ``epochs`` epochs; ms per image in the epochs after the first, with ``persistent_workers`` False and True.
  The parent process has not called an op (as a training script that computes weights only in its workers).

Writes ``<out>-<machine>-<date>.json`` and ``.md``; prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Puts torch's wrapper back in front of every kernel (what kamim_fast._backend skips until dynamo is imported).
TORCH_PATH = """
from torch._library.custom_ops import OPDEFS
for _name, _op in OPDEFS.items():
    if _name.startswith("kamim_fast::"):
        for _device, _fn in list(_op._backend_fns.items()):
            _op._backend_fns[_device] = getattr(_fn, "__wrapped__", _fn)
"""

FIRST_CALL = """
import sys, time
t0 = time.perf_counter()
import torch, kamim_fast
t1 = time.perf_counter()
{path}
x = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
t2 = time.perf_counter()
kamim_fast.patch_weights(x)
t3 = time.perf_counter()
kamim_fast.patch_weights(x)
t4 = time.perf_counter()
imgs = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
target = (imgs.float() / 255 - 0.45) / 0.225
pred = torch.randn(2, 3, 224, 224, requires_grad=True)
mask = (torch.rand(2, 7, 7) < 0.6).float()
t5 = time.perf_counter()
kamim_fast.weighted_mim_loss(pred, target, mask, weights="fast").backward()
t6 = time.perf_counter()
print({{"import_ms": 1e3 * (t1 - t0), "first_call_ms": 1e3 * (t3 - t2), "second_call_ms": 1e3 * (t4 - t3),
        "first_loss_ms": 1e3 * (t6 - t5), "dynamo_imported": "torch._dynamo" in sys.modules}})
"""

DATALOADER = """
import sys, time
import torch, kamim_fast
{path}
from kamim_fast import KamimWeights

class Images(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)
        self.weights = KamimWeights()
    def __len__(self):
        return len(self.images)
    def __getitem__(self, i):
        return self.images[i], self.weights(self.images[i])

loader = torch.utils.data.DataLoader(Images({images}), batch_size=8, num_workers=2,
                                     multiprocessing_context="fork", persistent_workers={persistent})
per_image = []
for epoch in range({epochs}):
    t0 = time.perf_counter()
    for batch, weights in loader:
        pass
    per_image.append(1e3 * (time.perf_counter() - t0) / {images})
print({{"epoch_ms_per_image": per_image}})
"""


def _child(code: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's dict


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.first_call", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="fresh processes per case (default 7)")
    p.add_argument("--epochs", type=int, default=4, help="DataLoader epochs per process (default 4)")
    p.add_argument("--images", type=int, default=64, help="images per epoch (default 64)")
    p.add_argument("--dataloader-runs", type=int, default=3, help="processes per DataLoader case (default 3)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/first-call"), help="results prefix")
    args = p.parse_args(argv)

    paths = {"kamim_fast": "", "torch custom-op path": TORCH_PATH}
    load = [os.getloadavg()[0]]
    first: dict[str, dict] = {}
    for i in range(args.runs):  # the two paths alternate, so that the machine's load falls on both alike
        for label, path in paths.items():
            r = _child(FIRST_CALL.format(path=path))
            for key, value in r.items():
                first.setdefault(label, {}).setdefault(key, []).append(value)
        print(f"first call: run {i + 1}/{args.runs}", file=sys.stderr)
    loader: dict[str, list[float]] = {}
    for i in range(args.dataloader_runs):
        for label, path in paths.items():
            for persistent in (False, True):
                r = _child(DATALOADER.format(path=path, images=args.images, epochs=args.epochs, persistent=persistent))
                key = f"{label}, persistent_workers={persistent}"
                loader.setdefault(key, []).extend(r["epoch_ms_per_image"][1:])  # the epochs after the first
        print(f"DataLoader: run {i + 1}/{args.dataloader_runs}", file=sys.stderr)

    import torch

    load.append(os.getloadavg()[0])
    machine = f"cpu-{platform.machine()}-{os.cpu_count()}cores"
    result = {
        "machine": machine, "date": datetime.date.today().isoformat(), "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=ROOT).stdout.strip(),
        "load_average": load,  # at the start and the end: a shared machine's figures scale with it
        "runs": args.runs, "dataloader_runs": args.dataloader_runs, "epochs": args.epochs, "images": args.images,
        "first_call": {label: {k: (_stats(v) if k != "dynamo_imported" else all(v)) for k, v in r.items()}
                       for label, r in first.items()},
        "dataloader_ms_per_image": {k: _stats(v) for k, v in loader.items()},
    }
    lines = [f"# The first call and DataLoader workers ({machine}, {result['date']}, torch {result['torch']}, "
             f"commit {result['commit']})", "",
             f"Fresh processes, {args.runs} per path (median, min); `python -m benchmarks.first_call`; load average "
             f"{load[0]:.1f} at the start, {load[1]:.1f} at the end.", "",
             "| path | import torch + kamim_fast ms | first `patch_weights` ms | second ms | first loss fwd+bwd ms "
             "| imports torch._dynamo |", "|---|---:|---:|---:|---:|---|"]
    for label, r in result["first_call"].items():
        cells = [f"{r[k]['median']:.1f} ({r[k]['min']:.1f})"
                 for k in ("import_ms", "first_call_ms", "second_call_ms", "first_loss_ms")]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'yes' if r['dynamo_imported'] else 'no'} |")
    ours, theirs = (result["first_call"][k]["first_call_ms"]["median"] for k in paths)
    lines += ["", f"First call: {theirs / ours:.0f}x faster than torch's custom-op path (medians).", "",
              f"KamimWeights in 2 fork workers, batch 8, {args.images} images, epochs 2-{args.epochs} of "
              f"{args.dataloader_runs} processes: ms per image (median, min).", "",
              "| path, workers | ms / image |", "|---|---:|"]
    for key, s in result["dataloader_ms_per_image"].items():
        lines.append(f"| {key} | {s['median']:.2f} ({s['min']:.2f}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(f"{args.out}-{machine}-{result['date']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(text)
    return result


if __name__ == "__main__":
    main()
