"""The documentation site builds with warnings as errors; its figures draw from the committed results; the
README's performance table is those results; and the user documentation speaks of the library, not of how
its development was organised."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kamim_fast

ROOT = Path(__file__).resolve().parent.parent
USER_DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "CONTRIBUTING.md", ROOT / "examples" / "README.md",
             *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "NOTES.md", ROOT / "benchmarks" / "README.md"]


def _figures():
    spec = importlib.util.spec_from_file_location("kamim_fast_docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    env = dict(os.environ, KAMIM_FAST_DOCS_FIGURES="0", NO_MKDOCS_2_WARNING="1")  # the committed figures
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    site = tmp_path / "site"
    for page in ("index", "quickstart", "install", "kamim", "amt", "integrations", "REPRODUCE", "examples",
                 "backends", "performance", "ERRORS", "api", "changelog", "contributing"):
        assert (site / page / "index.html" if page != "index" else site / "index.html").is_file(), page
    api = (site / "api" / "index.html").read_text()
    for name in kamim_fast.__all__:  # every public name has its entry in the reference
        assert f'id="kamim_fast.{name}"' in api, name
    for name in ("HFMaskedImageModeling", "hf_mim_loss", "SimMIMAugment", "simmim_mask", "simmim_vit", "SimMIM"):
        assert f".{name}\"" in api, name
    for name in ("AttentionBank", "AMTSchedule", "ShardSampler", "crop_patch_weights", "AMTRandomResizedCrop",
                 "AMTDataset"):  # the AMT data side
        assert f".{name}\"" in api, name
    for name in ("show_astronaut.png", "cpu-speedups.png", "show_amt_astronaut.png"):
        assert (site / "images" / name).is_file(), name
    assert 'src="../images/show_amt_astronaut.png"' in (site / "amt" / "index.html").read_text()
    assert 'src="images/show_amt_astronaut.png"' in (site / "index.html").read_text()  # the README's AMT picture
    patch = site / "recipes" / "kamim-fast-weights-in-the-loss.patch"  # offered as it is, CRLF kept
    assert patch.read_bytes() == (ROOT / "docs" / "recipes" / patch.name).read_bytes()


def test_the_figures_draw_from_the_repositorys_files(tmp_path):
    figures = _figures()
    for draw in (figures.draw_cpu_speedups, figures.draw_gpu_model, figures.draw_show, figures.draw_show_amt):
        path = draw(tmp_path / f"{draw.__name__}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", draw.__name__
    for name in ("show_astronaut.png", "cpu-speedups.png", "gpu-model.png", "show_amt_astronaut.png"):  # committed
        assert (ROOT / "docs" / "images" / name).is_file(), name


def test_the_readmes_cpu_table_is_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    for row in _figures().cpu_rows():
        line = next((ln for ln in readme.splitlines() if ln.startswith(f"| {row['label'].split(',')[0]}")
                     and f"{row['ms_min']:.2f} ms" in ln), None)
        assert line is not None, (row["label"], f"{row['ms_min']:.2f} ms")
        assert f"{row['speedup_min']:.1f}x / {row['speedup_median']:.1f}x" in line, (line, row)


AMT_RESULTS = ROOT / "benchmarks" / "results" / "amt-cpu" / "cpu-x86_64-2cores-2026-12-06-quiet.json"


def test_the_readmes_amt_rows_are_the_committed_results():
    """The README's AMT figures are benchmarks.amt_step's committed run at one thread."""
    import json

    row = next(r for r in json.loads(AMT_RESULTS.read_text())["rows"] if r["threads"] == 1)
    readme = (ROOT / "README.md").read_text()
    ops = next(ln for ln in readme.splitlines() if ln.startswith("| AMT ops: select + gather + unshuffle"))
    assert f"| {row['ops']['kamim_fast ops']['min_ms']:.0f} ms |" in ops, (ops, row["ops"])
    assert f"{row['ops_speedup']['min']:.1f}x / {row['ops_speedup']['median']:.1f}x" in ops, (ops, row["ops_speedup"])
    step = next(ln for ln in readme.splitlines() if ln.startswith("| MAE+AMT training step"))
    assert f"| {row['steps']['kamim_fast MAE+AMT']['min_ms'] / 1e3:.2f} s |" in step, (step, row["steps"])
    vs = row["amt_vs_published"]
    assert f"{1 / vs['min']:.2f}x / {1 / vs['median']:.2f}x" in step, (step, vs)
    mae = row["amt_vs_mae"]
    assert f"An MAE+AMT step takes {mae['min']:.2f} (fastest) to {mae['median']:.2f} (median)" in readme, mae


FORBIDDEN = [r"\bsessions?\b", r"\bissues? \d", r"\bissue's\b", r"\bIssue \d", r"No session"]


@pytest.mark.parametrize("doc", USER_DOCS, ids=[str(p.relative_to(ROOT)) for p in USER_DOCS])
def test_the_docs_describe_the_library_not_the_work(doc):
    text = doc.read_text()
    found = [(m.group(0), text[: m.start()].count("\n") + 1) for pattern in FORBIDDEN
             for m in re.finditer(pattern, text)]
    assert not found, f"{doc.name}: {found}"
