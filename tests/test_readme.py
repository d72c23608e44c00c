"""Every ```python block of README.md and docs/REPRODUCE.md runs as written, on its own, without a GPU.

Each block runs in a fresh namespace (so it must import and define what it uses), with
``torch.cuda.is_available()`` reporting False (so it must choose its device, and runs on any machine), and
with kamim_fast's NormalizationWarning as an error (so no block shows a call with the wrong statistics).
Blocks that are deliberately not runnable (diffs, shell) use another fence language.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from kamim_fast import NormalizationWarning
from kamim_fast.weights import _NORMALIZATION_CHECK

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/REPRODUCE.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == "python":
                out.append((doc, text[: m.start()].count("\n") + 1, m.group(2)))
    return out


BLOCKS = _blocks()


def test_the_docs_have_python_blocks():
    docs = {doc for doc, _, _ in BLOCKS}
    assert docs == set(DOCS) and len(BLOCKS) >= 8


def test_fences_are_closed_and_named():
    """An unnamed or unclosed fence would hide a block from this test."""
    for doc in DOCS:
        lines = (ROOT / doc).read_text().splitlines()
        fences = [line for line in lines if line.startswith("```")]
        assert len(fences) % 2 == 0, doc
        assert all(f != "```" for f in fences[0::2]), (doc, "an opening fence without a language")


@pytest.mark.parametrize("doc, line, code", BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_python_block_runs_on_its_own(doc, line, code, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("KAMIM_FAST_BACKEND", raising=False)
    _NORMALIZATION_CHECK.reset()
    namespace = {"__name__": f"{doc}:{line}"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", NormalizationWarning)
            exec(compile(code, f"{doc}:{line}", "exec"), namespace)
    finally:
        _NORMALIZATION_CHECK.reset()
