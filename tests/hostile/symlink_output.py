"""Attack: replace the output files with symbolic links to a file of the grader's (TARGET, which
holds valid plain data), so that the trusted side reads and echoes it.

Contained: the trusted side opens outputs with O_NOFOLLOW and accepts regular files only.
"""

import os
from pathlib import Path

import graders.plain

TARGET = ""


def link_dump(obj, folder, name):
    for suffix in ("json", "npz"):
        os.symlink(f"{TARGET}.{suffix}", Path(folder) / f"{name}.{suffix}")


def scaled_dot_product_attention(q, k, v):
    graders.plain.dump = link_dump
    return q
