"""How long a learner waits: each exercise's specs on the reference, and the kit's whole suite.

Wall time of whole commands, interpreter start included (median of --rounds runs). Not a test:
the machine is shared and noisy, so the figures are reported, never asserted.

    python benchmarks/learner_loop.py [--rounds 3] [--suite] [slug ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from graders.curriculum import all_exercises, kit_root


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=kit_root(), capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slugs", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--suite", action="store_true", help="also time the whole kit test suite")
    args = parser.parse_args()
    slugs = args.slugs or [ex.slug for ex in all_exercises()]
    baseline = statistics.median(
        wall([sys.executable, "-c", "import torch"]) for _ in range(args.rounds)
    )
    print(f"{'import torch alone':<28} {baseline:6.2f} s")
    for slug in slugs:
        command = [sys.executable, "-m", "pytest", "-q", f"exercises/{slug}", "--impl=solutions"]
        seconds = statistics.median(wall(command) for _ in range(args.rounds))
        print(f"{'pytest exercises/' + slug:<28} {seconds:6.2f} s")
    if args.suite:
        seconds = wall([sys.executable, "-m", "pytest", "-q", "-n", "2"])
        print(f"{'kit test suite (pytest -n 2)':<28} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
