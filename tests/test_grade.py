"""Grading proves itself: the reference earns full marks, every mutant is caught and named,
a killed run resumes, shards merge, and the learners' release leaks nothing."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_ladder

from graders import demo, grade, impl
from graders.cases import Case
from graders.curriculum import all_exercises, pieces
from graders.release import release

GRADED = [ex.slug for ex in all_exercises() if grade.hidden_cases(ex.slug)]
MUTANTS = [(slug, m.name) for slug in GRADED for m in impl.mutants(slug).values() if not m.slow]
SLOW = [(slug, m.name) for slug in GRADED for m in impl.mutants(slug).values() if m.slow]


@functools.cache
def oracle_of(slug: str) -> grade.Oracle:
    """One oracle per exercise, so the reference's outputs are computed once for all mutants."""
    return grade.Oracle(slug, "cpu")


def graded(journal: Path) -> int:
    """How many (learner, attention) results the journal holds, duplicates included."""
    if not journal.is_file():
        return 0
    entries = []
    for line in journal.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return sum(e.get("exercise") == "attention" for e in entries)


def gradebook(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv", newline="") as f:
        return {row["learner"]: row for row in csv.DictReader(f)}


def test_every_exercise_has_hidden_cases():
    missing = [ex.slug for ex in all_exercises(checkpoints=False) if ex.slug not in GRADED]
    assert not missing, f"exercises without hidden cases: {missing}"


def test_speed_rounds_stop_only_when_the_rest_could_not_change_the_verdict():
    rng = random.Random(0)
    for _ in range(5000):
        mine = [rng.choice([1, 2, 4, 8]) * rng.random() for _ in range(5)]
        theirs = [rng.random() for _ in range(5)]
        bound = rng.choice([1.5, 3.0, 5.0])
        final = statistics.median(mine) / statistics.median(theirs) <= bound
        early = next(
            (
                v
                for k in range(1, 6)
                if (v := grade._settled(mine[:k], theirs[:k], 5, bound)) is not None
            ),
            final,
        )
        assert early == final, (mine, theirs, bound)
    assert grade._settled([1.0, 1.0], [1.0, 1.0], 5, 3.0) is None  # two runs of five decide nothing
    assert grade._settled([1.0] * 3, [1.0] * 3, 5, 3.0) is True
    assert grade._settled([9.0] * 3, [1.0] * 3, 5, 3.0) is False


def test_a_case_that_needs_what_the_machine_lacks_leaves_the_grade():
    def case(*requires: str) -> Case:
        return Case("c", call=len, inputs=dict, requires=requires)

    assert case().runs_on("cpu") and case("torch").runs_on("cpu")
    assert not case("cuda").runs_on("cpu") and case("cuda").runs_on("cuda")
    assert not case("a_package_nobody_installed").runs_on("cuda")
    every = grade.hidden_cases("flash_attention", device=None)
    needs_gpu = [c.name for c in every if "cuda" in c.requires]
    assert needs_gpu, "flash_attention's Triton speed case should require cuda"
    assert not set(needs_gpu) & {c.name for c in grade.hidden_cases("flash_attention", "cpu")}


@pytest.mark.parametrize("slug", GRADED)
def test_the_reference_graded_as_a_learner_gets_full_marks(slug):
    lost = [f"{c.case}: {c.message}" for c in grade_pieces(slug) if c.score != c.max_score]
    assert not lost, "\n".join(lost)


def grade_pieces(slug: str, **impls: str) -> list:
    """Grade `slug` (an exercise or a checkpoint) on the references, or on `piece=impl` files."""
    options = grade.Options(exercises=(slug,))
    pool = grade.ReferencePool(options)
    modules = {p: impl.module_path(p, impls.get(p, "solutions")) for p in pieces(slug)}
    try:
        return grade.grade_learner(modules, [slug], {slug: oracle_of(slug)}, pool, options)[slug]
    finally:
        pool.close()


def test_a_checkpoint_is_graded_on_the_learners_own_pieces():
    cases = grade_pieces("checkpoint_1", relu="exercises")
    assert cases and all(c.score == 0 for c in cases), [(c.case, c.score) for c in cases]
    assert all("kaiming_normal: not implemented yet" in c.message for c in cases), cases[0].message


@pytest.mark.parametrize(("slug", "name"), MUTANTS, ids=[f"{s}:{n}" for s, n in MUTANTS])
def test_every_mutant_fails_a_hidden_case_and_is_diagnosed_by_name(slug, name):
    oracle = oracle_of(slug)
    failed, named = [], []
    for case in grade.hidden_cases(slug):
        output = oracle.output(case, case.seed, name)
        verdict = (
            f"raised {output!r}"
            if isinstance(output, Exception)
            else oracle.judge(case, output, case.seed)
        )
        if verdict:
            failed.append(case.name)
            diagnosis = (
                oracle.diagnose_error(case, f"{type(output).__name__}: {output}")
                if isinstance(output, Exception)
                else oracle.diagnose(case, output)
            )
            if diagnosis.startswith(f"matches {name}:"):
                named.append(case.name)
    assert failed, f"no hidden case of {slug} catches mutant {name}"
    assert named, f"mutant {name} fails {failed} but the diagnosis never names it"


@pytest.mark.parametrize(("slug", "name"), SLOW, ids=[f"{s}:{n}" for s, n in SLOW])
def test_a_slow_mutant_is_right_but_loses_the_speed_points(slug, name, tmp_path):
    module = tmp_path / f"{slug}.py"
    module.write_text(demo.mutant_source(slug, name))
    options = grade.Options(exercises=(slug,))
    pool = grade.ReferencePool(options)
    try:
        cases = grade.grade_module(module, slug, oracle_of(slug), pool, options)
    finally:
        pool.close()
    assert all(c.points == c.max_points for c in cases), [c.message for c in cases if c.message]
    slow = [c.case for c in cases if c.speed_points < c.max_speed_points]
    assert slow, f"{slug}:{name} keeps every speed point: {[c.speed_ratio for c in cases]}"


@pytest.fixture(scope="module")
def small_class(tmp_path_factory) -> Path:
    """Five learners on attention: the reference, the stub, a known mistake, a missing file, and
    one who tries to kill the grader."""
    folder = tmp_path_factory.mktemp("class")
    sources = {
        "ada": impl.module_path("attention", "solutions").read_text(),
        "grace": impl.module_path("attention", "exercises").read_text(),
        "alan": demo.mutant_source("attention", "heads_not_transposed"),
        "mallory": (ROOT / "tests" / "hostile" / "kill_parent.py").read_text(),
    }
    for learner, source in sources.items():
        (folder / learner).mkdir()
        (folder / learner / "attention.py").write_text(source)
    (folder / "edsger").mkdir()
    (folder / "edsger" / "notes.txt").write_text("nothing here")
    return folder


def test_grade_a_class_and_name_the_mistake(small_class, tmp_path):
    result = run_ladder(
        "grade", str(small_class), "--out", str(tmp_path), "--exercise", "attention"
    )
    assert result.returncode == 0, result.stderr
    book = gradebook(tmp_path)
    top = float(book["(max points)"]["total"])
    assert float(book["ada"]["total"]) == top
    assert float(book["grace"]["total"]) == 0
    assert 0 < float(book["alan"]["total"]) < top
    assert float(book["edsger"]["total"] or 0) == 0
    assert float(book["mallory"]["total"]) == 0  # and ada, graded beside, keeps full marks
    feedback = (tmp_path / "alan" / "feedback.md").read_text()
    assert "heads are split with a reshape and no transpose" in feedback
    assert (tmp_path / "report.html").is_file() and (tmp_path / "ada" / "results.json").is_file()


def test_a_killed_run_resumes_without_regrading_or_losing(small_class, tmp_path):
    command = [
        sys.executable,
        "-m",
        "graders.cli",
        "grade",
        str(small_class),
        "--out",
        str(tmp_path),
        "--exercise",
        "attention",
    ]
    first = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    journal = tmp_path / "journal.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and graded(journal) < 1:
        time.sleep(0.2)
    os.killpg(first.pid, 9)  # mid-run, with at least one learner graded
    first.wait()
    assert 1 <= graded(journal) < 5
    assert subprocess.run(command, cwd=ROOT, capture_output=True).returncode == 0
    assert graded(journal) == 5, "each learner graded once, none lost"
    assert float(gradebook(tmp_path)["ada"]["total"]) == float(
        gradebook(tmp_path)["(max points)"]["total"]
    )


def test_shards_merge_into_the_whole_class(small_class, tmp_path):
    whole = tmp_path / "whole"
    assert (
        run_ladder(
            "grade", str(small_class), "--out", str(whole), "--exercise", "attention"
        ).returncode
        == 0
    )
    for k in (1, 2):
        part = tmp_path / f"part{k}"
        assert (
            run_ladder(
                "grade",
                str(small_class),
                "--out",
                str(part),
                "--exercise",
                "attention",
                "--shard",
                f"{k}/2",
            ).returncode
            == 0
        )
        assert len(gradebook(part)) - 1 == (3 if k == 1 else 2)  # every other learner; max row
    merged = tmp_path / "merged"
    assert (
        run_ladder(
            "merge", str(tmp_path / "part1"), str(tmp_path / "part2"), "--out", str(merged)
        ).returncode
        == 0
    )
    totals = {name: row["total"] for name, row in gradebook(merged).items()}
    assert totals == {name: row["total"] for name, row in gradebook(whole).items()}


def test_bad_input_to_grade_gets_a_clear_error(tmp_path):
    missing = run_ladder("grade", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    unknown = run_ladder(
        "grade", str(tmp_path), "--out", str(tmp_path / "out"), "--exercise", "nosuch"
    )
    assert unknown.returncode == 2 and "no exercise named 'nosuch'" in unknown.stderr
    (tmp_path / "empty").mkdir()
    empty = run_ladder("grade", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert empty.returncode == 1 and "no submissions found" in empty.stderr
    for result in (missing, unknown, empty):
        assert "Traceback" not in result.stderr


def test_the_release_holds_no_solution_and_no_hidden_case(tmp_path):
    out = tmp_path / "kit"
    files = release(out)
    names = {p.relative_to(out).as_posix() for p in files}
    assert not any(n.startswith(("solutions/", "tests/")) for n in names)
    assert not any(
        n.startswith("exercises/") and n.endswith(("/cases.py", "/mutants.py")) for n in names
    )
    for path in files:
        lines = {line.strip() for line in path.read_bytes().splitlines()}
        assert not lines & {b"### BEGIN SOLUTION", b"### BEGIN HIDDEN TESTS"}, path
    env = {**os.environ, "LADDER_ROOT": str(out)}
    specs = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "exercises/attention"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
    )
    assert specs.returncode == 1 and "not implemented yet" in specs.stdout
    check = subprocess.run(
        [sys.executable, "-m", "graders.cli", "check", "attention", "--hidden"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 2 and "no hidden cases" in check.stdout
