"""Every script of examples/ runs in its quick mode, as a user runs it: a fresh process, from the checkout root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# what each prints last in its quick mode
LAST_LINE = {"simmim_kamim_timm.py": r"step 4/4: loss \d+\.\d{4}",
             "hf_trainer.py": r"trained 3 steps, last logged loss \d+\.\d{4}",
             "orb_workers.py": r"epoch 2/2: loss \d+\.\d{4} \(orb weights from the workers\)",
             "mae_amt.py": r"epoch 3/3: loss \d+\.\d{4} \(AMT: 7 masked, 6 thrown of 16\)"}


def test_every_example_is_listed_and_checked():
    listed = set(re.findall(r"^\| `(\w+\.py)` \|", (ROOT / "examples" / "README.md").read_text(), re.M))
    assert listed == {p.name for p in EXAMPLES} == set(LAST_LINE)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_in_quick_mode(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KAMIM_FAST_BACKEND")}
    env["KAMIM_FAST_EXAMPLE_QUICK"] = "1"
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(LAST_LINE[script.name], last), last
    assert "nan" not in out.stdout.lower()
