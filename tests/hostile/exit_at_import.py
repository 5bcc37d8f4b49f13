"""Attack: sys.exit(3) while being imported, to stop grading.

Contained: the worker reports the import failure as the reply to every request, and is not
restarted for each call.
"""

import sys

sys.exit(3)


def scaled_dot_product_attention(q, k, v):
    return q
