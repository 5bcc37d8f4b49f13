"""Attack: flood stdout and stderr.

Contained: the parent counts what it drains from both pipes and kills the worker past the cap.
"""

import sys


def scaled_dot_product_attention(q, k, v):
    line = "spam " * 2000 + "\n"
    while True:
        sys.stdout.write(line)
        sys.stderr.write(line)
