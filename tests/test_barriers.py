"""The barriers that order the per-program scratch of the FAST kernel and the fused loss forward.

Triton's interpreter runs one program at a time with whole-tile operations, so no test on CPU tensors can
see a race on the scratch: removing the ``tl.debug_barrier()`` before NMS passed the whole suite. This
guards them statically: tests/barrier_check.py lowers every shipped configuration to TTGIR for sm_90a
(no GPU, no ptxas) and checks that a barrier separates every scratch store from the loads that read it,
and one tile's scratch accesses from the next tile's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import triton_env

ROOT = Path(__file__).resolve().parents[1]

# The barriers each design needs per tile (the check below proves they sit where they must; this pins that
# none was merged away): FAST: tile start, after staging colour as gray, before NMS; fused loss: tile start,
# after gray, after scores, after NMS (ring only, before the ring bits), before the final pass.
MIN_BARRIERS = {"fast[gray-uint8,nms=1]": 2, "fast[rgb-uint8,nms=1]": 3, "fast[rgb-uint8,nms=0]": 2,
                "fast[rgb-float32,nms=1]": 3, "mim_loss_fwd[float32,fast-ring,p=8]": 5,
                "mim_loss_fwd[float32,fast-count,p=16]": 4}


@pytest.fixture(scope="module", params=["installed", "gpu-machines"], ids=["triton-installed", "triton-gpu-machines"])
def rows(request, tmp_path_factory):
    env = triton_env(request.param)
    out = tmp_path_factory.mktemp("barriers") / "rows.json"
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "barrier_check.py"), "--json", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text())


def test_every_scratch_access_is_ordered_by_a_barrier(rows):
    names = {r["name"] for r in rows}
    assert set(MIN_BARRIERS) <= names, names
    for r in rows:
        assert not r["violations"], (r["name"], r["triton"], r["violations"])
        assert not r["outside_loop"], (r["name"], r["outside_loop"])


def test_the_check_sees_the_scratch(rows):
    """Not vacuous: the kernels that use the scratch show stores and loads through it, and their barriers."""
    by_name = {r["name"]: r for r in rows}
    for name, need in MIN_BARRIERS.items():
        r = by_name[name]
        assert r["scratch_stores"] > 0 and r["scratch_loads"] > 0, r
        assert r["barriers"] >= need, r
