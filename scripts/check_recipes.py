"""Checks docs/recipes/*.patch against checkouts of the published code: each applies with `git apply` as it is
(CRLF line endings included), and each patched KAMIM script trains to the same losses as the published one.

    python scripts/check_recipes.py --kamim PATH/TO/KAMIM [--simmim PATH/TO/SimMIM]

PATH/TO/KAMIM is a checkout of github.com/madhava20217/KAMIM (the commit docs/REPRODUCE.md names), PATH/TO/SimMIM
one of github.com/microsoft/SimMIM. Nothing of them is copied into this repository: the checks run in a
temporary folder. Each KAMIM run is `For GPUs/vit.py` or `swin.py` end to end on the CPU (the script's `cuda`
device mapped to the CPU, a one-layer model, two epochs of two steps on eight of scikit-image's photographs,
wandb and torchinfo stubbed, data-loader workers off), published and patched from the same seeds; the
losses the script logs must agree to 1e-5 relative. It needs the `demo` extra and torchvision. A few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "docs" / "recipes"
FAST_PATCH, WORKERS_PATCH, SIMMIM_PATCH = ("kamim-fast-weights-in-the-loss.patch", "kamim-weights-in-the-workers.patch",
                                          "simmim-models.patch")
# (script, --detector, --KAMIM): the published configurations, and which patches must reproduce each
RUNS = [("vit.py", "fast", True, (FAST_PATCH, WORKERS_PATCH)), ("swin.py", "fast", True, (FAST_PATCH, WORKERS_PATCH)),
        ("vit.py", "orb", True, (WORKERS_PATCH,)), ("swin.py", "sift", True, (WORKERS_PATCH,)),
        ("vit.py", None, False, (FAST_PATCH, WORKERS_PATCH))]

# Runs inside the published folder: stubs for what the CPU run cannot have, tiny settings, then the script.
HARNESS = r'''
import importlib.machinery, json, os, random, runpy, sys, types
import numpy as np
import torch

script, detector, kamim, out = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
logged = []
wandb = types.ModuleType("wandb")
wandb.util = types.SimpleNamespace(generate_id=lambda: "check")
for name in ("login", "init", "save", "finish"):
    setattr(wandb, name, lambda *a, **k: None)
wandb.log = lambda d, *a, **k: logged.append(d)
torchinfo = types.ModuleType("torchinfo")
torchinfo.summary = lambda *a, **k: None
sys.modules.update(wandb=wandb, torchinfo=torchinfo)
for name in ("pandas", "sklearn", "sklearn.model_selection"):
    stub = types.ModuleType(name)
    stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
    stub.train_test_split = None
    sys.modules.setdefault(name, stub)
sys.path.insert(0, os.getcwd())
import utils.config as cfg
cfg.hyperparams_pretrain.update(epochs=2, warmup_epochs=0)
for arch in cfg.ARCHITECTURES.values():
    arch.update(batch_size=8)
cfg.ARCHITECTURES["vit_t"].update(num_hidden_layer=1, hidden_size=48, num_attention_heads=3, intermediate_size=96)
cfg.ARCHITECTURES["swin_t"].update(embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1])
import skimage.data
import utils.dataset_loaders as dl
from PIL import Image
photos = [Image.fromarray(getattr(skimage.data, n)()) for n in ("astronaut", "coffee", "chelsea", "rocket")] * 2
dl.get_dataset = lambda *a, **k: [(p, 0) for p in photos]
Loader = torch.utils.data.DataLoader
class DataLoader(Loader):
    def __init__(self, *a, **k):
        k.update(num_workers=0, shuffle=False)
        k.pop("persistent_workers", None), k.pop("prefetch_factor", None)
        super().__init__(*a, **k)
torch.utils.data.DataLoader = DataLoader
def cpu(x):
    cuda = (isinstance(x, torch.device) and x.type == "cuda") or (isinstance(x, str) and x.startswith("cuda"))
    return "cpu" if cuda else x
tensor_to, module_to = torch.Tensor.to, torch.nn.Module.to
torch.Tensor.to = lambda self, *a, **k: tensor_to(self, *map(cpu, a), **{n: cpu(v) for n, v in k.items()})
torch.nn.Module.to = lambda self, *a, **k: module_to(self, *map(cpu, a), **{n: cpu(v) for n, v in k.items()})
random.seed(0), np.random.seed(0), torch.manual_seed(0)
sys.argv = [script, "--model", "vit_t" if script == "vit.py" else "swin_t", "--accumulation", "2"]
sys.argv += ["--detector", detector] if detector != "-" else []
sys.argv += ["--KAMIM", "--weight_ps", "8", "--temperature", "0.25"] if kamim else []
runpy.run_path(script, run_name="__main__")
json.dump([d["reconstruction_loss"] for d in logged], open(out, "w"))
'''


def _apply(patch: str, folder: Path) -> None:
    subprocess.run(["git", "apply", "--check", str(RECIPES / patch)], cwd=folder, check=True)
    subprocess.run(["git", "apply", str(RECIPES / patch)], cwd=folder, check=True)


def _copy(checkout: Path, dest: Path, *paths: str) -> Path:
    for path in paths:  # the working files as git has them (CRLF kept), not a checkout's converted copy
        blob = subprocess.run(["git", "-C", str(checkout), "show", f"HEAD:{path}"], capture_output=True, check=True)
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(blob.stdout)
    return dest


def _losses(folder: Path, script: str, detector: str | None, kamim: bool) -> list[float]:
    out = folder / "losses.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", HARNESS, script, detector or "-", "1" if kamim else "0", str(out)],
                         cwd=folder / "For GPUs", env=env, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{folder.name}: {script} --detector {detector} failed:\n{run.stderr[-3000:]}")
    return json.loads(out.read_text())


def check_kamim(checkout: Path) -> None:
    files = subprocess.run(["git", "-C", str(checkout), "ls-tree", "-r", "--name-only", "HEAD", "For GPUs"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for name in (None, FAST_PATCH, WORKERS_PATCH):
            folder = _copy(checkout, Path(tmp) / (name or "published"), *files)
            if name:
                _apply(name, folder)
                print(f"{name}: applies with git apply")
            folders[name] = folder
        for script, detector, kamim, patches in RUNS:
            want = _losses(folders[None], script, detector, kamim)
            for patch in patches:
                got = _losses(folders[patch], script, detector, kamim)
                ok = len(got) == len(want) and all(abs(g - w) <= 1e-5 * abs(w) for g, w in zip(got, want))
                print(f"{script} --detector {detector} {'--KAMIM' if kamim else ''}: published {want}, {patch} {got}")
                if not ok:
                    raise SystemExit(f"{patch}: the losses differ from the published script's")


def check_simmim(checkout: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _apply(SIMMIM_PATCH, _copy(checkout, Path(tmp), "models/simmim.py"))
        print(f"{SIMMIM_PATCH}: applies with git apply")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kamim", type=Path, required=True, help="a checkout of the published KAMIM repository")
    parser.add_argument("--simmim", type=Path, help="a checkout of Microsoft's SimMIM repository")
    args = parser.parse_args()
    check_kamim(args.kamim)
    if args.simmim:
        check_simmim(args.simmim)
    print("every recipe applies and reproduces the published losses")


if __name__ == "__main__":
    main()
