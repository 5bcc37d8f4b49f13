"""Not an attack, a broken module: it raises while being imported. Every reply names the line."""

import numpy as np

WEIGHTS = np.ones(3) @ np.ones(4)


def scaled_dot_product_attention(q, k, v):
    return q
