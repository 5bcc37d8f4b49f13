"""`ladder grade` against `nbgrader autograde`: the same exercise, the same two submissions.

    .venv/bin/python benchmarks/nbgrader_vs_ladder.py [--exercise attention] [--repeat 3]

Builds the exercise's nbgrader course (`ladder notebooks`), makes two submissions from the released
notebook (a correct one and one carrying a known mistake), and times each tool on each submission
alone, then on both in one run (a class of two; the figure is per submission):

- `nbgrader autograde`: the notebook in a Jupyter kernel, public specs and hidden cases (the course
  as `ladder notebooks` ships it); with `--hidden-only`, also the notebook without its specs;
- `ladder grade` on the module extracted from the same notebook (`ladder notebooks --extract`):
  the hidden cases in the sandbox, speed included.

Each figure is the median of `--repeat` runs, process start-up included (each tool is a command
an instructor runs): wall time, and CPU time of the command with every process it waited for
(kernels, sandboxes), which a busy machine inflates less. Reported, never asserted. Needs the
`course` extra (nbgrader).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graders import notebooks  # noqa: E402
from graders.stubs import BEGIN, END  # noqa: E402


def jupyter_env(home: Path) -> dict[str, str]:
    """Jupyter confined to `home`, with a `python3` kernel that is this interpreter."""
    kernel = home / "path" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernel / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    return {
        **os.environ,
        "JUPYTER_PATH": str(home / "path"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def timed(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and every process it waited for)."""
    before, started = _children_cpu(), time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, _children_cpu() - before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(runs: list[tuple[float, float]], per: int = 1) -> tuple[float, float]:
    """Median wall and CPU seconds of the runs, divided among `per` submissions."""
    return statistics.median(w for w, _ in runs) / per, statistics.median(c for _, c in runs) / per


def mutant_function(slug: str, name: str) -> str:
    """A mutant of a function, renamed to the function it replaces (self-contained ones only)."""
    from graders import impl

    target = impl.mutants(slug)[name].target
    lines = (ROOT / "solutions" / slug / "mutants.py").read_text().splitlines()
    node = next(n for n in ast.parse("\n".join(lines)).body if getattr(n, "name", None) == name)
    code = "\n".join(lines[node.lineno - 1 : node.end_lineno])
    if "." in target or "ref." in code:
        raise SystemExit(f"--mutant {name}: pick one that replaces a function on its own")
    return code.replace(f"def {name}(", f"def {target}(", 1), target


def submissions(release: dict, source: dict, slug: str, mutant: str) -> dict[str, dict]:
    """The released notebook answered correctly, and answered with a known mistake."""
    answers = {
        c["metadata"]["nbgrader"]["grade_id"]: "\n".join(
            x for x in c["source"].splitlines() if x.strip() not in (BEGIN, END)
        )
        for c in source["cells"]
        if c["metadata"]["nbgrader"]["solution"]
    }
    wrong_code, target = mutant_function(slug, mutant)
    wrong = {k: wrong_code if f"def {target}(" in v else v for k, v in answers.items()}
    made = {}
    for student, code in (("correct", answers), ("wrong", wrong)):
        nb = json.loads(json.dumps(release))
        for cell in nb["cells"]:
            grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
            if grade_id in code:
                cell["source"] = code[grade_id]
        made[student] = nb
    return made


def hidden_only(notebook: dict) -> dict:
    """The notebook without its public specs (the set-up cell that defines `impl` stays)."""
    nb = json.loads(json.dumps(notebook))
    nb["cells"] = [
        c
        for c in nb["cells"]
        if "-spec-" not in c["metadata"].get("nbgrader", {}).get("grade_id", "")
        or c["metadata"]["nbgrader"]["grade_id"].endswith("-spec-setup")
    ]
    return nb


def nbgrader_course(work: Path, slug: str, strip_specs: bool) -> tuple[Path, dict, dict, dict]:
    """A generated course (all specs, or hidden cases only): (root, source, release, env)."""
    course = work / ("course-hidden" if strip_specs else "course")
    notebooks.write_course(course, [slug])
    path = course / "source" / slug / f"{slug}.ipynb"
    source = json.loads(path.read_text())
    if strip_specs:
        source = hidden_only(source)
        path.write_text(json.dumps(source))
    env = jupyter_env(work / f"jupyter-{course.name}")
    timed([sys.executable, "-m", "nbgrader", "generate_assignment", slug, "--force"], course, env)
    release = json.loads((course / "release" / slug / f"{slug}.ipynb").read_text())
    return course, source, release, env


Figures = dict[str, tuple[float, float, str]]  # run -> (wall s, CPU s, score(s)) per submission


def run_nbgrader(course: Path, slug: str, made: dict[str, dict], repeat: int, env: dict) -> Figures:
    """`nbgrader autograde --student S` for each submission, then once for both."""
    for student, nb in made.items():
        folder = course / "submitted" / student / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{slug}.ipynb").write_text(json.dumps(nb))
    autograde = [sys.executable, "-m", "nbgrader", "autograde", slug, "--force"]
    runs = {
        s: [timed([*autograde, "--student", s], course, env) for _ in range(repeat)] for s in made
    }
    runs["both"] = [timed(autograde, course, env) for _ in range(repeat)]
    timed([sys.executable, "-m", "nbgrader", "export"], course, env)
    with open(course / "grades.csv", newline="") as f:
        scores = {
            r["student_id"]: f"{float(r['score']):g} / {float(r['max_score']):g}"
            for r in csv.DictReader(f)
        }
    scores["both"] = ", ".join(scores[s] for s in made)
    return {
        key: (*median(times, len(made) if key == "both" else 1), scores[key])
        for key, times in runs.items()
    }


def run_ladder(work: Path, slug: str, made: dict[str, dict], repeat: int) -> Figures:
    """`ladder grade` on the module of each notebook, then on both as a class of two."""
    modules = {student: notebooks.extract_module(nb)[1] for student, nb in made.items()}
    figures: Figures = {}
    for key, students in [*((s, [s]) for s in made), ("both", list(made))]:
        runs, scores = [], []
        for r in range(repeat):
            folder = work / f"ladder-{key}-{r}"
            for student in students:
                (folder / "class" / student).mkdir(parents=True)
                (folder / "class" / student / f"{slug}.py").write_text(modules[student])
            command = [sys.executable, "-m", "graders.cli", "grade", str(folder / "class")]
            command += ["--out", str(folder / "grades"), "--exercise", slug]
            runs.append(timed(command, ROOT))
            with open(folder / "grades" / "gradebook.csv", newline="") as f:
                rows = {row["learner"]: row for row in csv.DictReader(f)}
            top = float(rows["(max points)"]["total"])
            scores = [f"{float(rows[s]['total']):g} / {top:g}" for s in students]
        figures[key] = (*median(runs, len(students)), ", ".join(scores))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exercise", default="attention")
    parser.add_argument("--mutant", default="softmax_without_max_shift")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--hidden-only", action="store_true", help="also time nbgrader on the hidden cases alone"
    )
    args = parser.parse_args()
    slug = args.exercise
    table: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="ladder-bench-") as tmp:
        work = Path(tmp)
        for strip in (False, True) if args.hidden_only else (False,):
            course, source, release, env = nbgrader_course(work, slug, strip)
            made = submissions(release, source, slug, args.mutant)
            label = "nbgrader autograde (hidden cases only)" if strip else "nbgrader autograde"
            table[label] = run_nbgrader(course, slug, made, args.repeat, env)
        table["ladder grade"] = run_ladder(work, slug, made, args.repeat)
    report(table, slug, args.repeat)


def report(table: dict[str, Figures], slug: str, repeat: int) -> None:
    print(f"{slug}: seconds per submission, median of {repeat} run(s), on {os.cpu_count()} CPUs\n")
    print("| run | tool | wall s | CPU s | score |\n| --- | --- | ---: | ---: | --- |")
    for key in ("correct", "wrong", "both"):
        run = "both in one run (per submission)" if key == "both" else f"{key} alone"
        for tool, figures in table.items():
            wall, cpu, score = figures[key]
            print(f"| {run} | {tool} | {wall:.1f} | {cpu:.1f} | {score} |")
    print()
    for key in ("correct", "wrong", "both"):
        wall, cpu, _ = table["ladder grade"][key]
        for tool in (t for t in table if t != "ladder grade"):
            w, c, _ = table[tool][key]
            print(f"{key}: {tool} takes {w / wall:.1f}x the wall time, {c / cpu:.1f}x the CPU time")


if __name__ == "__main__":
    main()
