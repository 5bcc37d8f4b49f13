"""Attack: fill the disk with many files, each under the file size limit.

Contained: the parent watches the work folder's size and kills the worker past the cap.
"""

import itertools


def scaled_dot_product_attention(q, k, v):
    for i in itertools.count():
        with open(f"junk-{i}.bin", "wb") as f:
            f.write(b"\1" * 2**20)
