"""Attack: reach another learner graded at the same time: list the work folders, read and plant
files in the neighbour's folder (TARGET), and kill every other process in sight.

Contained: a forked worker (the zygote, when the grader runs as root) runs as its own private uid,
in a folder of mode 0700 in a root no learner may list, and signals need the same uid; a worker
started in its own bubblewrap does not see the neighbour's folder at all.
"""

import os
import signal

TARGET = ""


def _try(action):
    try:
        return f"done: {action()}"[:200]
    except OSError as err:
        return f"denied: {type(err).__name__}"


def _plant():
    with open(os.path.join(TARGET, "submission", "attention", "attention.py"), "w") as f:
        return f.write("def scaled_dot_product_attention(q, k, v):\n    return 0\n")


def _kill_others():
    sent = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
                sent.append(pid)
            except OSError:
                pass
    return sent


def scaled_dot_product_attention(q, k, v):
    return {
        "list": _try(lambda: os.listdir(os.path.dirname(TARGET))),
        "read": _try(
            lambda: open(os.path.join(TARGET, "submission", "attention", "attention.py")).read()
        ),
        "plant": _try(_plant),
        "kill": str(_kill_others()),
    }
