"""`ladder gradescope`: the autograder zip, unpacked into a root laid out like Gradescope's
(`source/`, `submission/`, `results/`), grades a correct, a partial and a hostile submission with
its own `run_autograder`; every `results.json` follows Gradescope's specification, and a crash is a
result with a message, never a missing file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, run_ladder
from test_report import RESULTS_SCHEMA, _errors

from graders import grade, notebooks
from graders.stubs import BEGIN, END

SLUG = "attention"
CASES = grade.hidden_cases(SLUG)
TOTAL = sum(c.points + c.speed_points for c in CASES)


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    result = run_ladder("gradescope", str(path), "--exercise", SLUG)
    assert result.returncode == 0, result.stderr
    return path


def unpack(autograder: Path, root: Path) -> Path:
    """A Gradescope-like root: the zip in `source/`, an empty `submission/` and `results/`."""
    with zipfile.ZipFile(autograder) as zf:
        zf.extractall(root / "source")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return root


def run_autograder(root: Path, **env: str) -> dict:
    """Run the zip's `run_autograder` with the kit installed here; return the valid results."""
    environment = {**os.environ, "AUTOGRADER_ROOT": str(root), "LADDER_PYTHON": sys.executable}
    environment.pop("LADDER_ROOT", None)
    result = subprocess.run(
        ["bash", str(root / "source" / "run_autograder")],
        cwd=root,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    path = root / "results" / "results.json"
    assert path.is_file(), f"no results.json:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    data = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)
    assert _errors(data, RESULTS_SCHEMA) == [], data
    return data


def failed(data: dict) -> set[str]:
    return {t["name"] for t in data["tests"] if t["status"] == "failed"}


def test_the_zip_holds_the_scripts_the_config_and_the_kit(autograder):
    with zipfile.ZipFile(autograder) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        config = json.loads(zf.read("ladder-gradescope.json"))
    for script in ("setup.sh", "run_autograder"):
        assert script in names and modes[script] & stat.S_IXUSR
    assert config["exercises"] == [SLUG]
    assert {"kit/pyproject.toml", "kit/constraints.txt", f"kit/solutions/{SLUG}/cases.py"} <= names
    assert not any(n.startswith("kit/tests/") or "__pycache__" in n for n in names)
    for script in ("setup.sh", "run_autograder"):
        template = ROOT / "graders" / "templates" / "gradescope" / script
        check = subprocess.run(["bash", "-n", str(template)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_a_correct_submission_gets_full_marks(autograder, tmp_path):
    root = unpack(autograder, tmp_path)
    (root / "submission" / f"{SLUG}.py").write_text(
        (ROOT / "solutions" / SLUG / f"{SLUG}.py").read_text()
    )
    data = run_autograder(root)
    assert failed(data) == set(), data["tests"]
    assert data["score"] == pytest.approx(TOTAL)
    assert sum(t["max_score"] for t in data["tests"]) == pytest.approx(TOTAL)


def test_a_partial_notebook_submission_gets_the_points_of_its_answers(autograder, tmp_path):
    """A notebook from `ladder notebooks` with the function answered and the class left as the
    stub: the answer cells are graded, the function's cases pass and the class's fail."""
    root = unpack(autograder, tmp_path)
    cells = notebooks.module_cells(SLUG)
    for cell in cells:
        lines = cell["source"].splitlines()
        if "class MultiHeadAttention" in cell["source"]:  # nbgrader's stub for every block
            cell["source"] = notebooks_stub(lines)
        else:
            cell["source"] = "\n".join(x for x in lines if x.strip() not in (BEGIN, END))
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "submission" / f"{SLUG}.ipynb").write_text(json.dumps(notebook))
    data = run_autograder(root)
    class_cases = {c.name for c in CASES if c.call.__name__ == "mha"}
    assert class_cases and {n.split(": ", 1)[1] for n in failed(data)} == class_cases
    lost = sum(c.points + c.speed_points for c in CASES if c.name in class_cases)
    assert data["score"] == pytest.approx(TOTAL - lost)
    assert f"graded the answer cells of {SLUG}.ipynb" in data["output"]


def notebooks_stub(lines: list[str]) -> str:
    """What nbgrader's generate_assignment leaves of a cell: each block becomes its stub."""
    out, inside = [], False
    for line in lines:
        if line.strip() == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


HOSTILE = """
import os, sys
fake = '{"score": 1000.0, "output": "pwned", "tests": []}'
for folder in (RESULTS, "/autograder/results"):
    try:
        with open(os.path.join(folder, "results.json"), "w") as f:
            f.write(fake)
    except OSError:
        pass
try:
    print(open(SOLUTION).read()[:100])
except OSError:
    pass
sys.exit(0)
"""


def test_a_hostile_submission_gets_nothing_and_cannot_write_the_results(autograder, tmp_path):
    root = unpack(autograder, tmp_path)
    solution = root / "source" / "kit" / "solutions" / SLUG / f"{SLUG}.py"
    source = f"RESULTS = {str(root / 'results')!r}\nSOLUTION = {str(solution)!r}\n{HOSTILE}"
    (root / "submission" / f"{SLUG}.py").write_text(source)
    (root / "submission" / "link.py").symlink_to("/etc/passwd")
    data = run_autograder(root)
    assert data["score"] == 0 and "pwned" not in data["output"]
    assert len(data["tests"]) == len(CASES) + sum(1 for c in CASES if c.speed_points)
    assert "link.py is not a regular file; left out" in data["output"]


def test_a_grader_that_cannot_start_still_leaves_a_result(autograder, tmp_path):
    root = unpack(autograder, tmp_path)
    data = run_autograder(root, LADDER_PYTHON="/bin/false")
    assert data["score"] == 0 and "failed to start" in data["output"]


def test_a_grader_that_crashes_still_leaves_a_result(autograder, tmp_path):
    root = unpack(autograder, tmp_path)
    (root / "source" / "ladder-gradescope.json").write_text("{broken")
    data = run_autograder(root)
    assert data["score"] == 0 and "The autograder failed (JSONDecodeError" in data["output"]


def test_a_submission_that_runs_out_of_time_still_leaves_a_result(autograder, tmp_path):
    root = unpack(autograder, tmp_path)
    config = root / "source" / "ladder-gradescope.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "timeout": 1}))
    (root / "submission" / f"{SLUG}.py").write_text("")
    data = run_autograder(root)
    assert data["score"] == 0 and "took longer than 1 s" in data["output"]


def test_bad_input_is_a_clear_error(tmp_path):
    (tmp_path / "taken.zip").write_text("")
    for args, message in [
        (["gradescope", str(tmp_path / "a.tar")], "takes a .zip"),
        (["gradescope", str(tmp_path / "taken.zip")], "exists"),
        (["gradescope", str(tmp_path / "b.zip"), "--exercise", "nope"], "no exercise named"),
    ]:
        result = run_ladder(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
