"""`ladder release OUT`: the learners' kit, with no solution code, no mutants and no hidden case."""

from __future__ import annotations

import shutil
from pathlib import Path

from graders.curriculum import kit_root
from graders.stubs import BEGIN, END

SHIPPED = [
    "pyproject.toml",
    "constraints.txt",
    "curriculum.toml",
    "CHANGELOG.md",
    "LICENSE",
    "graders",
    "exercises",
    "data",
    ".github",
]
LEARNER_README = "docs/learners.md"  # becomes the release's README.md


class ReleaseError(RuntimeError):
    """The release would leak something, or cannot be written."""


def release(out: Path) -> list[Path]:
    """Write the learners' kit into `out` (which must not exist or be empty); return its files."""
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out} is not empty; choose a new folder")
    root = kit_root()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "*.egg-info")
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, out / name)
    shutil.copy2(root / LEARNER_README, out / "README.md")
    files = sorted(p for p in out.rglob("*") if p.is_file())
    leaks = [
        p
        for p in files
        if (p.name in ("cases.py", "mutants.py") and p.parent.name != "graders") or _has_solution(p)
    ]
    if leaks:
        shutil.rmtree(out)
        raise ReleaseError(f"the release would leak solutions: {[str(p) for p in leaks]}")
    return files


def _has_solution(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return False
    return any(line.strip() in (BEGIN, END) for line in text.splitlines())
