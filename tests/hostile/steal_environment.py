"""Attack: read the grader's environment (tokens, paths to the grade files) and send it back.

Contained: the worker starts with a scrubbed environment of a few fixed variables.
"""

import os


def scaled_dot_product_attention(q, k, v):
    return dict(os.environ)
