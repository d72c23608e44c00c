"""Planted bugs, one at a time, in a temporary copy of the repository: does the suite catch each one?

    make mutants                            # all of them; writes tests/MUTANTS.md
    .venv/bin/python tests/mutants.py [--only NAME ...] [--report FILE] [--keep] [--baseline]

Each mutant is a text replacement in one file (it must match exactly once, else the row reports "stale":
update it) and the few tests that should catch it. For each, this copies the working tree (without .git;
.venv linked, not copied) into a temporary folder, applies the replacement and runs those tests there with
``PYTHONPATH=<copy>``, where the path finder reaches the copy's package before the editable finder reaches
ours; before the tests run, a child process imports the mutated module
and must find the copy's file with the mutated text (else the row reports "error"). A mutant of ``csrc/``
removes the copy's compiled ``kamim_fast/_C`` and shadows ours (the editable finder would find it) with a
``_C.py`` that raises ImportError, so the copy JIT-builds its own sources (into the copy), and checks that the
library loaded is the copy's.

A mutant is caught when its tests fail (pytest exit status 1); exit status 0 is "MISSED"; anything else
(collection error, timeout) is "error". ``--baseline`` also runs each mutant's tests on the unmutated copy,
which must pass. Not in CI: it takes minutes. Exit status 1 unless every mutant is caught.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                ".hypothesis", "demo_out", ".ruff_cache", "*.so.lock")


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: node ids, -k expressions
    why: str = ""  # which test should catch it, and how


MUTANTS: list[Mutant] = [
    # --- the 16 rows of issue 15 -----------------------------------------------------------------------------
    Mutant("fast-circle-offsets-swapped", "kamim_fast/_opencv.py",
           "(0, 3), (1, 3), (2, 2), (3, 1),", "(0, 3), (2, 2), (1, 3), (3, 1),",
           ("tests/test_fast.py::test_synthetic_images_match_opencv[cpu-triton-noise]",),
           "FAST keypoints vs OpenCV (the kernel and the reference share the circle)"),
    Mutant("gray-rounding-16383", "kamim_fast/_opencv.py",
           "GRAY_ROUND = 1 << (GRAY_SHIFT - 1)", "GRAY_ROUND = (1 << (GRAY_SHIFT - 1)) - 1",
           ("tests/test_gray.py::test_every_uint8_triple_on_a_grid",), "gray vs cv2.cvtColor"),
    Mutant("ring-stencil-wider", "kamim_fast/_opencv.py",
           '    "..#####..",\n    ".#######.",\n    "###...###",', '    "..#####..",\n    "########.",\n    "###...###",',
           ("tests/test_density.py::test_ring_stencil_is_what_opencv_draws",), "stencil vs cv2.drawKeypoints"),
    Mutant("nms-ties-survive-in-kernel", "kamim_fast/kernels/fast_tile.py",
           "return centre > neighbours.to(tl.int32), centre", "return centre >= neighbours.to(tl.int32), centre",
           ("tests/test_fast.py::test_synthetic_images_match_opencv[cpu-triton-plateaus]",),
           "plateaus: equal scores, OpenCV suppresses both"),
    Mutant("weights-divided-by-batch-min", "kamim_fast/ops/patch_weights.py",
           "return w / w.amin(dim=(-2, -1), keepdim=True)", "return w / w.amin()",
           ("tests/test_weights.py", "-k", "small_temperatures and cpu-torch-0.25"),
           "a batch whose images' minima differ (one has empty cells), vs the published pipeline"),
    Mutant("weights-clip-removed", "kamim_fast/ops/patch_weights.py",
           "w = torch.exp(torch.clamp(density / temperature, -WEIGHT_LOG_CLIP, WEIGHT_LOG_CLIP))",
           "w = torch.exp(density / temperature)",
           ("tests/test_weights.py", "-k", "small_temperatures and cpu-torch-0.03"),
           "T = 0.03 on dense images: d/T > 20 in some cells"),
    Mutant("default-eps-1e-4", "kamim_fast/mim_loss.py",
           "    eps: float = 1e-5,\n", "    eps: float = 1e-4,\n",
           ("tests/test_mim_loss.py", "-k", "eps_is_simmims_by_value and cpu-torch"),
           "a mask count of 1 against SimMIM's formula; the default pinned by value"),
    Mutant("kamim-paper-channel-order-rgb", "kamim_fast/weights.py",
           'KAMIM_PAPER: dict = {**KAMIM_DEFAULTS, "channel_order": "bgr"}',
           'KAMIM_PAPER: dict = {**KAMIM_DEFAULTS, "channel_order": "rgb"}',
           ("tests/test_mim_loss.py", "-k", "paper_preset and cpu-torch"), "the published loss (BGR2GRAY on RGB arrays)"),
    Mutant("backward-signs-of-pred", "kamim_fast/kernels/mim_loss.py",
           "tl.store(signs, _sign_codes(d0, SH, BLOCK_W), mask=sign_ok)",
           "tl.store(signs, _sign_codes(d0 + t0, SH, BLOCK_W), mask=sign_ok)",
           ("tests/test_mim_loss.py", "-k", "paper_preset and cpu-triton"), "the published gradient"),
    Mutant("amt-partition-swapped-python", "kamim_fast/ops/amt_masking.py",
           "codes[:num_mask], codes[num_mask + num_throw:] = MASKED, VISIBLE",
           "codes[num_throw:num_throw + num_mask], codes[num_mask + num_throw:] = MASKED, VISIBLE",
           ("tests/test_amt.py", "-k", "equals_published_partition and cpu-torch"), "AMT's published partition"),
    Mutant("amt-partition-swapped-cpp", "csrc/amt.h",
           "  if (r < num_mask) return kMasked;\n  return r < num_mask + num_throw ? kThrown : kVisible;",
           "  if (r < num_throw) return kThrown;\n  return r < num_mask + num_throw ? kMasked : kVisible;",
           ("tests/test_amt.py", "-k", "equals_published_partition and cpu-cpp"),
           "AMT's published partition, on the extension JIT-built from the copy"),
    Mutant("global-normalize-without-world", "kamim_fast/mim_loss.py",
           "return loss * ((local + eps) * world / (total + eps)).to(loss.dtype)",
           "return loss * ((local + eps) / (total + eps)).to(loss.dtype)",
           ("tests/test_ddp.py::test_global_normalisation_gives_the_concatenated_batch",),
           "2 gloo ranks vs one process on the concatenated batch"),
    Mutant("fused-mean-std-reversed", "kamim_fast/ops/fast_weighted_mim_loss.py",
           "channel_order=channel_order, mean=tuple(mean), std=tuple(std))",
           "channel_order=channel_order, mean=tuple(mean)[::-1], std=tuple(std)[::-1])",
           ("tests/test_mim_loss.py", "-k", "per_channel_statistics and cpu-triton-rgb"),
           "distinct per-channel statistics through the fused kernel vs the published loss"),
    Mutant("vit-attention-without-head-minmax", "kamim_fast/amt.py",
           "    return ((row - lo) / torch.where(span > 0, span, torch.ones_like(span))).mean(1)",
           "    return row.mean(1)",
           ("tests/test_amt.py::test_vit_class_attention_matches_the_full_attention_matrix",),
           "the class attention computed from the ViT's qkv weights"),
    Mutant("triton-backend-runs-reference-on-cpu", "kamim_fast/_backend.py",
           "    impl = entry.impls[backend]\n",
           '    impl = entry.impls["torch" if backend == "triton" and device_type == "cpu" else backend]\n',
           ("tests/test_kernels_ran.py",), "each kernel's launches counted under KAMIM_FAST_BACKEND=triton"),
    Mutant("fast-barrier-before-nms-removed", "kamim_fast/kernels/fast.py",
           "        if NONMAX_SUPPRESSION:\n            tl.debug_barrier()\n",
           "        if NONMAX_SUPPRESSION:\n            pass\n",
           ("tests/test_barriers.py", "-k", "installed"), "static barrier check of the TTGIR for sm_90a"),
    # --- the native CPU kernels (issue 11) --------------------------------------------------------------------
    Mutant("native-circle-offsets-swapped", "csrc/opencv_constants.h",
           "{0, 3}, {1, 3}, {2, 2}, {3, 1},", "{0, 3}, {2, 2}, {1, 3}, {3, 1},",
           ("tests/test_native_fast.py", "-x"), "the C++ constants parsed against _opencv.py; FAST vs OpenCV"),
    Mutant("native-nms-ties-survive", "csrc/fast_cpu_simd.h",
           "        k = (u8v)(c > m);\n", "        k = (u8v)(c >= m);\n",
           ("tests/test_native_fast.py", "-x"), "native FAST with suppression vs OpenCV and the reference"),
    Mutant("native-sign-codes-swapped", "csrc/mim_loss_cpu.cpp",
           "kSpread.v[gt] | (kSpread.v[lt] << 1)", "kSpread.v[lt] | (kSpread.v[gt] << 1)",
           ("tests/test_native_mim_loss.py", "-x"), "the native sign codes vs sign_codes_ref, the gradients vs the reference"),
    # --- more, for the gaps closed with issue 15 ---------------------------------------------------------
    Mutant("loss-barrier-before-final-pass-removed", "kamim_fast/kernels/mim_loss.py",
           "                tl.store(words_b + ii * (BLOCK_W // 4) + wq, bits, mask=region)\n        tl.debug_barrier()\n",
           "                tl.store(words_b + ii * (BLOCK_W // 4) + wq, bits, mask=region)\n",
           ("tests/test_barriers.py", "-k", "installed"), "static barrier check: ring bits read by the final pass"),
    Mutant("gray-ties-half-up-reference", "kamim_fast/ops/rgb_to_gray_u8.py",
           "return torch.round(v).to(torch.int32)", "return torch.floor(v + 0.5).to(torch.int32)",
           ("tests/test_gray.py", "-k", "ties_round_to_even and cpu-torch"), "exact float ties, asserted by value"),
    Mutant("gray-ties-half-up-kernel", "kamim_fast/kernels/fast_tile.py",
           "out = (v + _RINT_MAGIC).to(tl.int32, bitcast=True) - _RINT_MAGIC_BITS", "out = tl.floor(v + 0.5).to(tl.int32)",
           ("tests/test_gray.py", "-k", "ties_round_to_even and cpu-triton"), "exact float ties, asserted by value"),
    Mutant("fast-score-without-nms-off-by-one", "kamim_fast/kernels/fast.py",
           "tl.store(score_out_ptr + offs, tl.where(corner, score, 0).to(tl.uint8), mask=out)",
           "tl.store(score_out_ptr + offs, tl.where(corner, score + 1, 0).to(tl.uint8), mask=out)",
           ("tests/test_fast.py::test_synthetic_images_match_opencv[cpu-triton-dots]",),
           "scores with NMS off vs the largest threshold at which OpenCV still detects"),
    Mutant("amt-cell-weights-mean", "kamim_fast/amt.py",
           "return attn.reshape(B, h // cell, cell, w // cell, cell).sum(dim=(2, 4))",
           "return attn.reshape(B, h // cell, cell, w // cell, cell).mean(dim=(2, 4)) * cell",
           ("tests/test_amt.py::test_amt_cell_weights",), "cell sums written out cell by cell"),
    # --- the bug classes of the second hidden audit (docs/TESTING.md) -----------------------------------------
    # half precision where indices repeat
    Mutant("gather-backward-sums-in-storage-dtype-cpp", "csrc/amt.cpp",
           "      std::vector<acc_t> acc;\n", "      std::vector<scalar_t> acc;\n",
           ("tests/test_amt.py", "-k", "half_gather and cpu-cpp"),
           "repeated ids' rows in bf16/fp16 vs the float64 sum rounded once (large value first, small addends)"),
    Mutant("mask-token-gradient-sums-in-storage-dtype-cpp", "csrc/amt.cpp",
           "            for (int64_t d = 0; d < D; ++d) p[d] += static_cast<acc_t>(row[d]);\n",
           "            for (int64_t d = 0; d < D; ++d) p[d] = static_cast<scalar_t>(p[d] + static_cast<acc_t>(row[d]));\n",
           ("tests/test_amt.py", "-k", "half_mask_token and cpu-cpp"),
           "the mask token's bf16/fp16 gradient vs the float64 sum of its rows rounded once"),
    Mutant("gather-backward-reference-sums-in-storage-dtype", "kamim_fast/ops/gather_patches.py",
           "acc = torch.promote_types(src.dtype, torch.float32)", "acc = src.dtype",
           ("tests/test_amt.py", "-k", "half_gather and cpu-torch"),
           "the PyTorch reference's index_put_ accumulating in bf16/fp16, vs the float64 sum rounded once"),
    Mutant("loss-backward-scale-in-storage-dtype", "kamim_fast/kernels/mim_loss.py",
           "    coef = tl.where(m > 0.0, m, 0.0) * tl.load(scale_ptr)\n",
           "    coef = tl.where(m > 0.0, m, 0.0) * tl.load(scale_ptr).to(grad_pred_ptr.dtype.element_ty).to(tl.float32)\n",
           ("tests/test_mim_loss.py", "-k", "half_pred and cpu-triton"),
           "each bf16/fp16 gradient element vs the float64 value rounded once (the scale rounded first: twice)"),
    # arrays users really pass
    Mutant("kamim-weights-without-the-copy", "kamim_fast/_forms.py",
           '            image = np.array(image, order="C")  # order, a read-only array',
           '            pass  # order, a read-only array',
           ("tests/test_detectors.py", "-k", "arrays_users_pass and fast"),
           "flipped views (negative strides) and read-only arrays through KamimWeights vs the contiguous copy"),
    Mutant("show-passes-read-only-arrays", "kamim_fast/show.py",
           '        img = np.array(img, order="C")\n    return img', "        img = np.ascontiguousarray(img)\n    return img",
           ("tests/test_integrations.py", "-k", "arrays_users_pass"),
           "np.asarray(PIL image) is contiguous and read-only: torch.from_numpy warns once per process"),
    # warnings that must not fire
    Mutant("normalization-constant-exemption-removed", "kamim_fast/_forms.py",
           "constant = max(hi) == min(lo)  # e.g. torch.zeros: a placeholder, not an image",
           "constant = False  # e.g. torch.zeros: a placeholder, not an image",
           ("tests/test_user_path.py", "-k", "placeholders and cpu"),
           "a torch.zeros dummy batch must not warn, at every entry point that checks"),
    Mutant("fallback-warns-at-every-call", "kamim_fast/_checks.py",
           "    _WARNED.add((category, key))\n", "    pass  # the cause is not kept\n",
           ("tests/test_backend.py", "-k", "fallback_warning_stays_silent"), "warned once: silent afterwards"),
    # process groups other than the world
    Mutant("global-normalize-scales-by-the-worlds-size", "kamim_fast/mim_loss.py",
           "world = torch.distributed.get_world_size(group)", "world = torch.distributed.get_world_size()",
           ("tests/test_ddp.py", "-k", "subgroup"), "4 gloo ranks in 2 subgroups vs one process per subgroup"),
    Mutant("global-normalize-counts-over-the-world", "kamim_fast/mim_loss.py",
           'total = funcol.all_reduce(local, "sum", group)',
           'total = funcol.all_reduce(local, "sum", torch.distributed.group.WORLD)',
           ("tests/test_ddp.py", "-k", "subgroup"), "the subgroups' mask counts differ (32 and 40 patches)"),
    # writes outside the output
    Mutant("gray-tail-mask-one-past-the-end", "kamim_fast/kernels/gray.py",
           "gray.to(tl.uint8), mask=inside)", "gray.to(tl.uint8), mask=offs <= HW)",
           ("tests/test_conformance.py", "-k", "writes_stay and rgb_to_gray_u8-triton"),
           "guard bands around every allocation (the next image's program rewrites the value: no value test sees it)"),
    Mutant("loss-backward-mask-one-column-past-the-row", "kamim_fast/kernels/mim_loss.py",
           "    inside = (yy < H) & (xx < W)\n", "    inside = (yy < H) & (xx <= W)\n",
           ("tests/test_conformance.py", "-k", "writes_stay and weighted_mim_loss_backward-triton"),
           "guard bands: the last row of the last plane writes one element past the gradient"),
    Mutant("gather-backward-copies-one-element-more-cpp", "csrc/amt.cpp",
           "std::memcpy(dst, s + (b * K + k) * D, row_bytes);",
           "std::memcpy(dst, s + (b * K + k) * D, row_bytes + sizeof(scalar_t));",
           ("tests/test_conformance.py", "-k", "writes_stay and gather_patches_backward-cpp"),
           "guard bands: the last row's copy runs one element past the output"),
    # checks beside the code they guard
    Mutant("forced-triton-falls-back-to-auto", "kamim_fast/_backend.py",
           "    ok, reason = _available(backend, name, device_type)\n    if not ok:\n",
           '    ok, reason = _available(backend, name, device_type)\n    if not ok and backend == "triton":\n'
           '        return entry.impls[entry.auto.get(device_type, "torch")]\n    if not ok:\n',
           ("tests/test_backend.py", "-k", "forced_backend_either"),
           "every op x forced backend x device: itself or RuntimeError (Triton without the interpreter)"),
    Mutant("forced-triton-runs-the-extension", "kamim_fast/_backend.py",
           "    impl = entry.impls[backend]\n",
           '    impl = entry.impls["cpp" if backend == "triton" and device_type == "cpu" and "cpp" in entry.impls '
           'else backend]\n',
           ("tests/test_conformance.py", "-k", "implementation_equals and triton"),
           "the conformance suite counts the implementation the public op ran (values are equal by design)"),
    # B = 0
    Mutant("timm-encoder-reshape-ambiguous-on-empty-batch", "kamim_fast/integrations/timm.py",
           "reshape(B, tokens.shape[-1], h, w)", "reshape(B, -1, h, w)",
           ("tests/test_integrations.py", "-k", "empty_batch"), "the timm SimMIM model on B = 0"),
]


def _module_of(rel: str) -> str | None:
    p = Path(rel)
    if p.parts[0] == "kamim_fast" and p.suffix == ".py":
        return ".".join(p.with_suffix("").parts)
    return None


def make_copy(dest: Path) -> None:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    (dest / ".venv").symlink_to(ROOT / ".venv")  # the side-installed GPU Triton (tests/test_barriers.py)


def env_for(copy: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KAMIM_FAST_BACKEND", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(copy), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TORCH_EXTENSIONS_DIR"] = str(copy / ".torch_extensions")  # a csrc/ mutant's JIT build stays in the copy
    env["KAMIM_FAST_JIT"] = "cpu"
    return env


def verify(copy: Path, m: Mutant, env: dict) -> str | None:
    """None when the copy's mutated code is what a child process imports, else why not."""
    module = _module_of(m.file)
    if module:
        code = (f"import importlib, os, sys\nmod = importlib.import_module({module!r})\n"
                f"f = os.path.realpath(mod.__file__)\nprint(f)\nprint({m.new!r} in open(f).read())\n")
        want = os.path.realpath(copy / m.file)
    else:  # csrc/: the copy builds its own extension
        code = ("import os, sys, torch\nfrom kamim_fast import _ext\nok, why = _ext.status()\nassert ok, why\n"
                "assert 'kamim_fast._C' not in sys.modules\n"
                f"libs = [p for p in torch.ops.loaded_libraries if os.path.realpath(p).startswith({str(copy)!r})]\n"
                "assert libs, torch.ops.loaded_libraries\n"
                "print(os.path.realpath(_ext.CSRC / 'amt.cpp'))\nprint(True)\n")
        want = os.path.realpath(copy / "csrc" / "amt.cpp")
    run = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
    lines = run.stdout.split()
    if run.returncode or lines[-2:] != [want, "True"]:
        return f"the copy's code did not load: {run.stdout.strip()} {run.stderr.strip()[-400:]}"
    return None


def run_tests(copy: Path, m: Mutant, env: dict) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "0",
           "-o", "addopts=-ra", *m.tests]
    try:
        run = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    return run.returncode, run.stdout + run.stderr


def run_mutant(m: Mutant, baseline: bool, keep: bool) -> dict:
    start = time.monotonic()
    row = {"name": m.name, "file": m.file, "tests": " ".join(m.tests), "why": m.why}
    tmp = Path(tempfile.mkdtemp(prefix=f"mutant-{m.name}-"))
    try:
        copy = tmp / "repo"
        make_copy(copy)
        env = env_for(copy)
        target = copy / m.file
        text = target.read_text()
        if text.count(m.old) != 1:
            row.update(result="stale", detail=f"the text to replace occurs {text.count(m.old)} times in {m.file}")
            return row
        if baseline:
            rc, out = run_tests(copy, m, env)
            if rc != 0:
                row.update(result="error", detail="the tests fail without the mutant: " + _summary(out))
                return row
        if m.file.startswith("csrc/"):  # no compiled _C: neither the copy's nor, through the editable finder, ours
            for so in (copy / "kamim_fast").glob("_C*.so"):
                so.unlink()
            (copy / "kamim_fast" / "_C.py").write_text('raise ImportError("mutants.py: JIT-build csrc/ instead")\n')
        target.write_text(text.replace(m.old, m.new))
        why = verify(copy, m, env)
        if why:
            row.update(result="error", detail=why)
            return row
        rc, out = run_tests(copy, m, env)
        if rc == 1:
            row.update(result="caught", detail=_summary(out))
        elif rc == 0:
            row.update(result="MISSED", detail=_summary(out))
        else:
            row.update(result="error", detail=f"pytest exit status {rc}: " + _summary(out))
        return row
    finally:
        row["seconds"] = round(time.monotonic() - start, 1)
        if keep:
            row["copy"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _summary(out: str) -> str:
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    tail = [line for line in out.strip().splitlines() if line.strip()][-1:] if out.strip() else [""]
    return (f"first failure {failed[0]}; " if failed else "") + tail[0].strip("= ")


def write_report(rows: list[dict], path: Path, seconds: float, baseline: bool) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    caught = sum(r["result"] == "caught" for r in rows)
    lines = [
        "# Mutation check (`make mutants`)",
        "",
        f"Generated by tests/mutants.py on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit}: "
        f"**{caught} of {len(rows)} caught**, {seconds / 60:.1f} min in all (2 shared cores).",
        "Each planted bug is applied alone to a temporary copy, which the tests import (see the script's docstring)."
        + (" With `--baseline`: each row's tests first passed on the unmutated copy." if baseline else ""),
        "",
        "| planted bug | file | tests run | result | s | detail |",
        "|---|---|---|---|---:|---|",
    ]
    for r in rows:
        detail = r.get("detail", "").replace("|", "\\|")
        lines.append(f"| {r['name']}: {r['why']} | `{r['file']}` | `{r['tests']}` | {r['result']} | {r['seconds']} | {detail} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutant names (default: all)")
    parser.add_argument("--report", default=str(ROOT / "tests" / "MUTANTS.md"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--baseline", action="store_true", help="first run each mutant's tests unmutated")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:45} {m.file:28} {' '.join(m.tests)}")
        return 0
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutants: {sorted(unknown)}")
    start = time.monotonic()
    rows = []
    for m in chosen:
        row = run_mutant(m, args.baseline, args.keep)
        rows.append(row)
        print(f"{row['result']:7} {row['seconds']:7.1f}s  {m.name}: {row.get('detail', '')}", flush=True)
    seconds = time.monotonic() - start
    caught = sum(r["result"] == "caught" for r in rows)
    print(f"{caught} of {len(rows)} caught in {seconds / 60:.1f} min")
    if not args.only:
        write_report(rows, Path(args.report), seconds, args.baseline)
        print(f"report: {args.report}")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
