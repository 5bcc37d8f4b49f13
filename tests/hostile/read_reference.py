"""Attack: read the reference solution, another learner's submission and the grade files.

Contained: under bubblewrap those paths do not exist in the worker's world (only the Python
install, the venv and `graders/` are bound). The fallback cannot hide world-readable files, so
this attack is tested under bubblewrap only. TARGET (set by the call) lists the paths to try.
"""

import os

TARGET: list = []


def _try(path):
    try:
        if os.path.isdir(path):
            return "listed: " + ",".join(sorted(os.listdir(path)))
        with open(path, encoding="utf-8") as f:
            return "read: " + f.read(200)
    except OSError as err:
        return f"denied: {type(err).__name__}"


def scaled_dot_product_attention(q, k, v):
    return {path: _try(path) for path in TARGET}
