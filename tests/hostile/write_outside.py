"""Attack: delete and overwrite files outside the work folder (a grade file), plant a file beside
it, and write into the grader's own package.

Contained: nothing outside the work folder is writable (bubblewrap binds it read-only or not at
all; the fallback's private uid has no write permission there). TARGET lists the paths to attack.
"""

import os
from pathlib import Path

TARGET: list = []


def _attack(path):
    outcomes = []
    for action in (
        lambda: os.remove(path),
        lambda: Path(path).write_text("learner,100\n"),
        lambda: (Path(path).parent / "planted.txt").write_text("x"),
    ):
        try:
            action()
            outcomes.append("done")
        except OSError as err:
            outcomes.append(type(err).__name__)
    return outcomes


def scaled_dot_product_attention(q, k, v):
    return {path: _attack(path) for path in TARGET}
