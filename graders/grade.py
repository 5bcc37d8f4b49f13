"""`ladder grade`: grade a class with the hidden cases, learner code in the sandbox.

The trusted side builds every input from a seed, computes the reference's (and, for diagnosis, each
mutant's) outputs in this process, and compares. A learner's modules only ever run in a sandboxed
worker (one per learner) that receives plain data and returns plain data. A checkpoint is graded
like an exercise: its cases run the learner's pieces together and the trusted side judges what
comes back. Each finished (learner, exercise) pair is appended to `journal.jsonl` at once, so a
killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import statistics
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graders import impl, plain
from graders.cases import Case
from graders.checks import SpecFailure, assert_close, tolerance
from graders.curriculum import exercise, kit_root, pieces
from graders.results import CaseResult, LearnerResult
from graders.worker import ALL, Limits, Request, Worker

SPEED_ROUNDS = 5  # at most, per speed case: learner and reference interleaved, medians compared


@dataclass(frozen=True)
class Options:
    exercises: tuple[str, ...]
    device: str = "cpu"
    jobs: int = 1
    shard: tuple[int, int] = (1, 1)  # (K, N): grade the K-th of N deterministic parts of the class
    limits: Limits = field(default_factory=Limits)
    speed_rounds: int = SPEED_ROUNDS


def _target(slug: str) -> str:
    """What a case's call receives: the exercise's module, or a checkpoint's folder of pieces."""
    return ALL if exercise(slug).is_checkpoint else slug


def hidden_cases(slug: str, device: str | None = "cpu") -> list[Case]:
    """The exercise's hidden cases this machine can grade on `device` (see `Case.requires`);
    every case when `device` is None."""
    cases = _cases_in(_cases_path(slug), slug) if has_hidden_cases(slug) else ()
    return [case for case in cases if device is None or case.runs_on(device)]


def has_hidden_cases(slug: str) -> bool:
    """Whether the kit holds hidden cases for `slug`, without loading them (they import torch,
    which the grader would rather do while the first workers start)."""
    return _cases_path(slug).is_file()


def _cases_path(slug: str) -> Path:
    return kit_root() / "solutions" / slug / "cases.py"


@functools.cache
def _cases_in(path: Path, slug: str) -> tuple[Case, ...]:
    return tuple(impl.execute(path, f"ladder.cases.{slug}").CASES)


# ---------------------------------------------------------------------------------------------
# The trusted side: inputs, expected outputs, comparison, diagnosis.


def compare(
    actual: Any, expected: Any, case: Case, device: str, where: str = "output"
) -> str | None:
    """None when `actual` matches `expected` within the case's tolerances, else what differs."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            keys = sorted(actual) if isinstance(actual, dict) else type(actual).__name__
            return f"{where}: expected a dict with keys {sorted(expected)}, got {keys}"
        return next(
            (
                m
                for k in expected
                if (m := compare(actual[k], expected[k], case, device, f"{where}[{k!r}]"))
            ),
            None,
        )
    if isinstance(expected, list | tuple):
        if not isinstance(actual, list | tuple) or len(actual) != len(expected):
            return f"{where}: expected a sequence of {len(expected)} items, got {_short(actual)}"
        return next(
            (
                m
                for i, (a, e) in enumerate(zip(actual, expected, strict=True))
                if (m := compare(a, e, case, device, f"{where}[{i}]"))
            ),
            None,
        )
    if hasattr(expected, "shape"):
        rtol, atol = tolerance(expected.dtype, device)
        try:
            assert_close(
                actual,
                expected,
                what=where,
                rtol=rtol if case.rtol is None else case.rtol,
                atol=atol if case.atol is None else case.atol,
            )
        except SpecFailure as failure:
            return str(failure)
        return None
    actual, expected = _python_scalar(actual), _python_scalar(expected)
    if (
        isinstance(expected, float)
        and not isinstance(actual, bool)
        and isinstance(actual, int | float)
    ):
        rtol = 1e-9 if case.rtol is None else case.rtol
        atol = 1e-12 if case.atol is None else case.atol
        return (
            None
            if abs(actual - expected) <= atol + rtol * abs(expected)
            else (f"{where}: got {actual!r}, expected {expected!r}")
        )
    if type(actual) is not type(expected) or actual != expected:
        return f"{where}: got {_short(actual)}, expected {_short(expected)}"
    return None


def _python_scalar(value: Any) -> Any:
    """numpy's scalars (np.bool_, np.float32, ...) as the Python numbers they stand for."""
    return value.item() if isinstance(value, np.generic) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


class Oracle:
    """The reference's and each mutant's outputs for one exercise's cases, computed once."""

    def __init__(self, slug: str, device: str) -> None:
        self.slug, self.device = slug, device
        self._cache: dict[tuple[str | None, str, int], Any] = {}
        self._lock = threading.Lock()

    def output(self, case: Case, seed: int, mutant: str | None = None) -> Any:
        key = (mutant, case.name, seed)
        with self._lock:
            if key not in self._cache:
                if _target(self.slug) == ALL:  # the reference's pieces, laid out as a checkpoint's
                    module = str(kit_root() / "solutions")
                else:
                    module = impl.load(self.slug, "solutions", mutant)
                try:
                    result = case.call(module, **plain.to_device(case.inputs(seed), self.device))
                    self._cache[key] = plain.to_device(result, "cpu")
                except Exception as err:  # a mutant may crash where the learner's code did too
                    self._cache[key] = err
            return self._cache[key]

    def judge(self, case: Case, actual: Any, seed: int) -> str | None:
        expected = self.output(case, seed)
        if case.compare:
            return case.compare(actual, expected, case.inputs(seed))
        return compare(actual, expected, case, self.device)

    def diagnose(self, case: Case, actual: Any) -> str:
        """The known mistake whose output the learner's matches, if any."""
        inputs = case.inputs(case.seed)
        for name, m in impl.mutants(self.slug).items():
            mutated = self.output(case, case.seed, name)
            if isinstance(mutated, Exception):
                continue
            # The same output (a mistake that draws its samples as the mutant does gives the very
            # same samples), or, for a case's own comparison, an output it cannot tell apart.
            same = compare(actual, mutated, case, self.device) is None or bool(
                case.compare and case.compare(actual, mutated, inputs) is None
            )
            if same:
                return f"matches {name}: {m.diagnosis}"
        return ""

    def diagnose_error(self, case: Case, error: str) -> str:
        """The known mistake that raises the same error on this case, if any."""
        for name, m in impl.mutants(self.slug).items():
            raised = self.output(case, case.seed, name)
            if isinstance(raised, Exception) and error.startswith(
                f"{type(raised).__name__}: {str(raised)[:40]}"
            ):
                return f"matches {name}: {m.diagnosis}"
        return ""


# ---------------------------------------------------------------------------------------------
# Grading one learner's module for one exercise.


class ReferencePool:
    """Workers running the reference, reused across learners, for timing speed cases. They are
    sandboxed like a learner's (the same limits, and forked from the same zygote where there is
    one), so both sides of a speed ratio run alike; their folders are as closed to learners."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._free: dict[str, queue.SimpleQueue] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, slug: str) -> Iterator[Worker]:
        free = self._free.setdefault(slug, queue.SimpleQueue())
        try:
            worker = free.get_nowait()
        except queue.Empty:
            worker = self._new(slug)
        try:
            yield worker
        finally:
            free.put(worker)

    def prepare(self, slug: str) -> None:
        """Start a worker for `slug` now (it imports while other work goes on), unless one is."""
        with self._lock:
            if slug in self._free:
                return
            self._free[slug] = queue.SimpleQueue()
        self._free[slug].put(self._new(slug))

    def _new(self, slug: str) -> Worker:
        module = {slug: impl.module_path(slug, "solutions")}
        options = self.options
        return Worker(module, sandboxed=True, device=options.device, limits=options.limits)

    def close(self) -> None:
        for free in self._free.values():
            while not free.empty():
                free.get_nowait().close()


def grade_learner(
    modules: dict[str, Path],
    slugs: list[str],
    oracles: dict[str, Oracle],
    pool: ReferencePool,
    options: Options,
    done: Callable[[str, list[CaseResult]], None] | None = None,
) -> dict[str, list[CaseResult]]:
    """Every hidden case of `slugs` for one learner's modules (slug -> file), all in one sandboxed
    worker; `done(slug, results)` is told as each exercise finishes."""
    needed = {p: modules[p] for slug in slugs for p in pieces(slug) if p in modules}
    results = {}
    with contextlib.ExitStack() as stack:
        learner = None
        if needed:
            worker = Worker(needed, sandboxed=True, device=options.device, limits=options.limits)
            learner = stack.enter_context(worker)
        cases = {slug: hidden_cases(slug, options.device) for slug in slugs}
        for slug in slugs:  # the trusted side's share, done while the worker starts and imports
            if any(case.speed_ratio for case in cases[slug]):
                pool.prepare(slug)
            for case in cases[slug]:
                oracles[slug].output(case, case.seed)
        for slug in slugs:
            missing = [f"{p}.py" for p in pieces(slug) if p not in needed]
            if missing:
                why = f"no {' or '.join(missing)} in the submission"
                results[slug] = [_lost(slug, case, why) for case in cases[slug]]
            else:
                results[slug] = [
                    _grade_case(case, learner, oracles[slug], pool, options) for case in cases[slug]
                ]
            if done:
                done(slug, results[slug])
    return results


def grade_module(
    module: Path | None, slug: str, oracle: Oracle, pool: ReferencePool, options: Options
) -> list[CaseResult]:
    """Every hidden case of `slug` for one learner's module (None: the submission lacks it)."""
    modules = {slug: module} if module is not None else {}
    return grade_learner(modules, [slug], {slug: oracle}, pool, options)[slug]


def _lost(slug: str, case: Case, why: str) -> CaseResult:
    return CaseResult(slug, case.name, 0.0, case.points, why, max_speed_points=case.speed_points)


def _grade_case(
    case: Case, learner: Worker, oracle: Oracle, pool: ReferencePool, options: Options
) -> CaseResult:
    result = CaseResult(
        oracle.slug, case.name, 0.0, case.points, max_speed_points=case.speed_points
    )
    reply = learner.call(
        Request.of(case.name, case.call, case.inputs(case.seed), _target(oracle.slug)),
        timeout=case.timeout or options.limits.wall_seconds,
    )
    if not reply.ok:
        result.message = reply.error or "the call failed"
        result.diagnosis = oracle.diagnose_error(case, result.message)
        return result
    try:
        verdict = oracle.judge(case, reply.output, case.seed)
    except Exception as err:  # an output so malformed that the comparison itself gave up
        verdict = f"the output could not be compared: {type(err).__name__}: {err}"
    if verdict:
        result.message = verdict
        result.diagnosis = oracle.diagnose(case, reply.output)
        return result
    result.points = case.points
    if case.speed_ratio:
        _grade_speed(case, result, learner, pool, options)
    return result


def _grade_speed(
    case: Case, result: CaseResult, learner: Worker, pool: ReferencePool, options: Options
) -> None:
    """Interleave learner and reference runs on fresh inputs (so caching earns nothing), and
    compare medians; stop as soon as the rounds left could not change the verdict."""
    mine, theirs = [], []
    verdict = None
    with pool.borrow(result.exercise) as reference:
        for r in range(options.speed_rounds):
            inputs = case.inputs(case.seed + 1 + r)
            reply = learner.call(
                Request.of(case.name, case.call, inputs, _target(result.exercise)),
                timeout=case.timeout or options.limits.wall_seconds,
            )
            if not reply.ok:
                result.message = f"speed run {r + 1}: {reply.error}"
                return
            mine.append(reply.seconds)
            theirs.append(
                reference.call(Request.of(case.name, case.call, inputs), timeout=600).seconds
            )
            verdict = _settled(mine, theirs, options.speed_rounds, case.speed_ratio)
            if verdict is not None:
                break
    result.speed_ratio = statistics.median(mine) / max(statistics.median(theirs), 1e-9)
    if verdict:  # with every round run the medians are known, so `_settled` has decided
        result.speed_points = case.speed_points
    else:
        result.message = (
            f"{result.speed_ratio:.1f}x the reference's time; up to "
            f"{case.speed_ratio:g}x earns the speed points"
        )


def _settled(mine: list[float], theirs: list[float], rounds: int, bound: float) -> bool | None:
    """Whether the ratio of the medians of `rounds` runs will be within `bound`, whatever the
    rounds still to come; None while it could go either way."""
    fastest, slowest = _median_range(mine, rounds), _median_range(theirs, rounds)
    if fastest is None or slowest is None:
        return None
    if fastest[1] <= bound * slowest[0]:
        return True
    if fastest[0] > bound * slowest[1]:
        return False
    return None


def _median_range(known: list[float], rounds: int) -> tuple[float, float] | None:
    """The least and the most the median of `rounds` (odd) runs can be, given the `known` ones."""
    rank = rounds // 2  # the median's place among the runs, sorted
    if len(known) <= rank:
        return None
    ordered = sorted(known)
    return ordered[max(rank - (rounds - len(known)), 0)], ordered[rank]


# ---------------------------------------------------------------------------------------------
# The class: discovery, sharding, the journal, parallel jobs, reports.


class Journal:
    """Append-only JSON lines; a torn last line (a killed run) is ignored, duplicates collapse."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def entries(self) -> dict[tuple[str, str], dict]:
        found = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    found[(entry["learner"], entry["exercise"])] = entry
                except (ValueError, KeyError, TypeError):
                    continue
        return found

    def append(self, entry: dict) -> None:
        line = json.dumps(entry) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def in_shard(learner: str, shard: tuple[int, int], everyone: list[str]) -> bool:
    k, n = shard
    return sorted(everyone).index(learner) % n == k - 1


def grade_class(
    submissions: Path,
    out: Path,
    options: Options,
    progress: Callable[[str, int], None] | None = None,
) -> list[LearnerResult]:
    """Grade every learner in `submissions` (this shard of them) into `out`; `progress(job,
    total)` is told of each (learner, exercise) pair as it finishes."""
    from graders.submissions import discover

    out.mkdir(parents=True, exist_ok=True)
    journal = Journal(out / "journal.jsonl")
    needed = list(dict.fromkeys(p for slug in options.exercises for p in pieces(slug)))
    found = discover(submissions, out / ".work", needed)
    everyone = [s.learner for s in found]
    mine = [s for s in found if in_shard(s.learner, options.shard, everyone)]
    done = journal.entries()
    for s in mine:
        if (s.learner, "") not in done:
            journal.append({"learner": s.learner, "exercise": "", "notes": s.notes, "cases": []})
    jobs = [
        (s, todo)
        for s in mine
        if (todo := [slug for slug in options.exercises if (s.learner, slug) not in done])
    ]
    total = sum(len(todo) for _, todo in jobs)
    oracles = {slug: Oracle(slug, options.device) for slug in options.exercises}
    pool = ReferencePool(options)

    def run(job: tuple) -> None:
        submission, todo = job

        def finished(slug: str, cases: list[CaseResult]) -> None:
            entry = {"learner": submission.learner, "exercise": slug}
            journal.append({**entry, "cases": [vars(c) for c in cases]})
            if progress:
                progress(f"{submission.learner}/{slug}", total)

        grade_learner(submission.modules, todo, oracles, pool, options, finished)

    try:
        with ThreadPoolExecutor(max(1, options.jobs)) as executor:
            list(executor.map(run, jobs))
    finally:
        pool.close()
    return results_from_journal(journal, [s.learner for s in mine], list(options.exercises))


def results_from_journal(
    journal: Journal, learners: list[str], exercises: list[str]
) -> list[LearnerResult]:
    entries = journal.entries()
    results = []
    for learner in sorted(learners):
        result = LearnerResult(learner, notes=entries.get((learner, ""), {}).get("notes", []))
        for slug in exercises:
            result.cases += [
                CaseResult(**c) for c in entries.get((learner, slug), {}).get("cases", [])
            ]
        results.append(result)
    return results


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
