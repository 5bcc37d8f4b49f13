"""Attack: never return.

Contained: the parent's wall-clock timeout kills the worker's whole sandbox.
"""


def scaled_dot_product_attention(q, k, v):
    while True:
        pass
