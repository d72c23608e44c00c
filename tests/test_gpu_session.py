"""benchmarks/gpu_session.sh, the one device call of a GPU session, runs here in its dry-run form, so that it
cannot rot between sessions: every step runs its cheapest form (no GPU needed) and leaves its files in $OUT
within the device tool's limits (8 files, names of letters, digits, '.', '_' and '-')."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {"gpu.txt", "build.log", "pytest-cuda.log", "bench.log", "bench-fast.json", "bench-mim_loss.json",
         "bench-amt.json"}


def test_the_gpu_session_script_runs_dry(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k not in ("KAMIM_FAST_BACKEND", "PYTEST_ADDOPTS")},
           "GPU_SESSION_DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    log = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, log
    names = {p.name for p in tmp_path.iterdir()}
    assert names == FILES, (names, log)
    assert len(names) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    steps = (tmp_path / "gpu.txt").read_text()
    for step in ("step 1", "step 2", "step 3", "step 4"):
        assert step in steps, steps
    collected = re.search(r"(\d+)/\d+ tests collected", (tmp_path / "pytest-cuda.log").read_text())
    assert collected and int(collected.group(1)) > 0, (tmp_path / "pytest-cuda.log").read_text()[-2000:]
    for group in ("fast", "mim_loss", "amt"):
        result = json.loads((tmp_path / f"bench-{group}.json").read_text())
        assert result["rows"] and all(r["group"].startswith(group.split("_")[0]) and r["times_ms"]
                                      for r in result["rows"]), result["rows"][:1]
