"""Smoke test of an installed kamim_fast, run from outside the checkout by ``scripts/install_check.sh``.

Checks that the package imported is the installed one (not the checkout), that its version is the
distribution's, the fused loss with ``weights="fast"``, ``fast_corners``, the AMT ops through the
prebuilt extension ``kamim_fast._C`` of the install (abi3; not a JIT build, not the references), that the C++
sources ship beside it (for the JIT fallback), and ``kamim-fast --help``. CPU tensors only.

    python smoke_installed.py [--expect-cuda yes|no|any] [--jit] [--checkout DIR]

``--jit`` also hides ``_C`` in a child process and JIT-builds the CPU kernels from the installed sources
(a minute or two of compiling). Exit status 0 when every check holds; the first failure raises.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"install smoke test FAILED: {what}")
    print(f"ok  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect-cuda", choices=("yes", "no", "any"), default="any",
                        help="whether the prebuilt extension must hold CUDA kernels")
    parser.add_argument("--jit", action="store_true", help="also JIT-build the CPU kernels from the installed sources")
    parser.add_argument("--checkout", type=Path, help="the source checkout, which kamim_fast must not come from")
    args = parser.parse_args()
    started = time.perf_counter()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import importlib.metadata

        import torch

        import kamim_fast
        from kamim_fast import _ext

        package = Path(kamim_fast.__file__).resolve().parent
        print(f"kamim_fast {kamim_fast.__version__} from {package}; torch {torch.__version__}")
        check(args.checkout is None or not package.is_relative_to(args.checkout.resolve()),
              f"kamim_fast is the installed package, not the checkout's ({package})")
        check("site-packages" in package.parts, "kamim_fast is in a site-packages folder")
        check(kamim_fast.__version__ == importlib.metadata.version("kamim-fast"),
              f"__version__ {kamim_fast.__version__} is the distribution's")

        g = torch.Generator().manual_seed(0)
        B, H, W = 2, 64, 64
        target = torch.randn(B, 3, H, W, generator=g)
        pred = torch.randn(B, 3, H, W, generator=g, requires_grad=True)
        mask = torch.rand(B, H // 16, W // 16, generator=g) < 0.6
        mask[:, 0, 0] = True
        loss = kamim_fast.weighted_mim_loss(pred, target, mask, "fast", **kamim_fast.KAMIM_PAPER)
        loss.backward()
        plain = kamim_fast.weighted_mim_loss(pred.detach(), target, mask, None)
        check(bool(torch.isfinite(loss)) and pred.grad is not None and bool(torch.isfinite(pred.grad).all()),
              f"weighted_mim_loss(weights='fast') = {loss.item():.4f}, with a finite gradient")
        check(loss.item() >= plain.item() - 1e-6, "KAMIM's weights (>= 1) do not lower the loss")

        gray = torch.randint(0, 256, (B, H, W), dtype=torch.uint8, generator=g)
        keypoints, scores = kamim_fast.fast_corners(gray)
        ref_keypoints, ref_scores = kamim_fast.fast_corners_ref(gray)
        check(torch.equal(keypoints, ref_keypoints) and torch.equal(scores, ref_scores),
              f"fast_corners: {int(keypoints.sum())} keypoints, equal to the reference")

        kind, where = _ext.loaded()
        check(kind == "prebuilt", f"the native kernels are the prebuilt extension (got {kind}: {where})")
        check(Path(where).resolve().parent == package and "kamim_fast._C" in sys.modules,
              f"kamim_fast._C loaded from the install ({Path(where).name})")
        check(Path(where).name == "_C.abi3.so", "kamim_fast._C is built on Python's limited API (abi3): one build for "
                                                "every CPython >= 3.10")
        check(torch.ops.kamim_fast_cpp.fast_cpu_isa() in ("sse2", "avx2", "avx512", "portable"),
              f"the native CPU kernels run their {torch.ops.kamim_fast_cpp.fast_cpu_isa()} copy")
        want_cuda = {"yes": True, "no": False}.get(args.expect_cuda, _ext.has_cuda())
        check(_ext.has_cuda() == want_cuda, f"the extension {'holds' if _ext.has_cuda() else 'lacks'} CUDA kernels "
                                            f"(expected: {args.expect_cuda})")
        N, D = 16, 8
        m = kamim_fast.amt_masking(torch.rand(B, N, generator=g) + 0.1, mask_ratio=0.5, throw_ratio=0.25,
                                   noise=torch.rand(B, N, generator=g) + 0.01)
        x = torch.randn(B, N, D, generator=g, requires_grad=True)
        kept = kamim_fast.gather_patches(x, m.ids_keep)
        kept.sum().backward()
        check(torch.equal(kept, kamim_fast.gather_patches_ref(x, m.ids_keep)) and x.grad is not None,
              f"amt_masking + gather_patches through the extension: {tuple(kept.shape)}, equal to the reference")

        sources = _ext.sources_dir()
        check(sources == package / "csrc" and (sources / "amt.cpp").is_file(),
              f"the C++ sources ship in the package for the JIT fallback ({sources})")
    ours = [w for w in caught if "kamim_fast" in str(w.message)]
    check(not ours, f"no kamim_fast warnings ({[str(w.message) for w in ours]})")

    script = Path(sys.executable).parent / "kamim-fast"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    check(out.returncode == 0 and "demo" in out.stdout, f"`kamim-fast --help` exits 0 ({script})")

    if args.jit:
        code = ("import sys; sys.modules['kamim_fast._C'] = None\n"
                "import warnings, torch, kamim_fast\nfrom kamim_fast import _ext\n"
                "with warnings.catch_warnings(record=True) as caught:\n"
                "    warnings.simplefilter('always')\n"
                "    kind, where = _ext.loaded()\n"
                "    m = kamim_fast.amt_masking(torch.tensor([[1.0, 3.0, 2.0, 0.5]]), mask_ratio=0.5, throw_ratio=0.25,"
                " noise=torch.ones(1, 4))\n"
                "print('KIND', kind, where)\nprint('IDS', m.ids_shuffle.tolist())\n"
                "print('WARNED', [str(w.message) for w in caught if 'JIT build' in str(w.message)])\n")
        env = dict(os.environ, KAMIM_FAST_JIT="cpu", KAMIM_FAST_BACKEND="triton", MAX_JOBS="2",
                   TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.cwd() / "torch_extensions")))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
        text = out.stdout + out.stderr
        jit_ok = out.returncode == 0 and "KIND jit" in out.stdout and "IDS [[1, 2, 0, 3]]" in out.stdout
        check(jit_ok, "without _C, the installed sources JIT-build and run" + ("" if jit_ok else f"\n{text[-3000:]}"))
        check(_ext.HOW_TO_PREBUILD in out.stdout, "the JIT build warns, saying how to get the prebuilt extension")
    print(f"install smoke test passed in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
