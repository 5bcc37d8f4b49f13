"""Attack: os._exit(3), which no exception handler can catch.

Contained: the parent sees the process end ("the process exited with status 3") and starts a fresh
worker for the next call.
"""

import os


def scaled_dot_product_attention(q, k, v):
    os._exit(3)
