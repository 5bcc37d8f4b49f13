"""What the sandbox costs: worker start-up (trusted vs sandboxed) and per-call overhead.

    python benchmarks/sandbox_overhead.py [--rounds 20]

Start-up is measured to the first answered call, for a module that imports numpy only and for the
torch reference of `attention`; sandboxed, twice: a grader running as root with bubblewrap starts
its zygote (Python and torch) for the first worker and forks the next ones. Per-call overhead is
the parent-measured `Reply.seconds` of a call that does nothing (pipes, writing and reading the
output files) and of echoing a 1 MB tensor back, plus the whole round trip seen by the caller
(which adds writing and loading the request).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graders import sandbox
from graders.curriculum import kit_root
from graders.worker import Request, Worker

NUMPY_MODULE = "import numpy as np\n\ndef identity(x):\n    return x\n"


def nothing(m):
    return None


def echo(m, x):
    return x


def start_time(module: Path, slug: str, sandboxed: bool) -> float:
    begin = time.perf_counter()
    with Worker({slug: module}, sandboxed=sandboxed) as w:
        reply = w.call(Request.of("start", nothing, {}), timeout=120)
        assert reply.ok, reply.error
        return time.perf_counter() - begin


def call_times(w: Worker, request: Request, rounds: int) -> tuple[float, float]:
    """Medians of (parent-measured call seconds, whole round trip seen by the caller)."""
    inner, outer = [], []
    for _ in range(rounds):
        begin = time.perf_counter()
        reply = w.call(request, timeout=60)
        outer.append(time.perf_counter() - begin)
        assert reply.ok, reply.error
        inner.append(reply.seconds)
    return statistics.median(inner), statistics.median(outer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    import torch

    print(f"isolation: {sandbox.isolation()}")
    reference = kit_root() / "solutions" / "attention" / "attention.py"
    with tempfile.TemporaryDirectory() as tmp:
        numpy_module = Path(tmp) / "plainmod.py"
        numpy_module.write_text(NUMPY_MODULE)
        print("worker start to first answer (s; sandboxed: the first, then the next):")
        for label, module, slug in (
            ("numpy module", numpy_module, "plainmod"),
            ("torch reference", reference, "attention"),
        ):
            trusted = start_time(module, slug, sandboxed=False)
            first = start_time(module, slug, sandboxed=True)  # may start the zygote
            then = start_time(module, slug, sandboxed=True)  # forked, where there is one
            print(
                f"  {label:16s} trusted {trusted:6.3f}   sandboxed {first:6.3f}, then {then:6.3f}"
            )
    tensor = torch.randn(2**18)  # 1 MB of float32
    print(f"per call, median of {args.rounds} (ms): call as timed / whole round trip")
    for sandboxed in (False, True):
        with Worker({"attention": reference}, sandboxed=sandboxed) as w:
            w.call(Request.of("warm", nothing, {}), timeout=120)
            trivial = call_times(w, Request.of("nothing", nothing, {}), args.rounds)
            big = call_times(w, Request.of("echo", echo, {"x": tensor}), args.rounds)
        label = "sandboxed" if sandboxed else "trusted"
        print(
            f"  {label:9s} trivial {trivial[0] * 1e3:6.2f} / {trivial[1] * 1e3:6.2f}"
            f"   1 MB tensor {big[0] * 1e3:6.2f} / {big[1] * 1e3:6.2f}"
        )


if __name__ == "__main__":
    main()
