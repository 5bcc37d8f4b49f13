"""Attack: allocate memory without end.

Contained: RLIMIT_AS makes the allocation fail (MemoryError, named with the limit); the worker is
restarted before the next call.
"""

import numpy as np


def scaled_dot_product_attention(q, k, v):
    hoard = []
    while True:
        hoard.append(np.empty(2**24))  # 128 MiB of address space each
