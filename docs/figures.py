"""The documentation's figures, drawn from files in the repository (nothing is measured or downloaded here):

- ``images/cpu-speedups.png``: kamim_fast's native CPU kernels against the code they replace, one thread, the
  fastest and the median run, from the committed results in ``benchmarks/results/`` (:func:`cpu_rows`);
- ``images/gpu-model.png``: the modelled H100 times of the fused kernels against their byte floors, from
  ``benchmarks/results/model-sm90.json`` (a model, not a measurement);
- ``images/show_astronaut.png``: ``kamim-fast show`` on scikit-image's astronaut, with the defaults.
- ``images/show_amt_astronaut.png``: ``kamim-fast show --amt`` on the astronaut (a randomly initialised ViT-Ti/16).

``python docs/figures.py`` writes them; ``make docs`` runs it first (``docs/hooks.py``). Needs the ``demo``
extra (matplotlib, scikit-image).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
IMAGES = DOCS / "images"
RESULTS = ROOT / "benchmarks" / "results"
CPU_FAST = RESULTS / "native-fast-cpu-x86_64-2cores-2026-11-29.json"
CPU_LOSS = RESULTS / "cpu-loss" / "cpu-x86_64-2cores-2026-11-29.json"
GPU_MODEL = RESULTS / "model-sm90.json"

# (label, results file, case, the implementation compared with): what the README's CPU table shows
CPU_CASES = (
    ("FAST, 64 crops 192x192", CPU_FAST, "native CPU 64x192x192 photos, 1 thread", "OpenCV, 1 process"),
    ("FAST, one 2048x2048 photo", CPU_FAST, "native CPU 1x2048x2048 photos, 1 thread", "OpenCV, 1 process"),
    ("KAMIM weights, B=64 192x192", CPU_FAST, "native CPU B=64 3x192x192 uint8 p=8, 1 thread",
     "published pipeline, 1 process"),
    ("loss forward + backward, no weights, B=16 fp32", CPU_LOSS, "CPU 1 thread B=16 3x192x192 p=8 float32 weights=None",
     "SimMIM eager loss"),
    ("loss forward + backward, \"fast\", B=16 fp32", CPU_LOSS, "CPU 1 thread B=16 3x192x192 p=8 float32 weights=fast",
     "published pipeline + loss"),
)


def cpu_rows() -> list[dict]:
    """Per case of :data:`CPU_CASES`: kamim_fast's fastest and median ms, and the speed-ups (the peer's time
    over kamim_fast's, fastest over fastest and median over median)."""
    rows = []
    for label, path, case, peer in CPU_CASES:
        (row,) = [r for r in json.loads(path.read_text())["rows"] if r["case"] == case]
        ours, theirs = row["times_ms"][row["ours"]], row["times_ms"][peer]
        rows.append({"label": label, "peer": peer, "ms_min": ours["min"], "ms_median": ours["median"],
                     "speedup_min": theirs["min"] / ours["min"], "speedup_median": theirs["median"] / ours["median"]})
    return rows


def cpu_machine() -> str:
    meta = json.loads(CPU_FAST.read_text())
    v = meta["versions"]
    return f"{meta['device']}, {meta['date']}: torch {v['torch']}, OpenCV {v['cv2']}"


def draw_cpu_speedups(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cpu_rows()
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100, constrained_layout=True)
    y = range(len(rows))
    for offset, key, name, colour in ((-0.2, "speedup_min", "fastest runs", "#1f77b4"),
                                      (0.2, "speedup_median", "median runs", "#ff7f0e")):
        values = [r[key] for r in rows]
        bars = ax.barh([i + offset for i in y], values, height=0.38, label=name, color=colour)
        ax.bar_label(bars, labels=[f"{v:.1f}x" for v in values], padding=3, fontsize=8)
    ax.set_yticks(list(y), [f"{r['label']}\nvs {r['peer']}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(1, 100)
    ax.axvline(1, color="gray", linewidth=0.8)
    ax.set_xlabel("kamim_fast's speed-up (one thread, log scale)")
    ax.set_title(f"Native CPU kernels against the code they replace\n{cpu_machine()}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def draw_gpu_model(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modelled = [m for m in json.loads(GPU_MODEL.read_text())["modelled"] if m["case"].startswith("loss")]
    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=100, constrained_layout=True)
    labels = [m["case"].removeprefix("loss fwd+bwd B=256 3x192x192 ") for m in modelled]
    y = list(range(len(modelled)))
    low = [m["modelled_ms"] for m in modelled]
    high = [m["modelled_ms_sustained"] for m in modelled]
    ax.barh(y, low, height=0.5, color="#2ca02c", label="modelled time (boost clock)")
    ax.barh(y, [h - lo for h, lo in zip(high, low)], left=low, height=0.5, color="#98df8a",
            label="to the sustained clock")
    ax.scatter([m["byte_floor_ms"] for m in modelled], y, marker="|", s=300, color="black", zorder=3,
               label="byte floor (3.0 TB/s)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms, forward + backward, B=256 3x192x192")
    ax.set_title("The loss on an H100: a model from the compiled kernels, not a measurement", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def draw_show(path: Path) -> Path:
    """``kamim-fast show`` on the astronaut (512x512), shrunk to a page's width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image
    import numpy as np
    import skimage.data
    import skimage.transform

    from kamim_fast.show import show

    path.parent.mkdir(parents=True, exist_ok=True)
    full = path.with_suffix(".full.png")
    show(skimage.data.astronaut(), full, device="cpu", title="scikit-image's astronaut, KAMIM_DEFAULTS")
    image = matplotlib.image.imread(str(full))[..., :3]
    full.unlink()
    scale = min(1.0, 1400 / image.shape[1])
    small = skimage.transform.resize(image, (round(image.shape[0] * scale), round(image.shape[1] * scale)),
                                     anti_aliasing=True)
    matplotlib.image.imsave(str(path), (np.clip(small, 0, 1) * 255).astype(np.uint8), metadata={"Software": None})
    return path


def draw_show_amt(path: Path) -> Path:
    """``kamim-fast show --amt`` on the astronaut, shrunk to a page's width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image
    import numpy as np
    import skimage.data
    import skimage.transform

    from kamim_fast.show_amt import show_amt

    path.parent.mkdir(parents=True, exist_ok=True)
    full = path.with_suffix(".full.png")
    show_amt(skimage.data.astronaut(), full, seed=3,
             title="scikit-image's astronaut, a randomly initialised ViT-Ti/16: AMT_DEFAULTS' crop (top) and "
                   "AMT_PAPER's (bottom); masked light grey, thrown black")
    image = matplotlib.image.imread(str(full))[..., :3]
    full.unlink()
    scale = min(1.0, 1400 / image.shape[1])
    small = skimage.transform.resize(image, (round(image.shape[0] * scale), round(image.shape[1] * scale)),
                                     anti_aliasing=True)
    matplotlib.image.imsave(str(path), (np.clip(small, 0, 1) * 255).astype(np.uint8), metadata={"Software": None})
    return path


def main(argv: list[str] | None = None) -> None:
    names = argv if argv else ["cpu", "gpu", "show", "show_amt"]
    draw = {"cpu": (draw_cpu_speedups, "cpu-speedups.png"), "gpu": (draw_gpu_model, "gpu-model.png"),
            "show": (draw_show, "show_astronaut.png"), "show_amt": (draw_show_amt, "show_amt_astronaut.png")}
    for name in names:
        function, file = draw[name]
        print(f"wrote {function(IMAGES / file).relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
