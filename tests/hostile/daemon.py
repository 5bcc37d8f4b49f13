"""Attack: a double-forked daemon in its own session that outlives the call and the worker.

Contained: it lives in the worker's pid namespace (or runs as the worker's private uid), both of
which are killed when the worker closes.
"""

import os

MARKER = "86399.375"


def scaled_dot_product_attention(q, k, v):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", MARKER])
        os._exit(0)
    os.wait()
    return q
