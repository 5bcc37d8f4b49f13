"""`ladder notebooks COURSE`: an nbgrader course made from the kit's single sources.

`source/<slug>/<slug>.ipynb`, for each exercise with hidden cases, holds in order:

1. the exercise README as Markdown cells, one per `## ` section, locked;
2. the module `solutions/<slug>/<slug>.py` as code cells, one per top-level definition: given code
   locked, definitions holding `### BEGIN SOLUTION` blocks as nbgrader answer cells (nbgrader's
   `generate_assignment` replaces each block with its own stub, as `ladder stubs` does);
3. the public specs `exercises/<slug>/test_<slug>.py`: helpers in locked cells, then each spec in a
   graded test cell (`SPEC_POINTS`) that defines it and runs it with `run_spec` on the notebook;
4. a graded test cell per hidden case, worth the case's correctness points, whose check is a
   `### BEGIN HIDDEN TESTS` block: the inputs are rebuilt from the embedded `cases.py`, the
   expected output is a literal that the reference computed when the notebook was built (arrays
   over `SAMPLE_ABOVE` values are checked at `SAMPLE_SIZE` fixed positions). No reference code
   enters a notebook, and `generate_assignment` strips every hidden block from the learners' copy.

The notebooks run where the kit is installed (the specs use `graders.checks`); the helpers their
cells call are `NotebookModule`, `run_spec` and `hidden_case` below. `extract_module` turns a
learner's notebook back into `<slug>.py`, so that `ladder grade` grades notebooks in its sandbox.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import inspect
import io
import itertools
import json
import re
import sys
import tempfile
import textwrap
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from graders.curriculum import all_exercises, exercise, kit_root
from graders.stubs import BEGIN

SPEC_POINTS = 1  # each public spec's cell
SAMPLE_ABOVE = 16384  # expected arrays with more values than this are spot-checked ...
SAMPLE_SIZE = 4096  # ... at this many fixed positions, so that notebooks stay small
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
PAYLOAD_FORMAT = "ladder-hidden-case/1"
# What `run_spec` supplies, besides the spec file's own fixtures: the kit's two and pytest's own
# that specs use.
FIXTURES = ("impl", "device", "tmp_path", "tmp_path_factory", "monkeypatch")
MODULE_CELL = re.compile(r"^([A-Za-z_]\w*)-(given|answer)-\d+$")  # grade_id of a module cell
MAX_NOTEBOOK_BYTES = 50 * 2**20  # a learner's notebook larger than this is refused

CONFIG = """\
# nbgrader's configuration for the LLM Ladder course, written by `ladder notebooks`.
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "llm-ladder"
# Specs run many hypothesis examples and hidden cases build large inputs: allow minutes per cell.
c.Execute.timeout = 600
# The stub that replaces each solution block in the learners' copy.
c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\\n"
    'raise NotImplementedError("not implemented yet: see the README above")'
}
# A test cell deleted by a learner is put back and graded, rather than silently skipped.
c.OverwriteCells.add_missing_cells = True
# Feedback renders the graded notebooks: keep the hidden cases' payloads out of it.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
"""

COURSE_README = """\
# LLM Ladder as an nbgrader course

Written by `ladder notebooks`. Each exercise is an assignment named after it, with one notebook.

```sh
nbgrader generate_assignment {first}  # release/{first}/{first}.ipynb: no solution, no hidden test
nbgrader autograde {first}            # grades submitted/<student>/{first}/{first}.ipynb
nbgrader export                       # grades.csv
```

nbgrader runs each learner's notebook, hidden tests included, in one Jupyter kernel with the
grader's permissions: it trusts the learners' code. To grade the same notebooks with the sandbox of
`ladder grade` instead (no network, no view of the hidden cases or of other learners, plain data
only), extract the answer cells into modules and grade those:

```sh
ladder notebooks . --extract submissions/   # submissions/<student>/<slug>.py
ladder grade submissions/ --out grades/
```
"""


class NotebookError(RuntimeError):
    """A notebook or course that cannot be written, or a notebook that is not a ladder one."""


# ---------------------------------------------------------------------------------------------
# The course.


def gradable() -> list[str]:
    """Exercises with hidden cases (`solutions/<slug>/cases.py`), in ladder order."""
    return [
        ex.slug
        for ex in all_exercises(checkpoints=False)
        if (kit_root() / "solutions" / ex.slug / "cases.py").is_file()
    ]


def selected(requested: list[str] | None) -> list[str]:
    """The exercises named (each checked), or every gradable one."""
    known = gradable()
    if not requested:
        if not known:
            raise NotebookError("no exercise has hidden cases (solutions/<slug>/cases.py) here")
        return known
    for slug in requested:
        exercise(slug)  # an unknown name fails here, naming the known ones
        if slug not in known:
            raise NotebookError(
                f"{slug} has no hidden cases (solutions/{slug}/cases.py) in this kit; "
                f"exercises with hidden cases: {', '.join(known) or 'none'}"
            )
    return list(dict.fromkeys(requested))


def write_course(course: Path, requested: list[str] | None = None) -> list[Path]:
    """Write `nbgrader_config.py` and `source/<slug>/<slug>.ipynb` into `course` (new or empty)."""
    slugs = selected(requested)
    if course.exists() and (not course.is_dir() or any(course.iterdir())):
        raise NotebookError(f"{course} exists and is not an empty folder; choose a new one")
    notebooks = {slug: build(slug) for slug in slugs}  # everything is built before writing
    course.mkdir(parents=True, exist_ok=True)
    written = [course / "nbgrader_config.py", course / "README.md"]
    written[0].write_text(CONFIG, encoding="utf-8")
    written[1].write_text(COURSE_README.format(first=slugs[0]), encoding="utf-8")
    for slug, notebook in notebooks.items():
        path = course / "source" / slug / f"{slug}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", "utf-8")
        written.append(path)
    return written


def build(slug: str) -> dict:
    """The nbgrader source notebook of one exercise, as nbformat 4 JSON data."""
    cells = [
        *readme_cells(slug),
        *module_cells(slug),
        *spec_cells(slug),
        *hidden_cells(slug),
    ]
    ids = [c["id"] for c in cells]
    if len(set(ids)) != len(ids):
        raise NotebookError(f"{slug}: two cells would share an id")
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _cell(
    kind: str,
    source: str,
    grade_id: str,
    *,
    solution: bool = False,
    grade: bool = False,
    points: float | None = None,
) -> dict:
    """A cell with nbgrader's metadata (schema 3): answers are unlocked, everything else locked."""
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    cell = {
        "cell_type": kind,
        "id": grade_id if len(grade_id) <= 64 else f"{grade_id[:47]}-{_digest(grade_id)[:16]}",
        "metadata": {"nbgrader": meta},
        "source": source,
    }
    if kind == "code":
        cell |= {"execution_count": None, "outputs": []}
    return cell


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path) -> str:
    if not path.is_file():
        raise NotebookError(f"{path} is missing")
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The cells, from the single sources.


def readme_cells(slug: str) -> list[dict]:
    """An introduction, then the README split at its `## ` headings."""
    intro = (
        f"# `{slug}`: the notebook edition\n\n"
        "This notebook is the whole exercise: the README, the module to complete, its public "
        "specs and the slots of the hidden cases your work is graded on. Fill in each cell that "
        "says `# YOUR CODE HERE`, then run every cell from the top; a spec cell passes quietly "
        "or says what broke.\n\n"
        "- Keep your code inside the answer cells: the graders take only those (and the given "
        "cells) as your module.\n"
        "- Don't reuse the names the spec cells define (their helpers) in your own code.\n"
        "- It needs the LLM Ladder kit installed (`pip install -e .` in the learners' kit): the "
        "specs use `graders.checks`."
    )
    text = _read(kit_root() / "exercises" / slug / "README.md")
    sections = [s.strip("\n") for s in re.split(r"(?m)^(?=## )", text) if s.strip()]
    return [_cell("markdown", intro, f"{slug}-intro")] + [
        _cell("markdown", s, f"{slug}-readme-{i}") for i, s in enumerate(sections)
    ]


def _chunks(source: str, own_cell: Callable[[ast.stmt], bool]) -> list[tuple[str, list]]:
    """Split a module into (cell text, its statements): each statement for which `own_cell`
    holds gets a cell; runs of other statements share one. Comments right above go with it."""
    lines = source.splitlines()
    groups: list[tuple[int, list[ast.stmt]]] = []
    previous_end = 0
    for node in ast.parse(source).body:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        while start > previous_end and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        if not groups or own_cell(node) or own_cell(groups[-1][1][-1]):
            groups.append((start, [node]))
        else:
            groups[-1][1].append(node)
        previous_end = node.end_lineno or node.lineno
    bounds = [0] + [start for start, _ in groups[1:]] + [len(lines)]
    texts = ["\n".join(lines[a:b]).strip("\n") for a, b in itertools.pairwise(bounds)]
    return [(text, nodes) for text, (_, nodes) in zip(texts, groups, strict=True)]


def _is_definition(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)


def _is_spec(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef) and node.name.startswith("test")


def module_cells(slug: str) -> list[dict]:
    """The reference module: a cell per top-level definition; those with solution blocks are
    answer cells."""
    source = _read(kit_root() / "solutions" / slug / f"{slug}.py")
    cells, answers = [], 0
    for i, (text, _) in enumerate(_chunks(source, _is_definition)):
        is_answer = any(line.strip() == BEGIN for line in text.splitlines())
        answers += is_answer
        kind = "answer" if is_answer else "given"
        cells.append(_cell("code", text, f"{slug}-{kind}-{i}", solution=is_answer))
    if not answers:
        raise NotebookError(f"solutions/{slug}/{slug}.py has no {BEGIN} block")
    return cells


def spec_cells(slug: str) -> list[dict]:
    """The public specs: a set-up cell, helper cells, and a graded cell per spec."""
    path = kit_root() / "exercises" / slug / f"test_{slug}.py"
    source = _read(path)
    _check_spec_names(slug, source)
    heading = (
        "## The public specs\n\n"
        f"Each graded cell below defines one spec of `exercises/{slug}/test_{slug}.py` and runs it "
        "on the code above (on `cpu`, and on `cuda` when there is one), worth "
        f"{SPEC_POINTS} point{'s' if SPEC_POINTS != 1 else ''}. `impl` is this notebook's "
        "module as the specs see it."
    )
    setup = (
        "# As under pytest: the kit's hypothesis profile. Warnings go to stdout, since nbgrader\n"
        "# gives no points to a test cell that writes to stderr.\n"
        "from graders.notebooks import NotebookModule, prepare, run_spec\n\n"
        "prepare()\n"
        f'impl = NotebookModule(globals(), "{slug}")'
    )
    cells = [
        _cell("markdown", heading, f"{slug}-specs"),
        _cell("code", setup, f"{slug}-spec-setup"),
    ]
    fixtures = _spec_fixtures(ast.parse(source))
    for i, (text, nodes) in enumerate(_chunks(source, _is_spec)):
        if len(nodes) == 1 and _is_spec(nodes[0]):
            name = nodes[0].name
            _check_fixtures(slug, nodes[0], fixtures)
            text += f"\n\n\nrun_spec({name}, impl)"
            cells.append(_cell("code", text, f"{slug}-spec-{name}", grade=True, points=SPEC_POINTS))
        else:
            cells.append(_cell("code", text, f"{slug}-spec-helpers-{i}"))
    return cells


def _bound_names(source: str) -> dict[str, str | None]:
    """Top-level names a module binds: an import's target as 'module:name', else None."""
    names: dict[str, str | None] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = a.name if a.asname else a.name.split(".")[0]
                names[a.asname or bound] = f"{bound}:"
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}:{a.name}"
        elif _is_definition(node):
            names[node.name] = None
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id: None for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _check_spec_names(slug: str, spec_source: str) -> None:
    """The specs run in the notebook's namespace: they must not rebind the module's names."""
    module = _bound_names(_read(kit_root() / "solutions" / slug / f"{slug}.py"))
    specs = _bound_names(spec_source)
    clashes = sorted(
        n for n in set(module) & set(specs) if module[n] is None or module[n] != specs[n]
    )
    if clashes or "impl" in module:
        raise NotebookError(
            f"{slug}: the specs and the module both define {clashes or ['impl']}; a notebook "
            "runs both in one namespace, so rename them in the specs"
        )


def _spec_fixtures(tree: ast.Module) -> set[str]:
    """Names of the fixtures a spec file defines itself (`@pytest.fixture`)."""
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }


def _check_fixtures(slug: str, node: ast.FunctionDef, fixtures: set[str]) -> None:
    """Every argument of a spec must be parametrised, drawn by hypothesis, or a fixture that
    `run_spec` supplies."""
    args = [a.arg for a in node.args.args]
    given: set[str] = set()
    for d in node.decorator_list:
        if not isinstance(d, ast.Call):
            continue
        name = ast.unparse(d.func)
        if name.endswith("parametrize") and d.args and isinstance(d.args[0], ast.Constant):
            given |= {n.strip() for n in str(d.args[0].value).split(",")}
        elif name.endswith("parametrize") and d.args:
            given |= {ast.literal_eval(e) for e in getattr(d.args[0], "elts", [])}
        elif name.split(".")[-1] == "given":
            given |= {k.arg for k in d.keywords if k.arg}
            given |= set(args[len(args) - len(d.args) :]) if d.args else set()
    missing = [a for a in args if a not in given and a not in FIXTURES and a not in fixtures]
    if missing:
        raise NotebookError(
            f"{slug}: {node.name} takes {missing}, which notebooks cannot supply "
            f"(they supply {', '.join(FIXTURES)} and fixtures the spec file defines)"
        )


def hidden_cells(slug: str) -> list[dict]:
    """A graded cell per hidden case, its check inside a hidden-tests block."""
    from graders.grade import Oracle, hidden_cases

    source = _read(kit_root() / "solutions" / slug / "cases.py")
    cases = hidden_cases(slug)
    oracle = Oracle(slug, "cpu")
    total = sum(c.points for c in cases)
    speed = [c.name for c in cases if c.speed_ratio]
    heading = (
        "## The hidden cases\n\n"
        f"Your work is also graded on {len(cases)} hidden cases worth {total:g} points, on inputs "
        "unlike the specs'. Their checks are not in your copy of this notebook; each cell below "
        "says what its case is about."
    )
    if speed:
        heading += (
            " Here only correctness is graded; speed is graded when your instructor runs "
            "`ladder grade` on your code."
        )
    cells = [_cell("markdown", heading, f"{slug}-hidden")]
    for i, case in enumerate(cases):
        payload = _payload(slug, i, case, source, oracle)
        lines = _wrap(payload)
        text = "\n".join(
            [
                f"# Hidden case {i + 1} of {len(cases)}: {case.name} "
                f"({case.points:g} point{'s' if case.points != 1 else ''}"
                f"{'; its speed is graded by `ladder grade`' if case.speed_ratio else ''}).",
                BEGIN_HIDDEN,
                "from graders.notebooks import hidden_case",
                "",
                f'hidden_case(impl, """\n{lines}""")',
                END_HIDDEN,
            ]
        )
        cells.append(_cell("code", text, f"{slug}-hidden-{i}", grade=True, points=case.points))
    return cells


def _wrap(payload: str, width: int = 96) -> str:
    """The payload in lines of `width` characters (base64 decoding skips the newlines)."""
    return "".join(payload[i : i + width] + "\n" for i in range(0, len(payload), width))


# ---------------------------------------------------------------------------------------------
# Hidden-case payloads: the case's source, its expected output, a fingerprint of its inputs.


def _payload(slug: str, index: int, case: Any, cases_source: str, oracle: Any) -> str:
    """base64 of a zip: `case.json` (which case, `cases.py`, the inputs' fingerprint) and the
    expected output as `expected.json` + `expected.npz` (graders.plain)."""
    from graders import plain

    expected = oracle.output(case, case.seed)
    if isinstance(expected, Exception):
        raise NotebookError(f"{slug}: the reference fails hidden case {case.name!r}: {expected!r}")
    if case.compare is None:
        expected = _sampled(expected)
    elif not _uses_expected(case.compare):
        expected = None  # statistical and structural checks often judge the output alone
    meta = {
        "format": PAYLOAD_FORMAT,
        "slug": slug,
        "index": index,
        "name": case.name,
        "cases": cases_source,
        "fingerprint": fingerprint(case.inputs(case.seed)),
    }
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w") as zf:
        plain.dump(expected, Path(tmp), "expected")
        zf.writestr("case.json", json.dumps(meta), zipfile.ZIP_DEFLATED)
        for path in sorted(Path(tmp).iterdir()):  # expected.json, and .npz when there are arrays
            zf.write(path, path.name, zipfile.ZIP_DEFLATED, compresslevel=9)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _uses_expected(compare: Callable) -> bool:
    """Whether `compare(actual, expected, inputs)` reads its `expected` argument at all."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(compare)))
    except (OSError, TypeError, SyntaxError):
        return True
    function = tree.body[0]
    if not isinstance(function, ast.FunctionDef) or len(function.args.args) < 2:
        return True
    name = function.args.args[1].arg
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(function))


def _unpack(payload: str) -> tuple[dict, Any]:
    """(case.json, expected output) from a payload."""
    from graders import plain

    with zipfile.ZipFile(io.BytesIO(base64.b64decode(payload))) as zf:
        meta = json.loads(zf.read("case.json"))
        if meta.get("format") != PAYLOAD_FORMAT:
            raise NotebookError(f"this hidden case is not in the {PAYLOAD_FORMAT} format")
        with tempfile.TemporaryDirectory() as tmp:
            for name in {"expected.json", "expected.npz"} & set(zf.namelist()):
                (Path(tmp) / name).write_bytes(zf.read(name))
            return meta, plain.load(Path(tmp), "expected")


def _array_kind(value: Any) -> str | None:
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return "tensor"
    return "ndarray" if type(value).__module__ == "numpy" and hasattr(value, "shape") else None


def _sampled(value: Any) -> Any:
    """`value` with every array over SAMPLE_ABOVE values replaced by a fixed sample of them."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _sampled(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_sampled(v) for v in value)
    kind = _array_kind(value)
    size = (value.numel() if kind == "tensor" else value.size) if kind else 0
    if size <= SAMPLE_ABOVE:
        return value
    index = _sample_index(value.numel() if kind == "tensor" else value.size)
    values = value.reshape(-1)[index] if kind == "ndarray" else value.reshape(-1)[index].clone()
    return {
        "ladder_sample": True,
        "shape": [int(n) for n in value.shape],
        "dtype": str(value.dtype),
        "index": np.asarray(index, dtype=np.int64),
        "values": values,
    }


def _sample_index(size: int) -> Any:
    """SAMPLE_SIZE positions spread over `size`, the same every time (numpy's PCG64)."""
    import numpy as np

    index = np.random.Generator(np.random.PCG64(20170612)).choice(size, SAMPLE_SIZE, replace=False)
    return np.sort(index)


def _is_sample(value: Any) -> bool:
    return isinstance(value, dict) and value.get("ladder_sample") is True


def _match_samples(actual: Any, expected: Any, where: str = "output") -> tuple[Any, Any, str]:
    """(actual, expected) with sampled arrays of `actual` cut to the sampled positions, or a
    message when a sampled array's shape or dtype is wrong."""
    import torch

    if _is_sample(expected):
        kind = _array_kind(actual)
        if kind is None:
            return actual, expected["values"], ""
        shape, dtype = [int(n) for n in actual.shape], str(actual.dtype)
        if shape != expected["shape"] or dtype != expected["dtype"]:
            return (
                None,
                None,
                f"{where}: expected {expected['dtype']} of shape {tuple(expected['shape'])}, got "
                f"{dtype} of shape {tuple(shape)}",
            )
        index = expected["index"]
        flat = actual.reshape(-1)
        cut = flat[torch.as_tensor(index)] if kind == "tensor" else flat[index]
        return cut, expected["values"], ""
    if isinstance(expected, dict) and isinstance(actual, dict) and set(actual) == set(expected):
        pairs = {k: _match_samples(actual[k], expected[k], f"{where}[{k!r}]") for k in expected}
        message = next((m for _, _, m in pairs.values() if m), "")
        return (
            {k: a for k, (a, _, _) in pairs.items()},
            {k: e for k, (_, e, _) in pairs.items()},
            message,
        )
    if (
        isinstance(expected, list | tuple)
        and isinstance(actual, list | tuple)
        and len(actual) == len(expected)
    ):
        triples = [
            _match_samples(a, e, f"{where}[{i}]")
            for i, (a, e) in enumerate(zip(actual, expected, strict=True))
        ]
        message = next((m for _, _, m in triples if m), "")
        return (
            type(actual)(a for a, _, _ in triples),
            type(expected)(e for _, e, _ in triples),
            message,
        )
    return actual, expected, ""


def fingerprint(value: Any, where: str = "") -> list:
    """A short summary of nested inputs (shapes, dtypes, two weighted sums per array), enough to
    notice that a case's inputs came out differently here than where the notebook was built."""
    import numpy as np

    if isinstance(value, dict):
        return [x for k in sorted(value) for x in fingerprint(value[k], f"{where}[{k!r}]")]
    if isinstance(value, list | tuple):
        return [x for i, v in enumerate(value) for x in fingerprint(v, f"{where}[{i}]")]
    kind = _array_kind(value)
    if kind is None:
        return [[where, repr(value)]]
    array = value.detach().cpu() if kind == "tensor" else value
    if kind == "tensor" and (array.dtype.is_floating_point or array.dtype.is_complex):
        array = array.cdouble() if array.dtype.is_complex else array.double()
    with np.errstate(all="ignore"):
        flat = np.asarray(array).reshape(-1)
        if flat.dtype.kind == "c":
            flat = np.concatenate([flat.real, flat.imag])
        flat = flat.astype(np.float64)
        nan, inf = np.isnan(flat), np.isinf(flat)
        signs = [int((inf & (flat > 0)).sum()), int((inf & (flat < 0)).sum())]
        counts = f"{int(nan.sum())} nan, {signs[0]} +inf, {signs[1]} -inf"
        flat = np.where(nan | inf, 0.0, flat)
        weights = np.arange(flat.size) % 7 + 1.0
        sums = [float(flat.sum()), float(flat @ weights)]
    return [[where, list(value.shape), f"{value.dtype}; {counts}", *sums]]


def _same_fingerprint(here: list, there: list) -> bool:
    """Equal paths, shapes, dtypes and other values; sums equal up to rounding."""
    if len(here) != len(there):
        return False
    for a, b in zip(here, there, strict=True):
        if len(a) != len(b) or a[:3] != b[:3]:
            return False
        if len(a) == 5 and any(
            abs(x - y) > 1e-9 + 1e-6 * abs(y) for x, y in zip(a[3:], b[3:], strict=True)
        ):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# What the notebook's cells call.


class NotebookModule:
    """The learner's module as the specs see it: the notebook's names, looked up at each use."""

    def __init__(self, namespace: dict, slug: str) -> None:
        self._namespace, self._slug = namespace, slug
        self.__name__ = f"notebook.{slug}"

    def __getattr__(self, name: str) -> Any:
        try:
            return self._namespace[name]
        except KeyError:
            raise AttributeError(
                f"this notebook defines no {name!r}: run the cell that defines it (the API "
                f"section of the README lists what `{self._slug}` must provide)"
            ) from None


class _Plain:
    """IPython shows this exception as its message alone: no cell source around it (which, for
    a hidden test, would show the hidden code in nbgrader's feedback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class SpecFailed(_Plain, AssertionError):
    """A public spec failed in a notebook; the message says which run and why."""


class HiddenCaseFailed(_Plain, AssertionError):
    """A hidden case failed in a notebook."""


class HiddenCaseError(_Plain, RuntimeError):
    """A hidden case could not run here (not the learner's doing)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Warnings and stderr go to stdout: nbgrader scores a test cell that writes to stderr 0."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in {str(w.message): w for w in caught}.values():
                print(f"warning: {w.category.__name__}: {w.message}")


def _show_on_stdout(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    print(f"warning: {category.__name__}: {message} ({Path(filename).name}, line {lineno})")


def prepare() -> None:
    """Load the kit's hypothesis profile (as the pytest plugin does) before any spec is defined,
    keep hypothesis's files in a temporary folder, and show warnings on stdout from now on
    (nbgrader scores a test cell that writes to stderr 0)."""
    import graders.pytest_plugin  # noqa: F401 (loading it registers and loads the profile)

    with contextlib.suppress(ImportError, AttributeError):  # no .hypothesis/ beside the notebook
        from hypothesis.configuration import set_hypothesis_home_dir

        set_hypothesis_home_dir(tempfile.mkdtemp(prefix="ladder-hypothesis-"))
    warnings.showwarning = _show_on_stdout


def _devices() -> list[str]:
    try:
        import torch
    except ImportError:
        return ["cpu"]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _skip_reason(marks: list) -> str | None:
    for mark in marks:
        if mark.name == "skip":
            return mark.kwargs.get("reason", (mark.args or ["skipped"])[0])
        if mark.name == "skipif":
            conditions = [c for c in mark.args if isinstance(c, bool)]
            if any(conditions) or mark.kwargs.get("condition") is True:
                return mark.kwargs.get("reason", "skipped")
    return None


def _parametrizations(spec: Callable) -> list[tuple[list[str], dict, list]]:
    """(id parts, arguments, marks) for each combination of the spec's parametrize marks."""
    marks = list(getattr(spec, "pytestmark", []))
    axes = []
    for mark in reversed([m for m in marks if m.name == "parametrize"]):  # pytest's id order
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        axis = []
        for value in values:
            own: list = []
            if _is_param_set(value):
                own, value = list(value.marks), tuple(value.values)
            else:
                value = tuple(value) if len(names) > 1 else (value,)
            label = "-".join(_label(v) for v in value)
            axis.append(([label], dict(zip(names, value, strict=True)), own))
        axes.append(axis)
    combos = []
    for parts in itertools.product(*axes):
        combos.append(
            (
                [p for part in parts for p in part[0]],
                {k: v for part in parts for k, v in part[1].items()},
                [m for part in parts for m in part[2]],
            )
        )
    return combos or [([], {}, [])]


def _is_param_set(value: Any) -> bool:
    return type(value).__name__ == "ParameterSet"


def _label(value: Any) -> str:
    text = getattr(value, "__name__", None) or str(value)
    return text.removeprefix("torch.")


class _TempPathFactory:
    """pytest's `tmp_path_factory`, as far as specs use it: fresh folders under one root."""

    def __init__(self, root: Path) -> None:
        self.root, self._count = root, itertools.count()

    def mktemp(self, basename: str, numbered: bool = True) -> Path:
        path = self.root / (f"{basename}{next(self._count)}" if numbered else basename)
        path.mkdir()
        return path


@contextlib.contextmanager
def _fixtures(spec: Callable, names: list[str], impl: NotebookModule, device: str | None):
    """The fixtures a spec asks for, torn down afterwards."""
    namespace = getattr(inspect.unwrap(spec), "__globals__", {})
    with contextlib.ExitStack() as stack:
        values: dict[str, Any] = {}

        def get(name: str) -> Any:
            if name not in values:
                values[name] = make(name)
            return values[name]

        def make(name: str) -> Any:
            if name == "impl":
                return impl
            if name == "device":
                return device
            if name == "tmp_path":
                return Path(stack.enter_context(tempfile.TemporaryDirectory()))
            if name == "tmp_path_factory":
                return _TempPathFactory(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            if name == "monkeypatch":
                import pytest

                return stack.enter_context(pytest.MonkeyPatch.context())
            definition = namespace.get(name)
            if not hasattr(definition, "_get_wrapped_function"):
                raise SpecFailed(f"{spec.__name__} needs the fixture {name!r}, which is missing")
            fn = definition._get_wrapped_function()
            value = fn(**{p: get(p) for p in inspect.signature(fn).parameters})
            if inspect.isgenerator(value):
                generator, value = value, next(value)
                stack.callback(lambda: next(generator, None))
            return value

        yield {name: get(name) for name in names}


def run_spec(spec: Callable, impl: NotebookModule) -> None:
    """Run a public spec the way pytest does: every parametrisation, on every device."""
    name = getattr(spec, "__name__", "spec")
    wanted = list(inspect.signature(spec).parameters)
    runs = passed = 0
    for parts, arguments, marks in _parametrizations(spec):
        skip = _skip_reason([*getattr(spec, "pytestmark", []), *marks])
        for device in _devices() if "device" in wanted else [None]:
            label = f"{name}[{'-'.join([*parts, *([device] if device else [])])}]"
            runs += 1
            if skip:
                print(f"- {label} skipped: {skip}")
                continue
            fixtures = [n for n in wanted if n not in arguments]
            try:
                with _quiet(), _fixtures(spec, fixtures, impl, device) as supplied:
                    spec(**arguments, **supplied)
            except Exception as err:
                if not _teaches(err):  # a crash in the learner's code: show its traceback
                    err.add_note(f"(in the public spec {label})")
                    raise
                raise _failure(label, err) from None
            passed += 1
    print(f"✓ {name}: {passed} of {runs} runs passed")


def _teaches(err: BaseException) -> bool:
    """A failure whose message says it all (no traceback needed): a spec's verdict, or the
    stub's NotImplementedError. A bare `assert` keeps its traceback, which shows the line."""
    return isinstance(err, NotImplementedError) or (
        isinstance(err, AssertionError) and bool(str(err))
    )


def _failure(label: str, err: BaseException) -> SpecFailed:
    notes = "\n".join(getattr(err, "__notes__", []))
    kind = "" if isinstance(err, AssertionError) else f"{type(err).__name__}: "
    return SpecFailed(f"{label} failed:\n{kind}{err}" + (f"\n{notes}" if notes else ""))


_CASES: dict[str, ModuleType] = {}


def _cases_module(slug: str, source: str) -> ModuleType:
    from graders.impl import execute

    key = _digest(source)
    if key not in _CASES:
        _CASES[key] = execute(Path(f"<hidden cases of {slug}>"), f"ladder.nb.{slug}", source)
    return _CASES[key]


def hidden_case(impl: NotebookModule, payload: str) -> None:
    """Grade one hidden case on the notebook's code; raise HiddenCaseFailed when it fails."""
    try:
        meta, expected = _unpack(payload)
        case = _cases_module(meta["slug"], meta["cases"]).CASES[meta["index"]]
    except Exception as err:
        raise HiddenCaseError(f"this hidden case cannot be read: {err!r}") from None
    if case.name != meta["name"]:
        raise HiddenCaseError(f"hidden case {meta['index']} is {case.name!r}, not {meta['name']!r}")
    inputs = case.inputs(case.seed)
    if not _same_fingerprint(fingerprint(inputs), meta["fingerprint"]):
        raise HiddenCaseError(
            f"the inputs of hidden case {case.name!r} come out differently here than where "
            "the notebook was built (another torch or numpy?); rebuild it with `ladder notebooks`"
        )
    verdict = _judge(case, impl, inputs, expected)
    if verdict:
        raise HiddenCaseFailed(f"{case.name}: {verdict}")
    print(f"✓ hidden case: {case.name}")


def _judge(case: Any, impl: NotebookModule, inputs: dict, expected: Any) -> str | None:
    """What is wrong with the notebook's output on one case, or None."""
    from graders import plain
    from graders.grade import compare

    try:
        with _quiet(), tempfile.TemporaryDirectory() as tmp:
            plain.dump(case.call(impl, **inputs), Path(tmp), "actual")  # as the sandbox returns
            actual = plain.load(Path(tmp), "actual")
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    try:
        if case.compare:
            return case.compare(actual, expected, case.inputs(case.seed))
        actual, expected, verdict = _match_samples(actual, expected)
        return verdict or compare(actual, expected, case, "cpu")
    except Exception as err:
        return f"the output could not be compared: {type(err).__name__}: {err}"


# ---------------------------------------------------------------------------------------------
# From notebooks back to modules, for `ladder grade` and Gradescope.


def read_notebook(path: Path) -> dict:
    """A notebook's JSON, refusing what is not one (a learner's file: trust nothing)."""
    if not path.is_file() or path.is_symlink():
        raise NotebookError(f"{path.name} is not a regular file")
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise NotebookError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES} bytes")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise NotebookError(f"{path.name} is not a notebook (JSON): {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError(f"{path.name} is not a notebook: it has no list of cells")
    return data


def extract_module(notebook: dict) -> tuple[str, str]:
    """(slug, module source) from a learner's copy of a ladder notebook: its given and answer
    cells in order, with IPython magics (`%...`, `!...`) turned into `pass`."""
    found: list[tuple[str, str]] = []
    for cell in notebook.get("cells", []):
        meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
        grade_id = (meta.get("nbgrader") or {}).get("grade_id") if isinstance(meta, dict) else None
        match = MODULE_CELL.match(grade_id) if isinstance(grade_id, str) else None
        if match and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            if isinstance(source, str):
                found.append((match[1], _without_magics(source)))
    slugs = {slug for slug, _ in found}
    if len(slugs) != 1:
        raise NotebookError(
            "not a notebook of `ladder notebooks`: "
            + ("it has no answer cells" if not slugs else f"it mixes {sorted(slugs)}")
        )
    return slugs.pop(), "\n\n\n".join(source.strip("\n") for _, source in found) + "\n"


def _without_magics(source: str) -> str:
    lines = []
    for line in source.splitlines():
        body = line.lstrip()
        if body.startswith(("%", "!")):
            line = f"{line[: len(line) - len(body)]}pass  # notebook magic: {body}"
        lines.append(line)
    return "\n".join(lines)


def extract_course(course: Path, out: Path) -> list[Path]:
    """nbgrader's `submitted/<student>/<assignment>/*.ipynb` -> `out/<student>/<slug>.py`: a
    folder of submissions for `ladder grade`. Returns the modules written."""
    submitted = course / "submitted"
    if not submitted.is_dir():
        raise NotebookError(f"{course} has no submitted/ folder (nbgrader's collected notebooks)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NotebookError(f"{out} exists and is not an empty folder; choose a new one")
    written = []
    for path in sorted(submitted.glob("*/*/*.ipynb")):
        student = path.parent.parent.name
        try:
            slug, source = extract_module(read_notebook(path))
        except NotebookError as err:
            print(f"skipped {path.relative_to(course)}: {err}", file=sys.stderr)
            continue
        target = out / student / f"{slug}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
        written.append(target)
    return written


__all__ = [
    "NotebookError",
    "NotebookModule",
    "build",
    "extract_course",
    "extract_module",
    "hidden_case",
    "run_spec",
    "write_course",
]
