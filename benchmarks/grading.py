"""How fast grading is, and how steady its speed verdicts are. Reported, never asserted.

python benchmarks/grading.py demo            # seconds per learner for the demo class
python benchmarks/grading.py overhead        # grader overhead per case vs time in learner code
python benchmarks/grading.py steady [-n 50]  # speed points the reference loses, other core busy
python benchmarks/grading.py class [-n 100]  # a class of n learners on the three exemplars
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

from graders import demo, grade, impl
from graders.worker import Request, Worker

EXEMPLARS = ("backprop", "attention", "speculative_decoding")


def _grade(submissions: Path, exercises: tuple[str, ...], jobs: int = 2) -> tuple[float, int]:
    out = Path(tempfile.mkdtemp(prefix="ladder-bench-"))
    start = time.perf_counter()
    results = grade.grade_class(submissions, out, grade.Options(exercises=exercises, jobs=jobs))
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds, len(results)


def bench_demo(args: argparse.Namespace) -> None:
    folder = demo.build(Path(tempfile.mkdtemp()) / "class", list(EXEMPLARS))
    seconds, learners = _grade(folder, EXEMPLARS)
    each = seconds / learners
    print(f"demo class: {learners} learners, {seconds:.1f} s, {each:.1f} s per learner (-j 2)")


def bench_overhead(args: argparse.Namespace) -> None:
    """Per case: the parent-measured call time vs what the grader adds (transfer, comparison)."""
    for slug in EXEMPLARS:
        cases = grade.hidden_cases(slug)
        oracle = grade.Oracle(slug, "cpu")
        for case in cases:  # the reference's outputs, computed before the clock starts
            oracle.output(case, case.seed)
        start = time.perf_counter()
        with Worker({slug: impl.module_path(slug, "solutions")}, sandboxed=True) as worker:
            first = cases[0]
            worker.call(Request.of(first.name, first.call, first.inputs(first.seed)))
            started = time.perf_counter() - start  # start-up and imports, then one call
            in_code = total = 0.0
            for case in cases:
                inputs = case.inputs(case.seed)
                t0 = time.perf_counter()
                reply = worker.call(Request.of(case.name, case.call, inputs))
                oracle.judge(case, reply.output, case.seed)
                total += time.perf_counter() - t0
                in_code += reply.seconds
        overhead = 100 * (total - in_code) / total
        print(
            f"{slug:<22} start and first call {started:5.2f} s; {len(cases)} cases: {total:6.2f} s,"
            f" {in_code:6.2f} s of it timed in the call, overhead {overhead:4.1f}%"
        )


def _burn(stop: multiprocessing.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def bench_steady(args: argparse.Namespace) -> None:
    stop = multiprocessing.Event()
    burner = multiprocessing.Process(target=_burn, args=(stop,), daemon=True)
    burner.start()
    try:
        for slug in EXEMPLARS:
            options = grade.Options(exercises=(slug,))
            pool, oracle = grade.ReferencePool(options), grade.Oracle(slug, "cpu")
            lost, ratios = 0, []
            try:
                for _ in range(args.n):
                    cases = grade.grade_module(
                        impl.module_path(slug, "solutions"), slug, oracle, pool, options
                    )
                    lost += sum(c.speed_points < c.max_speed_points for c in cases)
                    ratios += [c.speed_ratio for c in cases if c.speed_ratio is not None]
            finally:
                pool.close()
            worst = max(ratios, default=float("nan"))
            print(
                f"{slug:<22} {args.n} runs with the other core busy: speed points lost {lost} "
                f"times; worst ratio {worst:.2f}"
            )
    finally:
        stop.set()
        burner.join()


def bench_class(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp()) / "class"
    sources = {slug: impl.module_path(slug, "solutions").read_text() for slug in EXEMPLARS}
    mutants = {slug: list(impl.mutants(slug)) for slug in EXEMPLARS}
    for i in range(args.n):
        for j, slug in enumerate(EXEMPLARS):
            names = mutants[slug]
            pick = (i + j) % (len(names) + 2)
            source = demo.mutant_source(slug, names[pick]) if pick < len(names) else sources[slug]
            path = folder / f"learner{i:03d}" / f"{slug}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
    seconds, learners = _grade(folder, EXEMPLARS)
    print(f"class of {learners} learners on {', '.join(EXEMPLARS)}: {seconds:.0f} s (-j 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("demo").set_defaults(fn=bench_demo)
    sub.add_parser("overhead").set_defaults(fn=bench_overhead)
    p = sub.add_parser("steady")
    p.add_argument("-n", type=int, default=50)
    p.set_defaults(fn=bench_steady)
    p = sub.add_parser("class")
    p.add_argument("-n", type=int, default=100)
    p.set_defaults(fn=bench_class)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
