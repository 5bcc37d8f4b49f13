"""Attack: hang while being imported.

Contained: the start-up timeout; the failure is remembered and given as every reply.
"""

import time

time.sleep(3600)


def scaled_dot_product_attention(q, k, v):
    return q
