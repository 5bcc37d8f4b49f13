"""`ladder`: the learner's and the instructor's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from graders import readme, runner, stubs
from graders.curriculum import Exercise, UnknownExercise, all_exercises, exercise, stages


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
    if sys.stdout.isatty():
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
    changed = stubs.sync(check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    if args.check and changed:
        print("run `ladder stubs` to regenerate them from solutions/")
        return 1
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
    p = add("progress", cmd_progress, "every exercise and checkpoint, passed or not")
    p.add_argument("--impl", default="exercises", help="exercises (yours), solutions, or a folder")
    p = add(
        "stubs", cmd_stubs, "regenerate exercises/*/<slug>.py and README API blocks from solutions/"
    )
    p.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except UnknownExercise as err:
        print(f"ladder: {err}", file=sys.stderr)
        return 2
    except (stubs.StubError, OSError) as err:
        print(f"ladder: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
