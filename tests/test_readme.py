"""Every ```python block of the user documentation runs as written, on its own, without a GPU; what a block
prints is what the page shows; and the recipes for the published code are whole, applicable patches.

Each block runs in a fresh namespace (so it must import and define what it uses), with
``torch.cuda.is_available()`` reporting False (so it must choose its device, and runs on any machine), and
with kamim_fast's NormalizationWarning as an error (so no block shows a call with the wrong statistics).
A ```text block right after a python block is that block's output: the test compares them. Blocks that are
deliberately not runnable (diffs, shell) use another fence language.

``docs/recipes/*.patch`` change the published training code (docs/REPRODUCE.md). They keep the line endings
of the files they change, CRLF for the published KAMIM scripts, so `git apply` takes them as they are
(``scripts/check_recipes.py`` applies them to checkouts of the published code and compares the losses of a
training run; the published code is not part of this repository). Here: each patch is well formed, the page
shows it as it is, and every line it adds runs in one of the page's python blocks.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest
import torch

from kamim_fast import NormalizationWarning
from kamim_fast.weights import _NORMALIZATION_CHECK

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")), "CONTRIBUTING.md",
        "examples/README.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
REPRODUCE = ROOT / "docs" / "REPRODUCE.md"
RECIPES = sorted((ROOT / "docs" / "recipes").glob("*.patch"))
CRLF_PATHS = ("For GPUs/", "SimMIM-AMT/")  # the published files that end their lines with CRLF


def _blocks() -> list[tuple[str, int, str, str | None]]:
    """(doc, line, code, the output shown right after it or None) for every python block."""
    out = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        fences = list(FENCE.finditer(text))
        for i, m in enumerate(fences):
            if m.group(1) != "python":
                continue
            nxt = fences[i + 1] if i + 1 < len(fences) else None
            shown = nxt.group(2) if nxt and nxt.group(1) == "text" and not text[m.end():nxt.start()].strip() else None
            out.append((doc, text[: m.start()].count("\n") + 1, m.group(2), shown))
    return out


BLOCKS = _blocks()


def test_the_docs_have_python_blocks():
    docs = {doc for doc, *_ in BLOCKS}
    assert {"README.md", "docs/REPRODUCE.md"} <= docs and len(BLOCKS) >= 8
    shown = [doc for doc, _, _, out in BLOCKS if out is not None]
    assert shown.count("README.md") >= 2, "the README's quickstart shows what its blocks print"


def test_fences_are_closed_and_named():
    """An unnamed or unclosed fence would hide a block from this test."""
    for doc in DOCS:
        lines = (ROOT / doc).read_text().splitlines()
        fences = [line for line in lines if line.startswith("```")]
        assert len(fences) % 2 == 0, doc
        assert all(f != "```" for f in fences[0::2]), (doc, "an opening fence without a language")


@pytest.mark.parametrize("doc, line, code, shown", BLOCKS, ids=[f"{d}:{n}" for d, n, _, _ in BLOCKS])
def test_python_block_runs_on_its_own(doc, line, code, shown, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("KAMIM_FAST_BACKEND", raising=False)
    _NORMALIZATION_CHECK.reset()
    namespace = {"__name__": f"{doc}:{line}"}
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("error", NormalizationWarning)
            exec(compile(code, f"{doc}:{line}", "exec"), namespace)
    finally:
        _NORMALIZATION_CHECK.reset()
    if shown is not None:
        assert printed.getvalue().rstrip("\n") == shown.rstrip("\n"), f"{doc}:{line} prints something else"


# --- the recipes for the published code --------------------------------------------------------------------

HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _files(patch: bytes) -> dict[str, bytes]:
    """path -> that file's part of a git patch."""
    parts = re.split(rb"(?m)^(?=diff --git )", patch)
    return {re.match(rb"diff --git a/(.*?) b/", p).group(1).decode(): p for p in parts if p.strip()}


@pytest.mark.parametrize("patch", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_is_a_well_formed_patch(patch):
    data = patch.read_bytes()
    files = _files(data)
    assert files, patch.name
    for path, part in files.items():
        lines = part.split(b"\n")[:-1]
        assert part.endswith(b"\n")
        header = [line for line in lines[:4] if not line.startswith(b"@@")]
        assert all(not line.endswith(b"\r") for line in header), (path, "headers end with LF")
        body = lines[len(header):]
        crlf = [line.endswith(b"\r") for line in body if not line.startswith((b"@@", b"\\"))]
        # the published KAMIM files and SimMIM-AMT's use CRLF throughout, Microsoft's SimMIM, mae-AMT's and MAE's LF:
        # a patch keeps its file's endings
        assert all(crlf) if path.startswith(CRLF_PATHS) else not any(crlf), (path, "mixed line endings")
        i = 0
        while i < len(body):
            m = HUNK.match(body[i])
            assert m, (path, body[i])
            old, new = int(m.group(2) or 1), int(m.group(4) or 1)
            i += 1
            while i < len(body) and not body[i].startswith(b"@@"):
                kind = body[i][:1]
                assert kind in (b" ", b"-", b"+", b"\\"), (path, body[i])
                old -= kind in (b" ", b"-")
                new -= kind in (b" ", b"+")
                i += 1
            assert old == 0 and new == 0, (path, m.group(0), "the hunk's line counts do not match its header")


@pytest.mark.parametrize("patch", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_names_the_published_files_it_applies_to(patch):
    """Each file's `index` line names the published blob; docs/REPRODUCE.md records those blobs and commits."""
    text = REPRODUCE.read_text()
    assert f"[{patch.name}](recipes/{patch.name})" in text
    for path, part in _files(patch.read_bytes()).items():
        blob = re.search(rb"^index ([0-9a-f]{7,})\.\.", part, re.M).group(1).decode()
        assert re.search(rf"`{re.escape(path)}` `{blob}[0-9a-f]*`", text), (path, blob, "not in REPRODUCE.md's table")


def test_the_page_shows_each_recipe_as_it_is():
    text = REPRODUCE.read_text()
    shown = re.findall(r"^<!-- recipe: recipes/(\S+): (.+?) -->\n```diff\n(.*?)^```$", text, re.S | re.M)
    assert {name for name, _, _ in shown} == {p.name for p in RECIPES}
    for name, paths, diff in shown:
        files = _files((REPRODUCE.parent / "recipes" / name).read_bytes())
        want = b"".join(files[p] for p in paths.split(", ")).replace(b"\r", b"").decode()
        assert diff == want, f"docs/REPRODUCE.md's diff for {name} is not the patch file's"


def _code(line: str) -> str:
    """The line's code, comments and spacing aside (swin.py writes ``kp_detector=kp_detector``, vit.py spaces it)."""
    return re.sub(r"\s+", "", re.sub(r"\s+#.*$", "", line))


def test_every_line_a_recipe_adds_runs_in_the_pages_python_blocks():
    """The python blocks of docs/REPRODUCE.md run the recipes' new lines verbatim (comments and spacing aside)."""
    ran = {_code(line) for doc, _, code, _ in BLOCKS if doc == "docs/REPRODUCE.md" for line in code.splitlines()}
    for patch in RECIPES:
        added = [line[1:].decode().rstrip("\r") for line in patch.read_bytes().split(b"\n")
                 if line.startswith(b"+") and not line.startswith(b"+++")]
        missing = [a for a in added if _code(a) and _code(a) not in ran]
        assert not missing, (patch.name, missing)
