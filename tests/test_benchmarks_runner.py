"""``python -m benchmarks --quick`` runs on this machine and writes JSON, Markdown and PNG, with a case for every op.

Only that the runner works and its files are complete is checked; no timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kamim_fast import _backend

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_complete_results(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KAMIM_FAST_BACKEND")}
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-progress", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    (result_file,) = tmp_path.glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["commit"] and result["versions"]["torch"] and result["device"]
    assert "amt ops" in {r["group"] for r in result["rows"]}  # the MAE+AMT model's sequence of ops
    native = any(r["case"].startswith("native CPU") for r in result["rows"])  # when the extension is built
    ran = set().union(*(r["ops"] for r in result["rows"]))
    if native:  # every op of the registry has a benchmark case (the rows name the ops their cases ran)
        assert ran == set(_backend.TABLE), set(_backend.TABLE) ^ ran
    assert ran and ran <= set(_backend.TABLE)
    for row in result["rows"]:
        assert row["ours"] in row["times_ms"] and len(row["times_ms"]) >= 2, row
        for t in row["times_ms"].values():
            assert 0 < t["min"] <= t["median"] <= t["max"], row
        assert set(row["speedup"]) == set(row["times_ms"]) - {row["ours"]}
    table = result_file.with_suffix(".md").read_text()
    assert table.count("\n| ") == len(result["rows"]) + 1  # header plus one line per case
    png = result_file.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_weights_float_script_writes_its_results(tmp_path):
    """``python -m benchmarks.weights_float --quick``: every step timed, the floor and the ratios written."""
    from kamim_fast import _ext

    if not _ext.status()[0]:
        import pytest

        pytest.skip("no native extension")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KAMIM_FAST_BACKEND")}
    run = subprocess.run([sys.executable, "-m", "benchmarks.weights_float", "--quick", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    (result_file,) = tmp_path.glob("weights-float-*.json")
    result = json.loads(result_file.read_text())
    assert result["gray_floor"]["bytes"] == 13 * 8 * 192 * 192 and result["copy_bandwidth_GBps"] > 0
    for t in result["timings"].values():
        assert 0 < t["min_ms"] <= t["median_ms"]
    assert set(result["speedup_vs_published"]) == {k for k in result["timings"] if "patch_weights" in k}
    assert result_file.with_suffix(".md").read_text().count("\n| ") == len(result["timings"]) + 1


def test_amt_step_quick_run_writes_complete_results(tmp_path):
    """``python -m benchmarks.amt_step --quick``: the MAE+AMT steps, the AMT ops and their share, JSON and Markdown."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KAMIM_FAST_BACKEND")}
    run = subprocess.run([sys.executable, "-m", "benchmarks.amt_step", "--quick", "--threads", "1", "--rounds", "1",
                          "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    (result_file,) = tmp_path.glob("*.json")
    result = json.loads(result_file.read_text())
    (row,) = result["rows"]
    assert set(row["steps"]) == {"kamim_fast MAE+AMT", "published MAE+AMT", "published MAE+AMT, timm 0.5.4",
                                 "kamim_fast MAE", "published MAE"}
    assert set(row["ops"]) == {"kamim_fast ops", "published ops"}
    for t in [*row["steps"].values(), *row["ops"].values()]:
        assert 0 < t["min_ms"] <= t["median_ms"]
    assert 0 < row["share"]["share"] < 1 and row["share"]["per_op_ms"]
    floor = row["floor"]
    assert 0 < floor["kamim_fast_shared_ms"] < floor["kamim_fast_ms"]
    assert all(0 < floor[k]["floor"] < floor["kamim_fast_ms"] / floor[k]["ms"]
               for k in ("published MAE+AMT", "published MAE+AMT, timm 0.5.4"))
    assert result_file.with_suffix(".md").read_text().count("\n| 1 |") == 9
