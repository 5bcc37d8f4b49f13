"""Attack: unbounded recursion.

Contained: Python's recursion limit raises RecursionError, reported as an error reply.
"""


def scaled_dot_product_attention(q, k, v):
    return scaled_dot_product_attention(q, k, v)
