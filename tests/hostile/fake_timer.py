"""Attack: patch every clock to look instant, then take half a second.

Contained: the parent measures the call's wall time with its own clock.
"""

import time

_sleep = time.sleep
for name in ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns"):
    setattr(time, name, lambda: 0)


def scaled_dot_product_attention(q, k, v):
    _sleep(0.5)
    return q
