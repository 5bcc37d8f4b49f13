"""Shared fixtures of the kit's own tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graders.curriculum import kit_root

ROOT = kit_root()


def run_ladder(
    *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the `ladder` command as a user would, from the kit's root."""
    return subprocess.run(
        [sys.executable, "-m", "graders.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def learner(tmp_path: Path):
    """`learner(slug, source)`: a folder `<tmp>/<slug>/<slug>.py` usable as `--impl=<tmp>`."""

    def write(slug: str, source: str) -> Path:
        folder = tmp_path / slug
        folder.mkdir(exist_ok=True)
        (folder / f"{slug}.py").write_text(source)
        return tmp_path

    return write
