"""The planted bugs of tests/mutants.py still apply: each one's text occurs exactly once in its file.

`make mutants` runs them (minutes, not in CI); a refactor that moves a mutant's text would otherwise leave it
"stale" unnoticed until then (three kernel mutants did after the tuning of issue 12)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutants  # noqa: E402


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_exactly_once(mutant):
    text = (mutants.ROOT / mutant.file).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: its text occurs {text.count(mutant.old)} times in {mutant.file}"
    assert mutant.new != mutant.old, mutant.name
