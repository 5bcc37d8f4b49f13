"""Attack: read the worker's stdin at import, hoping to swallow the grader's commands.

Contained: stdin is /dev/null; commands arrive on a private pipe.
"""

import sys

STOLEN = sys.stdin.read()


def scaled_dot_product_attention(q, k, v):
    return STOLEN
