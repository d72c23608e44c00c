"""Checks that every diff of docs/REPRODUCE.md applies to the published files it names.

    python scripts/check_recipes.py --amt PATH --mae PATH [--doc docs/REPRODUCE.md]

PATH is a clone (or a bare repository) of github.com/guijiejie/AMT and of github.com/facebookresearch/mae. Each
```diff block that is a git diff (``--- a/<path>``) is checked with ``git apply --check --ignore-whitespace``
against its file as committed at the commit docs/REPRODUCE.md names (extracted byte for byte, Windows line
endings included, into a temporary folder): paths under ``mae-AMT/`` and ``SimMIM-AMT/`` against AMT, the others
against MAE. Prints one line per diff; exits 1 when one does not apply. Needs the repositories, so it is a tool
to run when the recipes or the published code change, not a CI test (CI checks that the diffs parse and that their
new lines run: tests/test_recipes.py).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```diff\n(.*?)^```$", re.S | re.M)
AMT_DIRS = ("mae-AMT/", "SimMIM-AMT/")


def recipe_diffs(doc: Path) -> list[tuple[str, str]]:
    """(path, diff text) of each git diff block of ``doc``."""
    found = []
    for m in FENCE.finditer(doc.read_text()):
        head = re.match(r"--- a/(\S+)\n\+\+\+ b/\1\n", m.group(1))
        if head:
            found.append((head.group(1), m.group(1)))
    return found


def commits(doc: Path) -> dict[str, str]:
    """The commits docs/REPRODUCE.md records: {"amt": sha, "mae": sha}."""
    text = doc.read_text()
    amt = re.search(r"guijiejie/AMT `mae-AMT/models_mae\.py`.*?\(([0-9a-f]{40})\)", text)
    mae = re.search(r"facebookresearch/mae \(([0-9a-f]{40})\)", text)
    if not (amt and mae):
        raise SystemExit(f"{doc} must name the AMT and MAE commits its diffs are against")
    return {"amt": amt.group(1), "mae": mae.group(1)}


def check(repo: Path, commit: str, path: str, diff: str) -> tuple[bool, str]:
    blob = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True)
    if blob.returncode:
        return False, blob.stderr.decode().strip()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.stdout)
        (Path(tmp) / "recipe.diff").write_text(diff)
        run = subprocess.run(["git", "apply", "--check", "--ignore-whitespace", "recipe.diff"], cwd=tmp,
                             capture_output=True, text=True)
        crlf = b"\r\n" in blob.stdout
        return run.returncode == 0, (run.stderr.strip() or "applies") + (" (Windows line endings)" if crlf else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amt", type=Path, required=True, help="a clone of github.com/guijiejie/AMT")
    parser.add_argument("--mae", type=Path, required=True, help="a clone of github.com/facebookresearch/mae")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "REPRODUCE.md")
    args = parser.parse_args(argv)
    shas = commits(args.doc)
    ok = True
    for path, diff in recipe_diffs(args.doc):
        which = "amt" if path.startswith(AMT_DIRS) else "mae"
        repo = args.amt if which == "amt" else args.mae
        good, message = check(repo, shas[which], path, diff)
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {which} {shas[which][:7]} {path}: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
