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


def mutant(target: str, diagnosis: str) -> Callable[[Callable], Callable]:
    """Mark a function of `solutions/<slug>/mutants.py` as a known mistake replacing `target`."""

    def mark(fn: Callable) -> Callable:
        fn.__ladder_mutant__ = Mutant(fn.__name__, target, diagnosis, fn)
        return fn

    return mark


def collect(namespace: dict) -> dict[str, Mutant]:
    """The mutants defined in an executed `mutants.py`, by name, in the order they are written."""
    found = [v.__ladder_mutant__ for v in namespace.values() if hasattr(v, "__ladder_mutant__")]
    return {m.name: m for m in found}
