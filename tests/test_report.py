"""The grade writers: files where expected and nowhere else, valid Gradescope JSON, safe text."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import pytest

from graders import report
from graders.results import CaseResult, LearnerResult

HOSTILE = [
    "../../etc",
    "=cmd|' /C calc'!A0",
    "<script>alert(1)</script>",
    "Zoë 李雷",
    "[click](http://evil.example) *bold* `code` | pipe",
    "a/b\\c\nd\x00e\u202eevil",
    "report.html",
    "..",
    "CON",
    "Alice",
]
NAMES = ["alice", "bob", *HOSTILE]
MISTAKE = "softmax taken over the query axis"
SLOW = "too slow: up to 4x earns the speed points"  # a right answer lost its speed points


def _cases(i: int) -> list[CaseResult]:
    """attention: 3 cases (a diagnosed mistake for odd i), one with speed; bpe for even i."""
    cases = [
        CaseResult("attention", "small", 2.0, 2.0),
        CaseResult(
            "attention",
            "causal",
            0.0 if i % 2 else 2.0,
            2.0,
            "output differs at [0, 3]: expected 0.12, got 0.31" if i % 2 else "",
            f"matches mutant softmax_queries: {MISTAKE}" if i % 2 else "",
        ),
        CaseResult(
            "attention", "long", 1.5, 1.5, SLOW if i >= 3 else "", "", 0.8 + i, float(i < 3), 1.0
        ),
    ]
    if i % 2 == 0:
        cases.append(CaseResult("bpe", "roundtrip", 1 / 3, 1.0, "line one\n```\nline <b>three</b>"))
    return cases


def _class() -> list[LearnerResult]:
    return [
        LearnerResult(name, _cases(i), ["archive held ../evil; skipped"] if i == 2 else [])
        for i, name in enumerate(NAMES)
    ]


EXERCISES = ["attention", "bpe", "rope"]  # nobody attempted rope
BOUNDS = {("attention", "long"): 4.0}


@pytest.fixture
def grades(tmp_path: Path) -> Path:
    out = tmp_path / "grades"
    report.write_all(_class(), EXERCISES, out, speed_bounds=BOUNDS)
    return out


# ---------------------------------------------------------------- folder names and layout


def test_dirnames_are_safe_unique_and_stable():
    names = [*NAMES, "alice.", "ALICE", "con.txt", "gradebook.csv", "journal.jsonl", "", "x" * 300]
    dirs = [report.learner_dirname(n) for n in names]
    assert len(set(dirs)) == len(names)
    assert len({d.casefold() for d in dirs}) == len(names)  # case-insensitive file systems
    for d in dirs:
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}", d), d
        assert d not in report.RESERVED_NAMES and not d.endswith(".")
    assert report.learner_dirname("alice") == "alice"
    assert dirs == [report.learner_dirname(n) for n in names]


def test_files_where_expected_and_nowhere_else(grades: Path):
    tmp = grades.parent
    found = {p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()}
    expected = {f"grades/{f}" for f in report.TOP_LEVEL_FILES}
    for name in NAMES:
        expected |= {f"grades/{report.learner_dirname(name)}/{f}" for f in report.LEARNER_FILES}
    assert found == expected
    mapping = json.loads((grades / "learners.json").read_text())
    assert sorted(mapping.values()) == sorted(NAMES)
    assert all(report.learner_dirname(name) == d for d, name in mapping.items())


def test_a_planted_symlink_is_not_followed(tmp_path: Path):
    outside, out = tmp_path / "outside", tmp_path / "grades"
    outside.mkdir()
    out.mkdir()
    (out / "alice").symlink_to(outside, target_is_directory=True)
    (out / "report.html").symlink_to(outside / "stolen.html")
    report.write_all(_class()[:1], EXERCISES, out)
    assert list(outside.iterdir()) == []
    assert (out / "alice" / "feedback.md").is_file() and not (out / "alice").is_symlink()


def test_learners_graded_twice_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="twice"):
        report.write_all(_class()[:1] * 2, EXERCISES, tmp_path)


# ---------------------------------------------------------------- feedback


def _feedback(grades: Path, name: str, ext: str) -> str:
    return (grades / report.learner_dirname(name) / f"feedback.{ext}").read_text("utf-8")


def test_feedback_json_totals_add_up(grades: Path):
    for i, name in enumerate(NAMES):
        data = json.loads(_feedback(grades, name, "json"))
        expected = LearnerResult(name, _cases(i)).total
        assert data["score"] == pytest.approx(expected[0], abs=1e-3)
        assert data["max_score"] == pytest.approx(expected[1], abs=1e-3)
        assert data["score"] == pytest.approx(sum(e["score"] for e in data["exercises"]), abs=1e-3)
        for ex in data["exercises"]:
            assert ex["score"] == pytest.approx(sum(c["score"] for c in ex["cases"]), abs=1e-3)
        long = next(c for c in data["exercises"][0]["cases"] if c["case"] == "long")
        assert long["speed_ratio"] == pytest.approx(0.8 + i) and long["speed_bound"] == 4.0
        causal = data["exercises"][0]["cases"][1]
        assert causal["mistake"] == (MISTAKE if i % 2 else "")


def test_feedback_markdown_teaches_and_escapes(grades: Path):
    text = _feedback(grades, "bob", "md")
    assert f"Your output matches a known mistake: {MISTAKE}" in text
    assert "matches mutant" not in text  # the internal mutant name stays internal
    assert "Speed: 1 / 1" in text and "1.8× the reference's time; up to 4× allowed" in text
    assert "**Total: 4.5 / 6.5**" in text and "| attention | 4.5 / 6.5 |" in text
    noted = _feedback(grades, NAMES[2], "md")
    assert noted.index("**Note:**") < noted.index("**Total")
    assert "````text" in noted and "line <b>three</b>" in noted  # verbatim inside a long fence
    assert "&lt;script&gt;" in _feedback(grades, "<script>alert(1)</script>", "md")
    link = _feedback(grades, HOSTILE[4], "md")
    assert r"\[click\](http://evil.example) \*bold\* \`code\` \| pipe" in link
    control = _feedback(grades, HOSTILE[5], "md")
    assert f"Speed: 0 / 1 ({SLOW})" in control and SLOW not in control.split("Speed:")[0]
    assert "\x00" not in control and "\u202e" not in control and "# Feedback for a/b" in control


# ---------------------------------------------------------------- Gradescope

FORMATS = ["text", "html", "simple_format", "md", "ansi"]
VISIBILITY = ["hidden", "after_due_date", "after_published", "visible"]
TEST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "score": {"type": "number"},
        "max_score": {"type": "number"},
        "status": {"enum": ["passed", "failed"]},
        "name": {"type": "string"},
        "name_format": {"enum": FORMATS},
        "number": {"type": "string"},
        "output": {"type": "string"},
        "output_format": {"enum": FORMATS},
        "tags": {"type": "array", "items": {"type": "string"}},
        "visibility": {"enum": VISIBILITY},
        "extra_data": {"type": "object"},
    },
}
# Gradescope's results.json, from https://gradescope-autograders.readthedocs.io/en/latest/specs/
RESULTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number", "minimum": 0},
        "output": {"type": "string"},
        "output_format": {"enum": FORMATS},
        "test_output_format": {"enum": FORMATS},
        "test_name_format": {"enum": FORMATS},
        "visibility": {"enum": VISIBILITY},
        "stdout_visibility": {"enum": VISIBILITY},
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": TEST_SCHEMA},
        "leaderboard": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "value"]},
        },
    },
}
TYPES = {"object": dict, "array": list, "string": str, "number": (int, float), "boolean": bool}


def _errors(value: object, schema: dict, where: str = "$") -> list[str]:
    """The subset of JSON Schema that RESULTS_SCHEMA uses (the venv may lack jsonschema)."""
    errors = []
    kind = schema.get("type")
    if kind and (not isinstance(value, TYPES[kind]) or (kind == "number" and value is True)):
        return [f"{where}: not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: below {schema['minimum']}")
    if isinstance(value, dict):
        errors += [f"{where}: lacks {k}" for k in schema.get("required", []) if k not in value]
        if "anyOf" in schema and all(_errors(value, s, where) for s in schema["anyOf"]):
            errors.append(f"{where}: matches none of anyOf")
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                errors += _errors(item, props[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected {key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _errors(item, schema["items"], f"{where}[{i}]")
    return errors


def _validate(path: Path) -> dict:
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    data = json.loads(path.read_text("utf-8"), parse_constant=no_constants)
    assert _errors(data, RESULTS_SCHEMA) == []
    try:  # the real validator too, where installed
        import jsonschema
    except ImportError:
        return data
    jsonschema.validate(data, RESULTS_SCHEMA)
    return data


def test_the_validator_catches_mistakes():
    assert _errors({"tests": [{"score": "1", "status": "ok"}], "oops": 1}, RESULTS_SCHEMA)
    assert _errors({"output": "no score, no tests"}, RESULTS_SCHEMA)


def test_gradescope_results_follow_the_spec_and_add_up(grades: Path):
    for i, name in enumerate(NAMES):
        data = _validate(grades / report.learner_dirname(name) / "results.json")
        score, top = LearnerResult(name, _cases(i)).total
        tests = data["tests"]
        assert data["score"] == pytest.approx(score, abs=1e-3)
        assert sum(t["score"] for t in tests) == pytest.approx(score, abs=1e-3)
        assert sum(t["max_score"] for t in tests) == pytest.approx(top, abs=1e-3)
        assert all(0 <= t["score"] <= t["max_score"] for t in tests)
        assert data["stdout_visibility"] == "hidden"
        speed = [t for t in tests if t["name"].endswith("(speed)")]
        assert [t["name"] for t in speed] == ["attention: long (speed)"]
        causal = next(t for t in tests if t["name"] == "attention: causal")
        assert (MISTAKE in causal["output"]) == bool(i % 2)
        assert causal["status"] == ("failed" if i % 2 else "passed")
        long = next(t for t in tests if t["name"] == "attention: long")
        assert long["output"] == "Correct." and long["status"] == "passed"
        assert (speed[0]["output"] == SLOW) == (i >= 3)
        assert speed[0]["status"] == ("failed" if i >= 3 else "passed")


def test_gradescope_options(tmp_path: Path):
    result = _class()[0]
    data = report.gradescope_results(result, visibility="after_published", execution_time=12.6)
    assert data["execution_time"] == 13
    assert {t["visibility"] for t in data["tests"]} == {"after_published"}
    with pytest.raises(ValueError):
        report.gradescope_results(result, visibility="public")


def test_gradescope_error_is_valid(tmp_path: Path):
    path = tmp_path / "missing" / "results.json"
    report.gradescope_error("sandbox died: \x00 <oops>", path)
    data = _validate(path)
    assert data["score"] == 0 and data["output"] == "sandbox died:  <oops>"


def test_a_failing_write_still_leaves_results_json(tmp_path: Path):
    path = tmp_path / "results.json"
    with pytest.raises(ValueError):
        report.write_gradescope(_class()[0], path, visibility="nobody")
    assert _validate(path)["score"] == 0


def test_non_finite_numbers_never_reach_json(tmp_path: Path):
    case = CaseResult("attention", "long", float("nan"), 1.0, speed_ratio=float("inf"))
    result = LearnerResult("nan", [case])
    report.write_gradescope(result, tmp_path / "results.json")
    report.write_feedback(result, tmp_path)
    _validate(tmp_path / "results.json")
    data = json.loads((tmp_path / "nan" / "feedback.json").read_text(), parse_constant=float)
    assert data["exercises"][0]["cases"][0]["speed_ratio"] is None
    assert data["score"] == 0.0


# ---------------------------------------------------------------- gradebook


def test_gradebook_parses_adds_up_and_is_not_a_formula(grades: Path):
    with open(grades / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, top, *learners = rows
    assert header == ["learner", *EXERCISES, "total", "folder"]
    assert top[:5] == [report.MAX_ROW, "6.5", "1", "", "7.5"]
    assert len(learners) == len(NAMES)
    by_name = {row[0]: row for row in learners}
    assert "'=cmd|' /C calc'!A0" in by_name and "=cmd|' /C calc'!A0" not in by_name
    assert all(cell[:1] not in "=+-@" for row in rows for cell in row if cell)
    assert by_name["bob"][1:5] == ["4.5", "", "", "4.5"]  # bob has no bpe: empty, not 0
    assert by_name["alice"][2] == "0.3333"
    for row in learners:
        cells = [float(c) for c in row[1:4] if c]
        assert float(row[4]) == pytest.approx(sum(cells), abs=1e-3)
    keys = [row[0].lstrip("'") for row in learners]
    assert keys == sorted(keys, key=lambda s: (s.casefold(), s))


# ---------------------------------------------------------------- class report


def _svgs(page: str) -> list[str]:
    return re.findall(r'<svg class="chart" data-chart="(\w+)"', page)


def test_class_report_is_self_contained_escaped_and_charted(grades: Path):
    page = (grades / "report.html").read_text("utf-8")
    lowered = page.lower()
    for bad in ("<script", "src=", "<link", "url(", "javascript:", "@import"):
        assert bad not in lowered, bad
    for name in HOSTILE:
        if set(name) & set("<>&\"'"):
            assert name not in page
    assert html.escape("<script>alert(1)</script>") in page
    assert page.count("<svg") == page.count("</svg>") == len(_svgs(page))
    # totals; attention: scores, mistakes, speed; bpe: scores (no diagnosis, no speed); rope: none
    assert _svgs(page) == ["totals", "scores", "mistakes", "speed", "scores"]
    assert "Nobody attempted this exercise." in page
    assert "bound 4×" in page and MISTAKE in page
    assert page.count("<tr>") == len(NAMES) + 1


def test_an_empty_class(tmp_path: Path):
    report.write_all([], EXERCISES, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert _svgs(page) == [] and "No learner was graded." in page
    assert page.count("Nobody attempted this exercise.") == len(EXERCISES)
    rows = list(csv.reader((tmp_path / "gradebook.csv").open(newline="")))
    assert rows == [
        ["learner", *EXERCISES, "total", "folder"],
        [report.MAX_ROW, "", "", "", "0", ""],
    ]
    assert json.loads((tmp_path / "learners.json").read_text()) == {}


def test_no_speed_data_and_no_mistakes(tmp_path: Path):
    results = [LearnerResult("solo", [CaseResult("attention", "small", 1.0, 2.0, "off by one")])]
    report.write_class_report(results, [], tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert _svgs(page) == ["totals", "scores"]
    assert "No speed data." in page and "No failure matched a known mistake." in page


def test_mistake_strips_the_mutant_prefix():
    assert report.mistake("matches mutant softmax_rows: softmax over rows") == "softmax over rows"
    assert report.mistake("matches: scale by d") == "scale by d"
    assert report.mistake("plain diagnosis") == "plain diagnosis"
