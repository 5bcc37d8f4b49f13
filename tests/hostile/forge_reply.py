"""Attack: write forged replies on the worker's private reply pipe (found among its open files).

Contained: the parent checks every reply line against the request it is waiting for and kills a
worker that breaks the protocol.
"""

import contextlib
import os


def scaled_dot_product_attention(q, k, v):
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:  # not stdin, stdout or stderr: the command and reply pipes among them
            with contextlib.suppress(OSError):
                os.write(int(name), b"done 999 ok 0.0\n")
    return q
