"""The pytest plugin every spec runs under: which implementation, which device, and short reports.

Options: `--impl=exercises|solutions|FOLDER` picks whose modules the specs load (the learner's by
default), `--mutant=SLUG:NAME` swaps in a known mistake (or `SLUG:stub`), and `--ladder-report=FILE`
writes each spec's outcome as JSON for `ladder check` and `ladder progress`.
"""

from __future__ import annotations

import os

# Specs use small tensors: one thread is faster than several on a shared machine, and
# deterministic. Set before torch or numpy load their thread pools; a user's choice wins.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from graders import readme
from graders.checks import SpecFailure
from graders.impl import ImplementationError, load

# One fixed profile: derandomised, no example database, no deadlines on a shared machine.
settings.register_profile(
    "ladder",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    print_blob=False,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no slow "explain" phase on failure
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("ladder")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ladder")
    group.addoption(
        "--impl",
        default="exercises",
        help="whose modules the specs test: exercises (default), solutions, or a folder",
    )
    group.addoption(
        "--mutant",
        action="append",
        default=[],
        metavar="SLUG:NAME",
        help="test the reference of SLUG with the known mistake NAME (or 'stub')",
    )
    group.addoption("--ladder-report", metavar="FILE", help="write each spec's outcome as JSON")


def pytest_report_header(config: pytest.Config) -> str:
    mutants = config.getoption("mutant")
    return f"ladder: impl={config.getoption('impl')}" + (
        f" mutant={','.join(mutants)}" if mutants else ""
    )


class Implementation:
    """The module under test. A missing name fails the spec with the signature the README gives."""

    def __init__(self, module: ModuleType, slug: str, loaded_by: tuple) -> None:
        self._module, self._slug, self._loaded_by = module, slug, loaded_by

    def __reduce__(self) -> tuple:
        """Pickled as what loaded it, so a spawned process (`graders.distributed`) loads it too."""
        return _reload, self._loaded_by

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._module, name)
        except AttributeError:
            expected = readme.api(self._slug).get(name)
            if expected is None:  # not part of the exercise's API (tools probe attributes too)
                raise
        pytest.fail(  # outside the except block, so the report shows no chained traceback
            f"{self._module.__file__} has no {name!r}; the exercise expects\n    {expected}\n"
            f"(see the API section of exercises/{self._slug}/README.md)",
            pytrace=False,
        )


def _load(config: pytest.Config, slug: str) -> Implementation:
    mutants = dict(m.split(":", 1) for m in config.getoption("mutant"))
    return _reload(slug, config.getoption("impl"), mutants.get(slug))


def _reload(slug: str, impl: str, mutant: str | None) -> Implementation:
    try:
        module = load(slug, impl, mutant)
    except ImplementationError as err:
        pytest.fail(str(err), pytrace=False)
    return Implementation(module, slug, (slug, impl, mutant))


@pytest.fixture(scope="module")
def impl(request: pytest.FixtureRequest) -> Implementation:
    """The module of the exercise whose folder holds this spec."""
    return _load(request.config, Path(request.fspath).parent.name)


@pytest.fixture(scope="session")
def load_impl(request: pytest.FixtureRequest):
    """`load_impl(slug)`: another exercise's module, for checkpoints that use several."""
    return lambda slug: _load(request.config, slug)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(
    scope="module",
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                "not __import__('graders.pytest_plugin').pytest_plugin._cuda_available()",
                reason="no CUDA device here",
            ),
        ),
    ],
)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if call.excinfo is not None and report.failed:
        error = call.excinfo.value
        if isinstance(error, NotImplementedError):
            report.longrepr = f"NotImplementedError: {error}"
        elif isinstance(error, SpecFailure):
            path, line, _ = item.location
            report.longrepr = f"{error}\n(spec: {path}:{(line or 0) + 1})"
    return report


class _Recorder:
    """Collects each spec's outcome; `--ladder-report` writes them at the end of the session."""

    def __init__(self, path: str) -> None:
        self.path, self.results = path, {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            entry = self.results.setdefault(report.nodeid, {"nodeid": report.nodeid})
            if entry.get("outcome") in (None, "passed"):
                entry["outcome"] = (
                    "error" if report.failed and report.when != "call" else report.outcome
                )
                entry["message"] = _message(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.results[report.nodeid] = {
                "nodeid": report.nodeid,
                "outcome": "error",
                "message": _message(report),
            }

    def pytest_sessionfinish(self) -> None:
        Path(self.path).write_text(json.dumps(list(self.results.values()), indent=1))


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2]
    return str(report.longrepr or "")[-2000:]


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("ladder_report", None):
        config.pluginmanager.register(_Recorder(config.getoption("ladder_report")), "ladder-report")
