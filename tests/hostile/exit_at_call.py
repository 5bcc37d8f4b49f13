"""Attack: sys.exit(4) during the call.

Contained: the worker catches SystemExit and replies with an error; it stays alive.
"""

import sys


def scaled_dot_product_attention(q, k, v):
    sys.exit(4)
