"""Checks docs/recipes/*.patch against checkouts of the published code: each applies with `git apply` as it is
(CRLF line endings included), each patched KAMIM script trains to the same losses as the published one, and
the AMT changes compute what the published models compute.

    python scripts/check_recipes.py [--kamim PATH/TO/KAMIM] [--simmim PATH/TO/SimMIM] [--amt PATH/TO/AMT]
                                    [--mae PATH/TO/mae]

PATH/TO/KAMIM is a checkout of github.com/madhava20217/KAMIM (the commit docs/REPRODUCE.md names), PATH/TO/SimMIM
one of github.com/microsoft/SimMIM, PATH/TO/AMT one of github.com/guijiejie/AMT, PATH/TO/mae one of
github.com/facebookresearch/mae (a bare clone will do: files are read with `git show HEAD:<path>`). Nothing of
them is copied into this repository: the checks run in a temporary folder. Each KAMIM run is `For GPUs/vit.py`
or `swin.py` end to end on the CPU (the script's `cuda` device mapped to the CPU, a one-layer model, two epochs
of two steps on eight of scikit-image's photographs, wandb and torchinfo stubbed, data-loader workers off),
published and patched from the same seeds; the losses the script logs must agree to 1e-5 relative. It needs
the `demo` extra and torchvision. A few minutes. The AMT checks: kamim_fast's MAE (what the mae-AMT patch
imports) against the real `mae-AMT/models_mae.py` with the same parameters and ids, and the patched
`SimMIM-AMT/models/simmim.py` through `SimMIM.from_model` against the published model (its loss line corrected,
see docs/REPRODUCE.md), losses and gradients to 1e-5 relative.
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
MAE_AMT_PATCH, SIMMIM_AMT_PATCH, MAE_PATCH = ("mae-amt-model.patch", "simmim-amt-model.patch", "mae-amt-for-mae.patch")
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


# mae-AMT: kamim_fast's model against the real models_mae.py, the same parameters and ids (fp32). Runs in a folder
# holding models_mae.py and util/pos_embed.py.
MAE_AMT_HARNESS = r'''
import sys
from functools import partial
import numpy as np
if not hasattr(np, "float"):
    np.float = float  # util/pos_embed.py uses np.float, gone from NumPy 1.24
import torch
sys.path.insert(0, ".")
import models_mae
from kamim_fast import amt_masking
from kamim_fast.integrations.mae import MaskedAutoencoderViT
worst = 0.0
for img, p, npl in ((64, 16, False), (64, 8, True), (224, 16, True)):
    cfg = dict(img_size=img, patch_size=p, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=24, decoder_depth=2,
               decoder_num_heads=2, mlp_ratio=2.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), norm_pix_loss=npl)
    torch.manual_seed(0)
    real = models_mae.MaskedAutoencoderViT(**cfg)
    ours = MaskedAutoencoderViT(**cfg)
    ours.load_state_dict(real.state_dict())
    B, N = 3, (img // p) ** 2
    x, pix, q = torch.randn(B, 3, img, img), torch.rand(B, 1, img, img), torch.empty(B, N).exponential_()
    w = pix[:, 0].reshape(B, img // p, p, img // p, p).transpose(2, 3).reshape(B, N, p * p).sum(-1)
    order = amt_masking(w, noise=q).ids_shuffle
    multinomial, torch.multinomial = torch.multinomial, lambda *a, **k: order.clone()
    runs = []
    try:
        runs.append((real(x, pix, mask_ratio=0.45, throw_ratio=0.4, epoch=41), ours(x, pix, noise=q)))
    finally:
        torch.multinomial = multinomial
    torch.manual_seed(1)
    r = real(x, pix, epoch=0)
    torch.manual_seed(1)
    runs.append((r, ours(x)))
    for (rl, rp, rm), (ol, op, om) in runs:
        real.zero_grad(), ours.zero_grad()
        rl.backward(), ol.backward()
        assert torch.equal(rm, om), "masks differ"
        rel = lambda a, b: float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)
        errs = [rel(ol.detach(), rl.detach()), rel(op.detach(), rp.detach())]
        errs += [rel(po.grad, pr.grad) for po, pr in zip(ours.parameters(), real.parameters()) if pr.grad is not None]
        worst = max(worst, *errs)
print(worst)
'''

# SimMIM-AMT: the patched encoder through SimMIM.from_model against the published model, whose loss line is
# corrected (it compares the whole image with the survivors' reconstruction). Runs in a folder holding
# models/simmim.py (published), models/simmim_patched.py and models/vision_transformer.py.
SIMMIM_AMT_HARNESS = r'''
import sys, types
from functools import partial
import torch
sys.modules["requests"] = types.SimpleNamespace(patch=None)  # models/simmim.py imports it and never uses it
sys.path.insert(0, ".")
import models.vision_transformer  # noqa: F401
src = open("models/simmim.py").read()
assert "F.l1_loss(x, x_rec" in src
corrected = types.ModuleType("models.simmim_corrected")
corrected.__package__ = "models"
exec(compile(src.replace("F.l1_loss(x, x_rec", "F.l1_loss(target, x_rec"), "models/simmim.py", "exec"), corrected.__dict__)
import models.simmim_patched as patched
from kamim_fast.integrations.simmim import SimMIM as KamimSimMIM, amt_mask
kw = dict(img_size=224, patch_size=16, in_chans=3, num_classes=0, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
          qkv_bias=True, drop_rate=0.0, drop_path_rate=0.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
          init_values=None, use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False,
          use_mean_pooling=False)
torch.manual_seed(0)
published = corrected.SimMIM(encoder=corrected.VisionTransformerForSimMIM(**kw), encoder_stride=16)
mine = patched.SimMIM(encoder=patched.VisionTransformerForSimMIM(**kw), encoder_stride=16)
mine.load_state_dict(published.state_dict())
ours = KamimSimMIM.from_model(mine, weights=None)
worst = 0.0
for seed in range(3):
    x = torch.randn(2, 3, 224, 224)
    m = amt_mask(torch.rand(2, 14, 14), generator=torch.Generator().manual_seed(seed))
    published.zero_grad(), mine.zero_grad()
    want = published(x, m.mask.reshape(2, 14, 14).long(), epoch=41)
    got = ours(x, m)
    want.backward(), got.backward()
    rel = lambda a, b: float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)
    errs = [rel(got.detach(), want.detach())]
    errs += [rel(p.grad, q.grad) for p, q in zip(mine.parameters(), published.parameters()) if q.grad is not None]
    worst = max(worst, *errs)
print(worst)
'''


def _harness(folder: Path, code: str, name: str) -> float:
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
    return float(run.stdout.strip().splitlines()[-1])


def check_amt(checkout: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mae = _copy(checkout, Path(tmp) / "mae", "mae-AMT/main_pretrain.py", "mae-AMT/engine_pretrain.py",
                    "mae-AMT/models_mae.py", "mae-AMT/util/pos_embed.py")
        _apply(MAE_AMT_PATCH, mae)
        print(f"{MAE_AMT_PATCH}: applies with git apply")
        worst = _harness(mae / "mae-AMT", MAE_AMT_HARNESS, "mae-AMT's model check")
        print(f"kamim_fast's MAE against mae-AMT's models_mae.py (AMT and MAE branches): largest relative "
              f"difference {worst:.2g}")
        if worst > 1e-5:
            raise SystemExit("kamim_fast's MAE differs from mae-AMT's models_mae.py")
        simmim = _copy(checkout, Path(tmp) / "simmim", "SimMIM-AMT/models/simmim.py", "SimMIM-AMT/main_simmim.py",
                       "SimMIM-AMT/models/vision_transformer.py")
        models = simmim / "SimMIM-AMT" / "models"
        published = (models / "simmim.py").read_bytes()
        _apply(SIMMIM_AMT_PATCH, simmim)
        print(f"{SIMMIM_AMT_PATCH}: applies with git apply")
        (models / "simmim_patched.py").write_bytes((models / "simmim.py").read_bytes())
        (models / "simmim.py").write_bytes(published)
        (models / "__init__.py").write_text("")  # the published one imports every model
        worst = _harness(simmim / "SimMIM-AMT", SIMMIM_AMT_HARNESS, "SimMIM-AMT's model check")
        print(f"the patched SimMIM-AMT model against the published one (loss line corrected): largest relative "
              f"difference {worst:.2g}")
        if worst > 1e-5:
            raise SystemExit("the patched SimMIM-AMT model differs from the published one")


def check_mae(checkout: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _apply(MAE_PATCH, _copy(checkout, Path(tmp), "main_pretrain.py", "engine_pretrain.py"))
        print(f"{MAE_PATCH}: applies with git apply")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kamim", type=Path, help="a checkout of the published KAMIM repository")
    parser.add_argument("--simmim", type=Path, help="a checkout of Microsoft's SimMIM repository")
    parser.add_argument("--amt", type=Path, help="a checkout of the published AMT repository (mae-AMT, SimMIM-AMT)")
    parser.add_argument("--mae", type=Path, help="a checkout of facebookresearch/mae")
    args = parser.parse_args()
    if not any((args.kamim, args.simmim, args.amt, args.mae)):
        parser.error("name at least one checkout: --kamim, --simmim, --amt or --mae")
    if args.kamim:
        check_kamim(args.kamim)
    if args.simmim:
        check_simmim(args.simmim)
    if args.amt:
        check_amt(args.amt)
    if args.mae:
        check_mae(args.mae)
    print("every recipe checked applies and reproduces the published code")


if __name__ == "__main__":
    main()
