"""The AMT recipes of docs/REPRODUCE.md: their diffs are well-formed git diffs, and every line they add runs in CI.

Whether the diffs apply to the published files needs those files (not in CI): ``scripts/check_recipes.py`` does it
against clones of the two repositories, at the commits the document names. Here: each diff parses
(``git apply --stat``), and each line it adds (code, not a comment) appears in a ```python block of the same
section, which tests/test_readme.py runs; the exceptions are lines that need a GPU (``.cuda(``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "REPRODUCE.md"
sys.path.insert(0, str(ROOT / "scripts"))
import check_recipes  # noqa: E402

sys.path.pop(0)
DIFFS = check_recipes.recipe_diffs(DOC)


def _sections() -> list[tuple[str, str]]:
    text = DOC.read_text()
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def test_the_recipes_are_there():
    paths = [p for p, _ in DIFFS]
    assert paths == ["mae-AMT/main_pretrain.py", "mae-AMT/engine_pretrain.py", "main_pretrain.py", "engine_pretrain.py",
                     "SimMIM-AMT/models/simmim.py", "SimMIM-AMT/main_simmim.py"]
    shas = check_recipes.commits(DOC)
    assert all(re.fullmatch(r"[0-9a-f]{40}", s) for s in shas.values())


@pytest.mark.parametrize("path, diff", DIFFS, ids=[p for p, _ in DIFFS])
def test_diff_parses(path, diff, tmp_path):
    (tmp_path / "recipe.diff").write_text(diff)
    run = subprocess.run(["git", "apply", "--stat", "recipe.diff"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert path in run.stdout


@pytest.mark.parametrize("title, body", [s for s in _sections() if "```diff\n--- a/" in s[1]],
                         ids=[t for t, b in _sections() if "```diff\n--- a/" in b])
def test_added_lines_run_in_a_python_block(title, body):
    python = {line.strip() for block in re.findall(r"^```python\n(.*?)^```$", body, re.S | re.M)
              for line in block.splitlines()}
    missing = []
    for diff in re.findall(r"^```diff\n(.*?)^```$", body, re.S | re.M):
        for line in diff.splitlines():
            if not line.startswith("+") or line.startswith("+++"):
                continue
            code = line[1:].strip()
            if not code or code.startswith("#") or ".cuda(" in code:
                continue
            if code not in python:
                missing.append(code)
    assert not missing, f"{title}: added lines that no python block runs: {missing}"
