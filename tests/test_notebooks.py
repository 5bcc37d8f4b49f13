"""`ladder notebooks`: the nbgrader course goes through nbgrader's own `generate_assignment`,
`autograde`, `export` and `generate_feedback`; a correct notebook gets full marks, a wrong one
loses exactly the points of the specs and hidden cases its mistake fails, an untouched one gets
nothing, and neither the released notebook nor the feedback holds a solution or a hidden test.
Every exercise with hidden cases builds into a well-formed notebook."""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, run_ladder

from graders import grade, notebooks, runner
from graders.stubs import BEGIN, END

SLUG = "attention"
MUTANT = "softmax_without_max_shift"  # a self-contained mistake in scaled_dot_product_attention
STUDENTS = ("correct", "wrong", "untouched")


def spec_names(slug: str) -> list[str]:
    tree = ast.parse((ROOT / "exercises" / slug / f"test_{slug}.py").read_text())
    return [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")
    ]


def solution_lines(slug: str) -> list[str]:
    """The substantial lines inside the reference's solution blocks."""
    found, inside = [], False
    for line in (ROOT / "solutions" / slug / f"{slug}.py").read_text().splitlines():
        if line.strip() in (BEGIN, END):
            inside = line.strip() == BEGIN
        elif inside and len(line.strip()) > 24 and not line.strip().startswith("#"):
            found.append(line.strip())
    return found


def text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def grade_id(cell: dict) -> str:
    return cell["metadata"].get("nbgrader", {}).get("grade_id", "")


# ---------------------------------------------------------------------------------------------
# Every exercise builds (no nbgrader needed).


@pytest.mark.parametrize("slug", notebooks.gradable())
def test_every_exercise_builds_a_well_formed_notebook(slug):
    nb = notebooks.build(slug)
    try:
        import nbformat
    except ImportError:
        pass
    else:
        nbformat.validate(nbformat.from_dict(nb))
    meta = [c["metadata"]["nbgrader"] for c in nb["cells"]]
    assert all(m["schema_version"] == 3 and m["locked"] != m["solution"] for m in meta)
    assert len({m["grade_id"] for m in meta}) == len(meta)
    graded = {m["grade_id"]: m["points"] for m in meta if m["grade"]}
    assert {f"{slug}-spec-{name}" for name in spec_names(slug)} <= set(graded)
    cases = grade.hidden_cases(slug)
    assert [graded[f"{slug}-hidden-{i}"] for i in range(len(cases))] == [c.points for c in cases]
    assert sum(graded.values()) == notebooks.SPEC_POINTS * len(spec_names(slug)) + sum(
        c.points for c in cases
    )
    hidden = [text(c) for c in nb["cells"] if grade_id(c).startswith(f"{slug}-hidden-")]
    assert all(notebooks.BEGIN_HIDDEN in t and notebooks.END_HIDDEN in t for t in hidden)
    # The module's cells give back the reference (comments and blank lines aside).
    extracted_slug, module = notebooks.extract_module(nb)
    reference = (ROOT / "solutions" / slug / f"{slug}.py").read_text()
    assert extracted_slug == slug
    assert ast.dump(ast.parse(module)) == ast.dump(ast.parse(reference))


def test_extract_module_refuses_what_is_not_a_ladder_notebook(tmp_path):
    with pytest.raises(notebooks.NotebookError, match="no answer cells"):
        notebooks.extract_module({"cells": [{"cell_type": "code", "source": "x = 1"}]})
    junk = tmp_path / "junk.ipynb"
    junk.write_text("{not json")
    with pytest.raises(notebooks.NotebookError, match="not a notebook"):
        notebooks.read_notebook(junk)


def test_extract_module_keeps_magics_out_of_the_module():
    cell = {
        "cell_type": "code",
        "metadata": {"nbgrader": {"grade_id": "attention-answer-1"}},
        "source": ["def f():\n", "    %timeit 1\n", "    return 1\n", "!ls\n"],
    }
    slug, module = notebooks.extract_module({"cells": [cell]})
    assert slug == "attention"
    ast.parse(module)
    assert "pass  # notebook magic: %timeit 1" in module


SPEC = """
import pytest
from graders.checks import fail

@pytest.fixture
def numbers():
    yield [1, 2]
    torn_down.append(True)

@pytest.mark.parametrize("k", [0, 1])
def test_total(impl, numbers, k, tmp_path, tmp_path_factory, monkeypatch):
    assert tmp_path.is_dir() and tmp_path_factory.mktemp("a") != tmp_path_factory.mktemp("a")
    monkeypatch.setenv("LADDER_NOTEBOOK_PROBE", str(k))
    if impl.total(numbers) + k != 3 + k:
        fail(f"total({numbers}) is {impl.total(numbers)}")

def test_bare_assert(impl):
    assert impl.total([1]) == 1
"""


def test_run_spec_runs_parametrisations_with_fixtures_and_says_what_failed():
    namespace = {"torn_down": []}
    exec(SPEC, namespace)
    notebooks.run_spec(namespace["test_total"], notebooks.NotebookModule({"total": sum}, "x"))
    assert namespace["torn_down"] == [True, True]
    assert "LADDER_NOTEBOOK_PROBE" not in os.environ  # monkeypatch undone after each run
    wrong = notebooks.NotebookModule({"total": len}, "x")
    with pytest.raises(
        notebooks.SpecFailed, match=r"test_total\[0\] failed:\ntotal\(\[1, 2\]\) is 2"
    ):
        notebooks.run_spec(namespace["test_total"], wrong)
    with pytest.raises(AttributeError, match="defines no 'total'") as missing:
        notebooks.run_spec(namespace["test_total"], notebooks.NotebookModule({}, "x"))
    assert "(in the public spec test_total[0])" in missing.value.__notes__
    bare = notebooks.NotebookModule({"total": lambda xs: 0}, "x")
    with pytest.raises(AssertionError) as failure:  # its traceback shows the line
        notebooks.run_spec(namespace["test_bare_assert"], bare)
    assert not isinstance(failure.value, notebooks.SpecFailed)


def test_bad_input_is_a_clear_error(tmp_path):
    cases = [
        (["notebooks", str(tmp_path / "a"), "--exercise", "no_such_thing"], "no exercise named"),
        (["notebooks", str(tmp_path), "--exercise", SLUG], "not an empty folder"),
        (["notebooks", str(tmp_path), "--extract", str(tmp_path / "out")], "no submitted/"),
    ]
    (tmp_path / "taken.txt").write_text("here first")
    for args, message in cases:
        result = run_ladder(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# nbgrader itself, on a temporary course.


def jupyter_env(home: Path) -> dict[str, str]:
    """Jupyter and IPython confined to `home`, with a `python3` kernel that is this interpreter."""
    kernel = home / "path" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (kernel / "kernel.json").write_text(json.dumps(spec))
    return {
        **os.environ,
        "JUPYTER_PATH": str(home / "path"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        # nbgrader runs `alembic` from PATH to set up its database.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def nbgrader(course: Path, env: dict, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"nbgrader {' '.join(args)}:\n{result.stderr[-3000:]}"


def answers(source: dict) -> dict[str, str]:
    """grade_id -> the reference's answer cell, solution markers removed."""
    return {
        grade_id(c): "\n".join(
            line for line in text(c).splitlines() if line.strip() not in (BEGIN, END)
        )
        for c in source["cells"]
        if c["metadata"]["nbgrader"]["solution"]
    }


def mutant_function(slug: str, name: str) -> str:
    """The mutant's function, renamed to the function it replaces."""
    from graders import impl

    target = impl.mutants(slug)[name].target
    assert "." not in target, "pick a mutant that replaces a function"
    lines = (ROOT / "solutions" / slug / "mutants.py").read_text().splitlines()
    node = next(n for n in ast.parse("\n".join(lines)).body if getattr(n, "name", None) == name)
    code = "\n".join(lines[node.lineno - 1 : node.end_lineno])
    return code.replace(f"def {name}(", f"def {target}(", 1)


def submit(course: Path, student: str, notebook: dict) -> None:
    folder = course / "submitted" / student / SLUG
    folder.mkdir(parents=True)
    (folder / f"{SLUG}.ipynb").write_text(json.dumps(notebook))


def filled(release: dict, code: dict[str, str]) -> dict:
    nb = json.loads(json.dumps(release))
    for cell in nb["cells"]:
        if grade_id(cell) in code:
            cell["source"] = code[grade_id(cell)]
    return nb


def expected_failures() -> set[str]:
    """The graded cells the mutant should fail: by pytest on the specs, by the oracle on cases."""
    specs = runner.run_specs([SLUG], impl="solutions", extra=[f"--mutant={SLUG}:{MUTANT}"])
    failed = {f"{SLUG}-spec-{s.name}" for s in specs[SLUG] if s.outcome in ("failed", "error")}
    oracle = grade.Oracle(SLUG, "cpu")
    for i, case in enumerate(grade.hidden_cases(SLUG)):
        output = oracle.output(case, case.seed, MUTANT)
        if isinstance(output, Exception) or oracle.judge(case, output, case.seed):
            failed.add(f"{SLUG}-hidden-{i}")
    return failed


def failed_cells(course: Path, student: str) -> set[str]:
    """Graded cells of the autograded notebook whose output has an error (nbgrader's rule)."""
    nb = json.loads((course / "autograded" / student / SLUG / f"{SLUG}.ipynb").read_text())
    return {
        grade_id(c)
        for c in nb["cells"]
        if c["metadata"].get("nbgrader", {}).get("grade")
        and any(
            o["output_type"] == "error" or o.get("name") == "stderr" for o in c.get("outputs", [])
        )
    }


def graded_course(tmp: Path) -> SimpleNamespace:
    """A course of one assignment, generated, submitted by three students, autograded, exported."""
    root = tmp / "course"
    made = run_ladder("notebooks", str(root), "--exercise", SLUG)
    assert made.returncode == 0, made.stderr
    env = jupyter_env(tmp / "jupyter")
    nbgrader(root, env, "generate_assignment", SLUG, "--force")
    source = json.loads((root / "source" / SLUG / f"{SLUG}.ipynb").read_text())
    release = json.loads((root / "release" / SLUG / f"{SLUG}.ipynb").read_text())
    code = answers(source)
    wrong = dict(code)
    sdpa = next(k for k, v in code.items() if "def scaled_dot_product_attention(" in v)
    wrong[sdpa] = mutant_function(SLUG, MUTANT)
    submit(root, "correct", filled(release, code))
    submit(root, "wrong", filled(release, wrong))
    submit(root, "untouched", release)
    expected: dict[str, set[str]] = {}
    oracle = threading.Thread(target=lambda: expected.update(wrong=expected_failures()))
    oracle.start()  # pytest on the mutant runs while nbgrader grades
    nbgrader(root, env, "autograde", SLUG)
    nbgrader(root, env, "export")
    nbgrader(root, env, "generate_feedback", SLUG)
    oracle.join()
    with open(root / "grades.csv", newline="") as f:
        scores = {
            r["student_id"]: (float(r["score"]), float(r["max_score"])) for r in csv.DictReader(f)
        }
    return SimpleNamespace(
        root=root, source=source, release=release, scores=scores, expected=expected
    )


def graded_points(nb: dict) -> dict[str, float]:
    return {
        grade_id(c): c["metadata"]["nbgrader"]["points"]
        for c in nb["cells"]
        if c["metadata"].get("nbgrader", {}).get("grade")
    }


def check_the_release_holds_no_solution_and_no_hidden_test(course: SimpleNamespace) -> None:
    released = json.dumps(course.release)
    for marker in (BEGIN, END, notebooks.BEGIN_HIDDEN, "hidden_case", "from graders.grade"):
        assert marker not in released
    leaks = [line for line in solution_lines(SLUG) if line in released]
    assert not leaks, f"solution code in the release: {leaks}"
    source = json.dumps(course.source)
    assert notebooks.BEGIN_HIDDEN in source and solution_lines(SLUG)[0] in source


def check_the_release_is_a_whole_exercise(course: SimpleNamespace) -> None:
    cells = course.release["cells"]
    readme = (ROOT / "exercises" / SLUG / "README.md").read_text()
    markdown = "\n".join(text(c) for c in cells if c["cell_type"] == "markdown")
    headings = re.findall(r"(?m)^## .+$", readme)
    assert headings and all(h in markdown for h in headings)
    code = [text(c) for c in cells if c["cell_type"] == "code"]
    assert any("YOUR CODE HERE" in c and "see the README above" in c for c in code)
    for name in spec_names(SLUG):
        assert any(f"def {name}(" in c and f"run_spec({name}, impl)" in c for c in code)
    hidden = [c for c in cells if grade_id(c).startswith(f"{SLUG}-hidden-")]
    assert len(hidden) == len(grade.hidden_cases(SLUG))


def check_a_correct_notebook_gets_full_marks(course: SimpleNamespace) -> None:
    total = sum(graded_points(course.source).values())
    assert course.scores["correct"] == (total, total)
    assert failed_cells(course.root, "correct") == set()


def check_a_wrong_notebook_loses_the_points_of_what_its_mistake_fails(
    course: SimpleNamespace,
) -> None:
    points = graded_points(course.source)
    expected = course.expected["wrong"]
    assert expected, "the mutant should fail something"
    assert failed_cells(course.root, "wrong") == expected
    total = sum(points.values())
    assert course.scores["wrong"] == (total - sum(points[c] for c in expected), total)


def check_an_untouched_notebook_gets_nothing(course: SimpleNamespace) -> None:
    total = sum(graded_points(course.source).values())
    assert course.scores["untouched"] == (0.0, total)


def check_feedback_shows_no_hidden_test(course: SimpleNamespace) -> None:
    """The feedback keeps the failing hidden cases' messages, not their code or data."""
    html = (course.root / "feedback" / "wrong" / SLUG / f"{SLUG}.html").read_text()
    assert "HiddenCaseFailed" in html
    for secret in (notebooks.BEGIN_HIDDEN, "hidden_case(", "UEsDB"):  # UEsDB: a zip in base64
        assert secret not in html


def check_collected_notebooks_become_modules_for_ladder_grade(course: SimpleNamespace) -> None:
    out = course.root.parent / "submissions"
    result = run_ladder("notebooks", str(course.root), "--extract", str(out))
    assert result.returncode == 0, result.stderr
    modules = {p.parent.name: p.read_text() for p in out.glob(f"*/{SLUG}.py")}
    assert set(modules) == set(STUDENTS)
    reference = (ROOT / "solutions" / SLUG / f"{SLUG}.py").read_text()
    assert ast.dump(ast.parse(modules["correct"])) == ast.dump(ast.parse(reference))
    assert 'raise NotImplementedError("not implemented yet' in modules["untouched"]


def test_nbgrader_generates_autogrades_and_exports_the_course(tmp_path):
    """One test, so that the course is graded once whatever the number of pytest workers."""
    pytest.importorskip("nbgrader", reason="nbgrader is the kit's `course` extra")
    course = graded_course(tmp_path)
    check_the_release_holds_no_solution_and_no_hidden_test(course)
    check_the_release_is_a_whole_exercise(course)
    check_a_correct_notebook_gets_full_marks(course)
    check_a_wrong_notebook_loses_the_points_of_what_its_mistake_fails(course)
    check_an_untouched_notebook_gets_nothing(course)
    check_feedback_shows_no_hidden_test(course)
    check_collected_notebooks_become_modules_for_ladder_grade(course)
