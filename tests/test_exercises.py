"""What every exercise must prove, generically: adding a folder to the ladder adds its checks.

- the public specs pass on the reference and fail, as failures, on the stub;
- every committed stub and README API block equals what `ladder stubs` generates;
- every mutant fails at least one public spec;
- the README has the sections, hints and paper the design asks for.
"""

from __future__ import annotations

import re

import pytest

from graders import impl, readme, runner, stubs
from graders.curriculum import all_exercises, kit_root

ROOT = kit_root()
EXERCISES = [ex for ex in all_exercises(checkpoints=False)]
SLUGS = [ex.slug for ex in EXERCISES]
RUNGS = [ex.slug for ex in all_exercises()]
SECTIONS = [
    "The innovation",
    "Why it mattered",
    "The math",
    "Shapes and conventions",
    "Your task",
    "API",
    "Hints",
    "Tolerances and why",
    "What the grader checks",
]


def spec_names(slug: str) -> list[str]:
    source = (ROOT / "exercises" / slug / f"test_{slug}.py").read_text()
    return re.findall(r"^def (test_\w+)", source, re.M)


def test_curriculum_and_folders_agree():
    on_disk = {
        p.name for p in (ROOT / "exercises").iterdir() if p.is_dir() and p.name[0] not in "._"
    }
    assert on_disk == set(RUNGS), "every exercises/<slug>/ must be in curriculum.toml and back"
    for slug in SLUGS:
        for path in [
            f"exercises/{slug}/README.md",
            f"exercises/{slug}/{slug}.py",
            f"exercises/{slug}/test_{slug}.py",
            f"solutions/{slug}/{slug}.py",
            f"solutions/{slug}/mutants.py",
            f"solutions/{slug}/cases.py",
        ]:
            assert (ROOT / path).is_file(), f"{path} is missing"


def test_stubs_are_in_sync():
    stale = stubs.sync(check=True)
    assert not stale, f"stale (run `ladder stubs`): {[str(p.relative_to(ROOT)) for p in stale]}"


@pytest.mark.parametrize("slug", RUNGS)
def test_specs_pass_on_the_reference(slug):
    specs = runner.run_specs([slug], impl="solutions")[slug]
    bad = [
        f"{s.name}: {s.outcome}: {s.message[-400:]}"
        for s in specs
        if s.outcome not in ("passed", "skipped")
    ]
    assert not bad, "\n".join(bad)
    assert any(s.outcome == "passed" for s in specs)


@pytest.mark.parametrize("slug", RUNGS)
def test_specs_fail_on_the_stub_as_failures(slug):
    specs = runner.run_specs([slug], impl="exercises")[slug]
    assert {s.name for s in specs} == set(spec_names(slug)), "every spec must run on the stub"
    bad = [f"{s.name}: {s.outcome}: {s.message[:300]}" for s in specs if not s.not_started]
    assert not bad, "each spec must fail with the stub's NotImplementedError:\n" + "\n".join(bad)


def wrong_answers(slug: str) -> list[str]:
    """The mutants that give wrong answers (a slow mutant's are right: a speed case catches it)."""
    return [name for name, m in impl.mutants(slug).items() if not m.slow]


@pytest.mark.parametrize("slug", [slug for slug in SLUGS if wrong_answers(slug)])
def test_every_mutant_is_caught_by_a_public_spec(slug):
    caught = runner.caught_mutants(slug, wrong_answers(slug))
    missed = [name for name, hit in caught.items() if not hit]
    assert not missed, f"no public spec of {slug} catches the mutants {missed}"


@pytest.mark.parametrize("slug", SLUGS)
def test_enough_mutants_with_diagnoses(slug):
    found = impl.mutants(slug)
    assert len(found) >= 4, f"{slug} has {len(found)} mutants; the design asks for at least four"
    for m in found.values():
        assert m.diagnosis and "\n" not in m.diagnosis, f"{m.name} needs a one-line diagnosis"


@pytest.mark.parametrize("slug", [slug for slug in RUNGS if slug not in SLUGS])
def test_checkpoint_readme_gives_a_hint_per_spec(slug):
    assert sorted(readme.hints(slug)) == sorted(spec_names(slug))


@pytest.mark.parametrize("slug", SLUGS)
def test_readme_teaches(slug):
    text = (ROOT / "exercises" / slug / "README.md").read_text()
    missing = [s for s in SECTIONS if not readme.section(text, s).strip()]
    assert not missing, f"README of {slug} lacks sections {missing}"
    ex = next(e for e in EXERCISES if e.slug == slug)
    header = text.split("## ")[0]
    assert ex.paper in header and str(ex.year) in header, "the header names the paper and year"
    hints, specs = readme.hints(slug), spec_names(slug)
    assert sorted(hints) == sorted(specs), (
        f"hints without specs: {sorted(set(hints) - set(specs))}; "
        f"specs without hints: {sorted(set(specs) - set(hints))}"
    )


def test_the_readme_ladder_table_lists_every_exercise():
    table = readme.section((ROOT / "README.md").read_text(), "The ladder")
    for ex in EXERCISES:
        assert f"| `{ex.slug}` |" in table and str(ex.year) in table, (
            f"{ex.slug} is not in the table"
        )


def test_a_mutant_that_fails_nothing_is_reported_missed():
    assert runner.caught_mutants("attention", ["no_such_mutant"]) == {"no_such_mutant": False}


@pytest.mark.parametrize("slug", [slug for slug in RUNGS if slug not in SLUGS])
def test_checkpoint_fails_when_any_piece_is_a_stub(slug):
    uses = next(ex.uses for ex in all_exercises() if ex.slug == slug)
    stubs = [f"{piece}:stub" for piece in uses]
    missed = [name for name, hit in runner.caught_mutants(slug, stubs).items() if not hit]
    assert not missed, f"{slug} passes although these pieces are stubs: {missed}"
