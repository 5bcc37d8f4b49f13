"""Known wrong implementations: each replaces one function or method of the reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str  # the replacement's function name, unique within the exercise
    target: str  # what it replaces: "function" or "Class.method"
    diagnosis: str  # one line, said to the learner whose output matches this mutant
    replacement: Callable
    slow: bool = False  # right answers, too slowly: caught by a speed case, not by a spec


def mutant(target: str, diagnosis: str, *, slow: bool = False) -> Callable[[Callable], Callable]:
    """Mark a function of `solutions/<slug>/mutants.py` as a known mistake replacing `target`.

    `slow=True` marks a mistake of speed (a Python loop where the paper vectorises): its answers
    are right, so the kit proves instead that grading it loses a speed case's points.
    """

    def mark(fn: Callable) -> Callable:
        fn.__ladder_mutant__ = Mutant(fn.__name__, target, diagnosis, fn, slow)
        return fn

    return mark


def collect(namespace: dict) -> dict[str, Mutant]:
    """The mutants defined in an executed `mutants.py`, by name, in the order they are written."""
    found = [v.__ladder_mutant__ for v in namespace.values() if hasattr(v, "__ladder_mutant__")]
    return {m.name: m for m in found}
