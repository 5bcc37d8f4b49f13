"""`ladder`: the learner's and the instructor's command line."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from graders import readme, runner, stubs
from graders.curriculum import Exercise, UnknownExercise, all_exercises, exercise, pieces, stages


def _headline(message: str, width: int = 300) -> str:
    """The line of a failure report that says what went wrong."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    own = [line for line in lines[:3] if not line.startswith("(")]  # a report of the plugin's own
    text = " ".join(errors[:3] if errors else own)
    return text if len(text) <= width else text[: width - 1] + "…"


def _paper(ex: Exercise) -> str:
    return f"{ex.paper}, {ex.authors} ({ex.year})" if ex.paper else "stage checkpoint"


def cmd_list(args: argparse.Namespace) -> int:
    for stage in stages():
        print(f"Stage {stage.number}: {stage.title}")
        rungs = [*stage.exercises, *([stage.checkpoint] if stage.checkpoint else [])]
        for ex in rungs:
            print(f"  {ex.slug:<22} {ex.innovation}")
            print(f"  {'':<22} {_paper(ex)}")
        if not rungs:
            print("  (no exercises yet)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    ex = exercise(args.slug)
    if args.hidden:
        return _check_hidden(ex, args.impl)
    specs = runner.run_specs([ex.slug], impl=args.impl)[ex.slug]
    hints = readme.hints(ex.slug)
    ran = [s for s in specs if s.outcome != "skipped"]
    good = [s for s in ran if s.outcome == "passed"]
    print(f"{ex.slug}: {len(good)} of {len(ran)} specs pass ({ex.innovation})")
    for spec in specs:
        mark = {"passed": "✓", "skipped": "-"}.get(spec.outcome, "✗")
        print(f"  {mark} {spec.name}")
        if spec.outcome in ("failed", "error"):
            print(f"      {_headline(spec.message)}")
            if spec.name in hints and not spec.not_started:
                print(f"      hint: {hints[spec.name]}")
        elif spec.outcome == "skipped":
            print(f"      skipped: {_headline(spec.message)}")
    if runner.passed(specs):
        print(
            f"All specs pass. Next: the hidden cases (`ladder check {ex.slug} --hidden`) "
            "or the next rung (`ladder progress`)."
        )
        return 0
    print(f"Read exercises/{ex.slug}/README.md; `pytest exercises/{ex.slug}` gives full reports.")
    return 1


def _status(specs: list[runner.SpecResult]) -> str:
    if [s.name for s in specs] == ["(no result)"]:
        return specs[0].message
    ran = [s for s in specs if s.outcome != "skipped"]
    if runner.passed(specs):
        return "passed"
    if ran and all(s.not_started for s in ran):
        return "not started"
    return f"{sum(s.outcome == 'passed' for s in ran)}/{len(ran)} specs"


def cmd_progress(args: argparse.Namespace) -> int:
    rungs = all_exercises()
    results = runner.run_specs([ex.slug for ex in rungs], impl=args.impl)
    rows = [(ex, _status(results[ex.slug])) for ex in rungs]
    done = sum(status == "passed" for _, status in rows)
    if args.markdown:
        _progress_markdown(rows, done)
    elif sys.stdout.isatty():
        _progress_table(rows, done)
    else:
        for stage in stages():
            print(f"Stage {stage.number}: {stage.title}")
            for ex, status in rows:
                if ex.stage == stage.number:
                    label = f"checkpoint: {ex.innovation}" if ex.is_checkpoint else ex.slug
                    print(f"  [{'x' if status == 'passed' else ' '}] {label:<36} {status}")
        print(f"{done} of {len(rows)} rungs climbed")
    return 0


def _progress_markdown(rows: list[tuple[Exercise, str]], done: int) -> None:
    """The ladder as a Markdown table (for a GitHub job summary)."""
    titles = {s.number: s.title for s in stages()}
    print(f"## LLM Ladder: {done} of {len(rows)} rungs climbed\n")
    print("| stage | rung | innovation | status |\n| --- | --- | --- | --- |")
    for ex, status in rows:
        mark = "✅" if status == "passed" else "⬜" if status == "not started" else "🟡"
        rung = f"checkpoint {ex.stage}" if ex.is_checkpoint else f"`{ex.slug}`"
        cells = [f"{ex.stage} {titles[ex.stage]}", rung, ex.innovation, f"{mark} {status}"]
        print("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")


def _progress_table(rows: list[tuple[Exercise, str]], done: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"LLM Ladder: {done} of {len(rows)} rungs climbed")
    for column in ("stage", "rung", "innovation", "status"):
        table.add_column(column)
    titles = {s.number: s.title for s in stages()}
    for ex, status in rows:
        style = "green" if status == "passed" else "dim" if status == "not started" else "yellow"
        rung = f"checkpoint {ex.stage}" if ex.is_checkpoint else ex.slug
        table.add_row(
            f"{ex.stage} {titles[ex.stage]}", rung, ex.innovation, f"[{style}]{status}[/]"
        )
    Console().print(table)


def cmd_stubs(args: argparse.Namespace) -> int:
    for slug in args.slugs:
        exercise(slug)  # an unknown name fails here, naming the known ones
    changed = stubs.sync(check=args.check, slugs=args.slugs or None)
    for path in changed:
        state = "missing" if not path.exists() else "out of date" if args.check else "wrote"
        print(f"{state}: {path}")
    if args.check and changed:
        print("run `ladder stubs` to regenerate them from solutions/")
        return 1
    return 0


def _check_hidden(ex: Exercise, impl_root: str) -> int:
    from graders import grade, impl

    if not grade.hidden_cases(ex.slug):
        print(
            f"{ex.slug} has no hidden cases here (the learners' kit ships without them; "
            "your instructor grades with them)"
        )
        return 2
    options = grade.Options(exercises=(ex.slug,))
    pool = grade.ReferencePool(options)
    try:
        modules = {p: impl.module_path(p, impl_root) for p in pieces(ex.slug)}
        oracles = {ex.slug: grade.Oracle(ex.slug, options.device)}
        modules = {p: path for p, path in modules.items() if path.is_file()}
        cases = grade.grade_learner(modules, [ex.slug], oracles, pool, options)[ex.slug]
    finally:
        pool.close()
    score, top = sum(c.score for c in cases), sum(c.max_score for c in cases)
    print(f"{ex.slug}: {score:g} of {top:g} points on the hidden cases")
    for c in cases:
        mark = "✓" if c.score == c.max_score else "✗"
        speed = f", speed {c.speed_ratio:.2f}x the reference" if c.speed_ratio is not None else ""
        print(f"  {mark} {c.case}: {c.score:g}/{c.max_score:g}{speed}")
        for line in filter(None, [c.message, c.diagnosis and f"diagnosis: {c.diagnosis}"]):
            print(f"      {_headline(line)}")
    return 0 if score == top else 1


def _gradable(requested: list[str] | None) -> tuple[str, ...]:
    from graders.grade import has_hidden_cases

    slugs = requested or [ex.slug for ex in all_exercises()]
    for slug in slugs:
        exercise(slug)  # an unknown name fails here, naming the known ones
    return tuple(slug for slug in slugs if has_hidden_cases(slug))


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise argparse.ArgumentTypeError(f"--shard takes K/N with 1 <= K <= N, not {text!r}")
    return int(match[1]), int(match[2])


def cmd_grade(args: argparse.Namespace) -> int:
    from graders import demo, grade

    exercises = _gradable(args.exercise or (list(demo.EXERCISES) if args.demo else None))
    if args.demo:
        submissions = demo.build(
            Path(tempfile.mkdtemp(prefix="ladder-demo-")) / "class", list(exercises)
        )
        print(f"demo class: {', '.join(sorted(p.name for p in submissions.iterdir()))}")
    elif args.submissions is None:
        print("ladder grade: name the folder of submissions, or use --demo", file=sys.stderr)
        return 2
    else:
        submissions = Path(args.submissions)
        if not submissions.is_dir():
            print(f"ladder grade: {submissions} is not a folder of submissions", file=sys.stderr)
            return 2
    options = grade.Options(
        exercises=exercises, device=args.device, jobs=args.jobs, shard=args.shard
    )
    results = grade.grade_class(submissions, Path(args.out), options, progress=_progress_printer())
    if not results:
        print(f"ladder grade: no submissions found in {submissions}", file=sys.stderr)
        return 1
    _write_reports(results, list(exercises), Path(args.out))
    return 0


def _write_reports(results: list, exercises: list[str], out: Path) -> None:
    from graders import grade, report

    bounds = {
        (slug, c.name): c.speed_ratio
        for slug in exercises
        for c in grade.hidden_cases(slug, device=None)
        if c.speed_ratio
    }
    report.write_all(results, exercises, out, speed_bounds=bounds)
    for r in results:
        score, top = r.total
        print(f"  {r.learner:<24} {score:6.1f} / {top:g}")
    print(f"gradebook: {out / 'gradebook.csv'}\nclass report: {out / 'report.html'}")


def _progress_printer() -> Callable[[str, int], None]:
    """A progress bar on a terminal; a line per graded (learner, exercise) otherwise."""
    count, bar, task = 0, None, None

    def show(job: str, total: int) -> None:
        nonlocal count, bar, task
        count += 1
        if not sys.stderr.isatty():
            print(f"  graded {count}/{total}: {job}", file=sys.stderr, flush=True)
            return
        if bar is None:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task("grading", total=total)
        bar.update(task, advance=1, description=f"graded {job}")
        if count == total:
            bar.stop()

    return show


def cmd_merge(args: argparse.Namespace) -> int:
    from graders import grade

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    merged = grade.Journal(out / "journal.jsonl")
    for part in map(Path, args.parts):
        journal = grade.Journal(part / "journal.jsonl")
        if not journal.path.is_file():
            print(
                f"ladder merge: {part} holds no journal.jsonl from `ladder grade`", file=sys.stderr
            )
            return 2
        for entry in journal.entries().values():
            merged.append(entry)
    entries = merged.entries()
    learners = sorted({learner for learner, _ in entries})
    exercises = [ex.slug for ex in all_exercises() if any(e == ex.slug for _, e in entries)]
    _write_reports(grade.results_from_journal(merged, learners, exercises), exercises, out)
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from graders import notebooks

    if args.extract:
        written = notebooks.extract_course(Path(args.course), Path(args.extract))
        print(f"extracted {len(written)} modules into {args.extract}; grade them with")
        print(f"  ladder grade {args.extract} --out GRADES/")
        return 0 if written else 1
    written = notebooks.write_course(Path(args.course), args.exercise)
    print(f"wrote an nbgrader course in {args.course}: {len(written) - 2} assignments")
    print(f"  cd {args.course} && nbgrader generate_assignment ASSIGNMENT   (see its README.md)")
    return 0


def cmd_gradescope(args: argparse.Namespace) -> int:
    from graders import gradescope

    slugs = gradescope.build_zip(
        Path(args.out), args.exercise, visibility=args.visibility, timeout=args.timeout
    )
    print(f"wrote the Gradescope autograder {args.out}: grades {', '.join(slugs)}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from graders.release import release

    files = release(Path(args.out))
    print(
        f"wrote the learners' kit: {len(files)} files in {args.out} (no solutions, no hidden cases)"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ladder", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    add("list", cmd_list, "the ladder: stages, exercises, papers")
    p = add("check", cmd_check, "run one exercise's specs and summarise them with hints")
    p.add_argument("slug")
    p.add_argument("--impl", default="exercises", help="exercises (yours), solutions, or a folder")
    p.add_argument(
        "--hidden", action="store_true", help="grade with the hidden cases, speed included"
    )
    p = add("progress", cmd_progress, "every exercise and checkpoint, passed or not")
    p.add_argument("--impl", default="exercises", help="exercises (yours), solutions, or a folder")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p = add(
        "stubs", cmd_stubs, "regenerate exercises/*/<slug>.py and README API blocks from solutions/"
    )
    p.add_argument("slugs", nargs="*", help="only these exercises (default: all)")
    p.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    p = add("grade", cmd_grade, "grade a class of submissions with the hidden cases")
    p.add_argument(
        "submissions", nargs="?", help="a folder: one folder, .zip or .tar.gz per learner"
    )
    p.add_argument("--out", required=True, help="where grades, feedback and reports go")
    p.add_argument("--exercise", action="append", metavar="SLUG", help="grade only these")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("-j", "--jobs", type=int, default=1, help="grade this many learners at once")
    p.add_argument(
        "--shard",
        type=_shard,
        default=(1, 1),
        metavar="K/N",
        help="grade the K-th of N deterministic parts of the class",
    )
    p.add_argument("--demo", action="store_true", help="grade a demo class built from the kit")
    p = add("merge", cmd_merge, "join the grades of several shards into one gradebook")
    p.add_argument("parts", nargs="+", help="the --out folders of the shards")
    p.add_argument("--out", required=True)
    p = add("release", cmd_release, "write the learners' kit: no solutions, no hidden cases")
    p.add_argument("out")
    p = add("notebooks", cmd_notebooks, "write an nbgrader course: a notebook per exercise")
    p.add_argument("course", help="a new or empty folder (with --extract: an nbgrader course)")
    p.add_argument("--exercise", action="append", metavar="SLUG", help="only these")
    p.add_argument(
        "--extract",
        metavar="OUT",
        help="turn COURSE/submitted/ notebooks into modules for `ladder grade OUT`",
    )
    p = add("gradescope", cmd_gradescope, "build a Gradescope autograder (.zip)")
    p.add_argument("out", help="the .zip to write")
    p.add_argument("--exercise", action="append", metavar="SLUG", help="grade only these")
    p.add_argument(
        "--visibility",
        choices=["hidden", "after_due_date", "after_published", "visible"],
        default="visible",
        help="when learners see their results",
    )
    p.add_argument(
        "--timeout", type=int, default=540, help="seconds a submission may take to grade"
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except BrokenPipeError:  # `ladder list | head`: the reader has all it wanted
        sys.stdout = None
        return 0
    except UnknownExercise as err:
        print(f"ladder: {err}", file=sys.stderr)
        return 2
    except (stubs.StubError, OSError, RuntimeError) as err:
        print(f"ladder: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
