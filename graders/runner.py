"""Run public specs in a child pytest and read back each spec's outcome."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from graders.curriculum import kit_root


@dataclass
class SpecResult:
    """One spec function, its parametrised runs folded together."""

    exercise: str
    name: str  # e.g. "test_matches_torch"
    outcome: str  # "passed", "failed", "error" or "skipped"
    message: str = ""

    @property
    def not_started(self) -> bool:
        return self.outcome == "failed" and self.message.startswith("NotImplementedError")


_RANK = {"skipped": 0, "passed": 1, "failed": 2, "error": 3}


def run_specs(
    slugs: Iterable[str], impl: str = "exercises", extra: Iterable[str] = (), timeout: float = 1800
) -> dict[str, list[SpecResult]]:
    """Run the specs of `slugs` in one child pytest; exercise -> its specs in file order."""
    slugs = list(slugs)
    present = [slug for slug in slugs if (kit_root() / "exercises" / slug).is_dir()]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            f"--impl={impl}",
            f"--ladder-report={report}",
            *extra,
            *(f"exercises/{slug}" for slug in present),
        ]
        try:
            if present:
                subprocess.run(command, cwd=kit_root(), capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        raw = json.loads(report.read_text()) if report.is_file() else []
    results: dict[str, dict[str, SpecResult]] = {slug: {} for slug in slugs}
    for entry in raw:
        path, _, test = entry["nodeid"].partition("::")
        parts = Path(path).parts
        slug = parts[1] if len(parts) > 2 and parts[0] == "exercises" else path
        name = test.split("[")[0] or "(collection)"
        spec = SpecResult(slug, name, entry["outcome"], entry.get("message", ""))
        current = results.setdefault(slug, {}).get(name)
        if current is None or _RANK[spec.outcome] > _RANK[current.outcome]:
            results[slug][name] = spec
    for slug, specs in results.items():
        if not specs:  # a missing folder, a timeout, or pytest could not start
            why = "the specs did not run" if slug in present else f"exercises/{slug} is missing"
            specs["(no result)"] = SpecResult(slug, "(no result)", "error", why)
    return {slug: list(specs.values()) for slug, specs in results.items()}


def passed(specs: list[SpecResult]) -> bool:
    return (
        bool(specs)
        and all(s.outcome in ("passed", "skipped") for s in specs)
        and any(s.outcome == "passed" for s in specs)
    )


def caught_mutants(slug: str, names: Iterable[str], timeout: float = 1800) -> dict[str, bool]:
    """Which mutants fail at least one public spec of `slug` (a failure in the spec itself, not
    an error in its set-up): one child process for them all. A name is a mutant of `slug`, or
    `piece:name` for a mutant of another exercise that `slug` (a checkpoint) uses."""
    names = list(names)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "graders.runner", slug, tmp, *names]
        subprocess.run(command, cwd=kit_root(), capture_output=True, timeout=timeout)
        caught = {}
        for name in names:
            report = Path(tmp) / f"{name.replace(':', '.')}.json"
            outcomes = (
                [e["outcome"] for e in json.loads(report.read_text())] if report.is_file() else []
            )
            caught[name] = "failed" in outcomes
        return caught


def _check_mutants(slug: str, folder: str, names: list[str]) -> None:
    """In one process (torch imported once): the specs against each mutant, up to a failure."""
    import pytest

    for name in names:
        report = Path(folder) / f"{name.replace(':', '.')}.json"
        mutant = name if ":" in name else f"{slug}:{name}"
        pytest.main(
            [
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                "--impl=solutions",
                f"--mutant={mutant}",
                f"--ladder-report={report}",
                f"exercises/{slug}",
            ]
        )


if __name__ == "__main__":
    _check_mutants(sys.argv[1], sys.argv[2], sys.argv[3:])
