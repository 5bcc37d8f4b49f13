"""LLM Ladder's engine: curriculum, implementations, stubs, pytest plugin, grading and CLI."""

import atexit
import gc
import os
import sys

# Triton decides when it is first imported whether its kernels run compiled (on a GPU) or through
# its interpreter (numpy on the CPU), and torch imports it on its own (its FLOP counter does). Every
# kit process imports this package first, so without a GPU the choice is made here, before anyone
# imports Triton: flash_attention's kernel then runs on the CPU. A user's own setting wins.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")


@atexit.register
def _skip_the_last_collection() -> None:
    """A process that imported torch spends about a second at exit collecting torch's objects one
    by one, and the kit starts many (the CLI, spec runs, grading workers). Freezing them skips
    that collection; objects still die by reference count, so nothing that matters is left
    undone. Not after Triton: its bindings (nanobind) report every uncollected object as a leak."""
    if "triton" not in sys.modules:
        gc.freeze()
