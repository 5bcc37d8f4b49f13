"""Hidden grading cases: what `solutions/<slug>/cases.py` declares.

A case is a few declarative lines: how to build its inputs from a seed (on the trusted side), what
to call (run in the learner's sandbox and in the trusted reference worker alike), how to compare,
its points and, where speed matters, its bound on the learner's time relative to the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

# `call(module, **inputs)` returns plain data: a tensor or array, a number, a string, or lists and
# dicts of those. It is shipped to the sandbox as source, so it must be a top-level function of
# cases.py that uses only its arguments, builtins, and modules it imports inside its body.
# A checkpoint's call gets, instead of a module, the path of a folder holding each of its pieces as
# `<slug>/<slug>.py` (the learner's in the sandbox, the reference's on the trusted side).
Call = Callable[..., Any]
# `compare(actual, expected, inputs)` is None when the learner's output is right, else a message.
Compare = Callable[[Any, Any, dict], str | None]


@dataclass(frozen=True)
class Case:
    name: str
    call: Call
    inputs: Callable[[int], dict]  # seed -> keyword arguments for `call`
    points: float = 1.0
    seed: int = 0
    rtol: float | None = None  # None: graders.checks.TOLERANCES for the output's dtype and device
    atol: float | None = None
    compare: Compare | None = None  # for exact, statistical or structural checks
    speed_ratio: float | None = None  # the learner may take up to this times the reference's time
    speed_points: float = 0.0
    timeout: float | None = None  # seconds for one call; None: the grader's wall-clock limit
    requires: tuple[str, ...] = ()  # "cuda" and packages: a case graded only where all are at hand

    def runs_on(self, device: str) -> bool:
        """Whether this grading machine, grading on `device`, has what the case requires."""
        import importlib.util

        return all(
            device == "cuda" if need == "cuda" else importlib.util.find_spec(need) is not None
            for need in self.requires
        )


def spec_glue(spec: str, folder: str, filename: str) -> tuple[dict[str, Any], SimpleNamespace]:
    """Run a checkpoint spec's source and load the pieces it names: for a checkpoint's `call`.

    `spec` is the source of `exercises/checkpoint_<n>/test_checkpoint_<n>.py` (sent as an input),
    executed under the module name `ladder_checkpoint_glue` with `filename` (the spec's file name)
    in its tracebacks; `folder` holds each piece as `<slug>/<slug>.py`. Returns the spec's namespace
    (its glue functions and constants, by name) and a namespace with one attribute per slug in the
    spec's `PIECES`, each the module loaded from `folder` (the learner's in the sandbox, the
    reference's on the trusted side). A call imports it in its body, then
    `ns, own = spec_glue(spec, folder, "test_checkpoint_1.py")`.
    """
    from graders import impl

    ns: dict[str, Any] = {"__name__": "ladder_checkpoint_glue"}
    exec(compile(spec, filename, "exec"), ns)
    return ns, SimpleNamespace(**{p: impl.load(p, folder) for p in ns["PIECES"]})
