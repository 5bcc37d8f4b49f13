"""Attack: a (bounded) fork bomb whose children sleep for a day.

Contained: RLIMIT_NPROC on the worker's private uid stops the forks; the pid namespace (or the
sweep of the private uid) kills every child when the worker closes.
"""

import os
import time

MARKER = "86399.125"  # the tests look for sleepers with this argument


def scaled_dot_product_attention(q, k, v):
    children = 0
    for _ in range(300):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            try:
                os.execv("/bin/sleep", ["sleep", MARKER])
            finally:
                time.sleep(86399)
                os._exit(0)
        children += 1
    return children
