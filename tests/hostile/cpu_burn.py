"""Attack: burn CPU in a tight loop of C calls, longer than the CPU budget.

Contained: RLIMIT_CPU kills the worker ("killed: CPU time limit").
"""

import hashlib


def scaled_dot_product_attention(q, k, v):
    data = b"x" * 4096
    while True:
        data = hashlib.sha256(data).digest() * 128
