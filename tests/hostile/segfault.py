"""Attack: crash the interpreter (read address 8 through ctypes).

Contained: the parent sees the crash ("segmentation fault") and starts afresh next time.
"""

import ctypes


def scaled_dot_product_attention(q, k, v):
    return ctypes.string_at(8, 16)
