"""Command line: ``kamim-fast`` (also ``python -m kamim_fast``).

- ``demo``: FAST against OpenCV on a bundled image, the ``show`` picture, a short SimMIM + KAMIM
  pretraining of a tiny timm ViT (``kamim_fast/demo.py``), and a tiny MAE pretrained with MAE's masking and
  then AMT's, steps/s side by side (``--method amt`` alone, ``kamim`` without it); ``--quick`` or
  ``KAMIM_FAST_DEMO_QUICK=1`` shrinks it to seconds.
- ``bench [ARGS...]``: the benchmark matrix, ``python -m benchmarks ARGS...``. It needs a kamim_fast
  source checkout (the ``benchmarks/`` folder beside the package, as with ``pip install -e``); results go
  to that checkout's ``benchmarks/results/`` unless ``--out`` says otherwise. Installed from a wheel, it
  says so and exits with status 2, writing nothing.
- ``show IMAGE [-o OUT.png] [--detector fast|orb|sift] [--density ring|count]``: image, keypoints, ring
  coverage, weight map and mask side by side.
- ``show IMAGE --amt [--model NAME] [--checkpoint FILE] [--input-size 224]``: image, attention map, crop and its AMT
  masking and throwing, and the published crop's weights beside the default's (``kamim_fast/show_amt.py``).
- ``info``: which implementation of each op runs here, and the versions (:func:`kamim_fast.backend_info`).
- ``--version``: kamim_fast's version.

Errors print the subcommand's usage and name its flags (``--weight-patch-size``), exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .detectors import DETECTORS
from .weights import DENSITY_MODES, DETECTOR, KAMIM_DEFAULTS

DEFAULT_OUT = Path("demo_out")


def checkout_root() -> Path | None:
    """The kamim_fast source checkout this package runs from (editable install), or None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "benchmarks" / "__main__.py").is_file() and (root / "pyproject.toml").is_file() else None


BENCH_NEEDS = ("kamim-fast bench runs the benchmarks/ folder of a kamim_fast source checkout, and this installation "
               "({where}) has none: clone the repository, pip install -e '.[test,demo]' in it (add "
               "--no-build-isolation to build the extension against your torch) and run kamim-fast bench (or python -m "
               "benchmarks) there. Nothing was written.")


def _bench(args: list[str]) -> int:
    root = checkout_root()
    if root is None:
        print(BENCH_NEEDS.format(where=Path(__file__).resolve().parent), file=sys.stderr)
        return 2
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args = [*args, "--out", str(root / "benchmarks" / "results")]  # the checkout's, not the current folder's
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import importlib

    bench = importlib.import_module("benchmarks.__main__")
    if Path(bench.__file__).resolve().parent != root / "benchmarks":
        print(f"kamim-fast bench: the module benchmarks imports from {bench.__file__}, not from the checkout {root}; "
              f"run it from another folder", file=sys.stderr)
        return 2
    return bench.main(args)


def _cli_error(parser: argparse.ArgumentParser, message: str) -> None:
    """Exits through ``parser.error`` (its usage, status 2), with the Python argument names of ``message``
    replaced by the flags that set them (``weight_patch_size must divide 32`` -> ``--weight-patch-size must
    divide 32``)."""
    for action in parser._actions:
        if action.dest in (argparse.SUPPRESS, "help") or action.dest == "version":
            continue
        flag = max(action.option_strings, key=len) if action.option_strings else action.dest.upper()
        # names with an underscore are never English words: replace them anywhere; single words only where
        # a check's message names an argument (at the start, before " must", or as name=value)
        where = r"\b{0}\b" if "_" in action.dest else r"(?:^{0}\b|\b{0}(?= must\b|=))"
        message = re.sub(where.format(re.escape(action.dest)), flag, message)
    parser.error(message)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after "bench" belongs to the benchmark runner, --help included
        return _bench(argv[1:])
    from . import __version__

    parser = argparse.ArgumentParser(prog="kamim-fast", description="kamim_fast command line")
    parser.add_argument("--version", action="version", version=f"kamim-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="FAST vs OpenCV, the show picture, short SimMIM+KAMIM and MAE+AMT pretrainings")
    from .demo import BUNDLED_IMAGES

    p.add_argument("--image", default="astronaut", choices=BUNDLED_IMAGES,
                   help="an image bundled with scikit-image (default: astronaut)")
    p.add_argument("--threshold", type=int, default=10)
    p.add_argument("-o", "--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quick", action="store_true", help="seconds instead of minutes (also KAMIM_FAST_DEMO_QUICK=1)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: 300, quick: 12; MAE+AMT: per phase, 60, quick: 8)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: 32, quick: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=("both", "kamim", "amt"), default="both",
                   help="both (default): FAST, show, SimMIM+KAMIM, then MAE vs MAE+AMT; kamim: the first three; "
                        "amt: MAE vs MAE+AMT alone")
    b = sub.add_parser("bench", help="the benchmark matrix (python -m benchmarks); arguments pass through",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    s = sub.add_parser("show", help="image, FAST keypoints, ring coverage, weight map and mask side by side in a PNG")
    s.add_argument("image", type=Path, help="any image file scikit-image or matplotlib can read")
    s.add_argument("-o", "--out", type=Path, default=None, help="the PNG to write (default: IMAGE's name + _kamim.png)")
    s.add_argument("--threshold", type=int, default=KAMIM_DEFAULTS["threshold"],
                   help=f"FAST threshold (default {KAMIM_DEFAULTS['threshold']})")
    s.add_argument("--weight-patch-size", type=int, default=KAMIM_DEFAULTS["weight_patch_size"])
    s.add_argument("--temperature", type=float, default=KAMIM_DEFAULTS["temperature"])
    s.add_argument("--channel-order", choices=("rgb", "bgr"), default=KAMIM_DEFAULTS["channel_order"],
                   help="gray as COLOR_RGB2GRAY (rgb, default) or as the published code, KAMIM_PAPER (bgr)")
    s.add_argument("--detector", choices=DETECTORS, default=DETECTOR,
                   help="fast (default), or OpenCV's orb or sift (needs kamim-fast[opencv])")
    s.add_argument("--density", choices=DENSITY_MODES, default=KAMIM_DEFAULTS["density"])
    s.add_argument("--mask-seed", type=int, default=0)
    s.add_argument("--max-side", type=int, default=1024, help="shrink larger images to this long side")
    s.add_argument("--amt", action="store_true",
                   help="draw AMT instead: attention map, masked and thrown patches, the published crop vs the default")
    s.add_argument("--model", default="vit_tiny_patch16_224",
                   help="with --amt: the timm ViT whose attention drives AMT (randomly initialised unless --checkpoint)")
    s.add_argument("--checkpoint", type=Path, default=None, help="with --amt: a state_dict file for --model")
    s.add_argument("--input-size", type=int, default=224, help="with --amt: the encoder's input and the crop's size")
    sub.add_parser("info", help="which implementation of each op runs here, and the versions (for bug reports)")
    args = parser.parse_args(argv)

    if args.command == "info":
        from ._info import backend_info

        print(backend_info())
        return 0

    if args.command == "demo":
        from .demo import run

        for name in ("steps", "batch_size"):
            value = getattr(args, name)
            if value is not None and value < 1:
                _cli_error(p, f"{name} must be >= 1, got {value}")
        run(args.image, args.out_dir, args.threshold, quick=True if args.quick else None, steps=args.steps,
            batch_size=args.batch_size, seed=args.seed, method=args.method)
        return 0
    from .show import show

    out = args.out or args.image.with_name(args.image.stem + ("_amt.png" if args.amt else "_kamim.png"))
    if out.suffix.lower() != ".png":
        s.error(f"-o/--out must name a .png file, got {str(out)!r}")
    if args.amt:
        return _show_amt(s, args, out)
    try:
        path = show(args.image, out, threshold=args.threshold, weight_patch_size=args.weight_patch_size,
                    temperature=args.temperature, channel_order=args.channel_order, detector=args.detector,
                    density=args.density, mask_seed=args.mask_seed,
                    max_side=args.max_side)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as exc:
        _cli_error(s, str(exc))
    print(f"wrote {path}")
    return 0


def _show_amt(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> int:
    from .show_amt import show_amt

    try:
        import timm

        if args.input_size < 1:
            raise ValueError(f"--input-size must be >= 1, got {args.input_size}")
        try:
            model = timm.create_model(args.model, pretrained=False, num_classes=0, img_size=args.input_size)
        except RuntimeError as exc:  # timm: unknown model name
            raise ValueError(f"--model must name a timm ViT, got {args.model!r} ({exc})") from None
        if args.checkpoint is not None:
            if not args.checkpoint.is_file():
                raise FileNotFoundError(f"--checkpoint must be a state_dict file, got {str(args.checkpoint)!r}")
            state = torch_load(args.checkpoint)
            try:
                model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
            except RuntimeError as exc:
                raise ValueError(f"--checkpoint must hold --model {args.model}'s state_dict: {exc}") from None
        path = show_amt(args.image, out, model=model.eval(), size=args.input_size,
                        patch_size=model.patch_embed.patch_size[0], seed=args.mask_seed, max_side=args.max_side)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as exc:
        _cli_error(parser, str(exc))
    print(f"wrote {path}")
    return 0


def torch_load(path: Path) -> object:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


if __name__ == "__main__":
    sys.exit(main())
