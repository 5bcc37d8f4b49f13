"""`ladder gradescope OUT.zip`: a Gradescope autograder that grades with `ladder grade`.

The zip's root (Gradescope unpacks it into `/autograder/source`):

    setup.sh               installs bubblewrap, Python 3.11+ and the bundled kit (Ubuntu image)
    run_autograder         grades /autograder/submission; always writes results/results.json
    ladder-gradescope.json the exercises to grade, the results' visibility, the time allowed
    kit/                   the full kit: engine, exercises, solutions and hidden cases

`run_autograder` calls `python -m graders.gradescope run --root /autograder` from inside `kit/`.
`run` copies the submission's regular files into a class of one learner (links, devices and
oversized uploads are left out and noted), turns uploaded notebooks into modules (their answer
cells, see `graders.notebooks.extract_module`), runs `ladder grade` on it in a child process with a
time limit, and writes `results/results.json`, whatever happened. The root is `$AUTOGRADER_ROOT`
(default `/autograder`), so the kit's tests can lay out a Gradescope-like tree anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from graders import report
from graders.curriculum import kit_root

CONFIG = "ladder-gradescope.json"
TEMPLATES = Path(__file__).parent / "templates" / "gradescope"
SCRIPTS = ("setup.sh", "run_autograder")
KIT = [  # what the autograder needs of the kit; tests, docs and CI stay home
    "pyproject.toml",
    "constraints.txt",
    "curriculum.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "graders",
    "exercises",
    "solutions",
    "data",
]
LEARNER = "submission"  # the one learner of the class that `ladder grade` grades
ARCHIVES = (".zip", ".tar.gz", ".tgz")
MAX_FILES, MAX_BYTES = 2000, 200 * 2**20  # what a submission may hold


class GradescopeError(RuntimeError):
    """An autograder that cannot be built as asked."""


# ---------------------------------------------------------------------------------------------
# Building the zip.


def build_zip(
    out: Path, requested: list[str] | None, *, visibility: str = "visible", timeout: int = 540
) -> list[str]:
    """Write the autograder zip to `out` (which must not exist); return the exercises it grades."""
    from graders.notebooks import NotebookError, selected

    if out.suffix != ".zip":
        raise GradescopeError(f"{out}: Gradescope takes a .zip; name it something.zip")
    if out.exists():
        raise GradescopeError(f"{out} exists; choose a new name")
    if visibility not in report.VISIBILITIES:
        raise GradescopeError(f"visibility {visibility!r} is not one of {report.VISIBILITIES}")
    if timeout < 10:
        raise GradescopeError(f"a timeout of {timeout} s leaves no time to grade")
    try:
        slugs = selected(requested)
    except NotebookError as err:
        raise GradescopeError(str(err)) from None
    config = {"exercises": slugs, "visibility": visibility, "timeout": timeout}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in SCRIPTS:
            _add(zf, name, (TEMPLATES / name).read_bytes(), executable=True)
        _add(zf, CONFIG, (json.dumps(config, indent=2) + "\n").encode())
        for path in _kit_files():
            _add(zf, f"kit/{path.relative_to(kit_root()).as_posix()}", path.read_bytes())
    partial.replace(out)
    return slugs


def _add(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def _kit_files() -> list[Path]:
    root = kit_root()
    files = []
    for name in KIT:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not p.is_symlink()
                and not any(
                    part in ("__pycache__", ".hypothesis", ".ruff_cache")
                    or part.endswith(".egg-info")
                    for part in p.relative_to(root).parts
                )
                and p.suffix != ".pyc"
            ]
    return files


# ---------------------------------------------------------------------------------------------
# Grading one submission (what run_autograder calls).


def stage(submission: Path, learners: Path, exercises: list[str]) -> list[str]:
    """Put the submission into `learners/` as the one learner `LEARNER`; return notes for them.

    Only regular files are copied (no links, devices or fifos), up to MAX_FILES files and
    MAX_BYTES bytes. A lone archive stays an archive, for `ladder grade` to unpack safely. A
    notebook made by `ladder notebooks` becomes `<slug>.py` beside it, unless that file exists.
    """
    from graders.notebooks import NotebookError, extract_module, read_notebook

    notes: list[str] = []
    learners.mkdir(parents=True, exist_ok=True)
    top = list(submission.iterdir()) if submission.is_dir() else []
    if len(top) == 1 and _regular(top[0]) and top[0].name.lower().endswith(ARCHIVES):
        suffix = next(s for s in ARCHIVES if top[0].name.lower().endswith(s))
        shutil.copyfile(top[0], learners / f"{LEARNER}{suffix}")
        return notes
    folder = learners / LEARNER
    folder.mkdir()
    notes += _copy_regular_files(submission, folder)
    for notebook in sorted(folder.rglob("*.ipynb")):
        where = notebook.relative_to(folder)
        try:
            slug, source = extract_module(read_notebook(notebook))
        except NotebookError as err:
            notes.append(f"{where} was not graded: {err}")
            continue
        module = notebook.with_name(f"{slug}.py")
        if slug not in exercises:
            notes.append(f"{where} is a notebook of {slug}, which this assignment does not grade")
        elif module.exists():
            notes.append(f"{where} was not graded: {module.relative_to(folder)} is graded instead")
        else:
            module.write_text(source, encoding="utf-8")
            notes.append(f"graded the answer cells of {where}")
    return notes


def _regular(path: Path) -> bool:
    return stat.S_ISREG(path.lstat().st_mode)


def _copy_regular_files(source: Path, target: Path) -> list[str]:
    notes, count, size = [], 0, 0
    for folder, dirs, files in os.walk(source, followlinks=False):
        here = Path(folder)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                notes.append(f"{(here / name).relative_to(source)} is a link; left out")
        for name in sorted(files):
            path = here / name
            relative = path.relative_to(source)
            if not _regular(path):
                notes.append(f"{relative} is not a regular file; left out")
                continue
            count, size = count + 1, size + path.lstat().st_size
            if count > MAX_FILES or size > MAX_BYTES:
                notes.append(f"the submission holds more than {MAX_FILES} files or {MAX_BYTES} B")
                return notes
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
    return notes


def run(root: Path) -> int:
    """Grade `root/submission` and write `root/results/results.json`, come what may."""
    results = root / "results" / "results.json"
    started = time.monotonic()
    try:
        config = json.loads((root / "source" / CONFIG).read_text(encoding="utf-8"))
        exercises, visibility = list(config["exercises"]), config.get("visibility", "visible")
        with tempfile.TemporaryDirectory(prefix="ladder-gradescope-") as tmp:
            learners, grades = Path(tmp) / "class", Path(tmp) / "grades"
            notes = stage(root / "submission", learners, exercises)
            finished = _grade(learners, grades, exercises, int(config.get("timeout", 540)))
            data = _results(grades, exercises, finished)
        data["output"] = "\n".join([*(f"Note: {report.clean(n)}" for n in notes), data["output"]])
        data["visibility"] = visibility
        for test in data.get("tests", []):
            test["visibility"] = visibility
        data["execution_time"] = round(time.monotonic() - started)
        _write_json(results, data)
    except Exception as err:
        print(f"the autograder failed: {err!r}", file=sys.stderr)
        report.gradescope_error(
            f"The autograder failed ({type(err).__name__}: {err}). Your submission was not "
            "graded; please tell your instructor.",
            results,
        )
        return 1
    return 0


def _grade(learners: Path, grades: Path, exercises: list[str], timeout: int) -> str:
    """Run `ladder grade` in a child process group; "" when it finished, else why it did not."""
    command = [sys.executable, "-m", "graders.cli", "grade", str(learners), "--out", str(grades)]
    command += [f"--exercise={slug}" for slug in exercises]
    process = subprocess.Popen(
        command,
        cwd=kit_root(),
        env={**os.environ, "LADDER_ROOT": str(kit_root())},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        why = "" if process.returncode == 0 else f"`ladder grade` exited with {process.returncode}"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        why = f"grading took longer than {timeout} s and was stopped"
    print(output)  # Gradescope shows the autograder's stdout to instructors only
    return why


def _results(grades: Path, exercises: list[str], why: str) -> dict:
    """The learner's results.json from `ladder grade`, else from its journal, else an error."""
    from graders import grade

    produced = grades / report.learner_dirname(LEARNER) / "results.json"
    if produced.is_file() and not why:
        return json.loads(produced.read_text(encoding="utf-8"))
    journal = grade.Journal(grades / "journal.jsonl")
    graded = [slug for slug in exercises if (LEARNER, slug) in journal.entries()]
    if not graded:
        raise RuntimeError(why or "`ladder grade` wrote no results")
    result = grade.results_from_journal(journal, [LEARNER], graded)[0]
    missing = [slug for slug in exercises if slug not in graded]
    result.notes.append(f"{why}; not graded: {', '.join(missing) or 'nothing'}")
    return report.gradescope_results(result)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graders.gradescope")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="grade ROOT/submission into ROOT/results/results.json")
    p.add_argument("--root", default=os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    args = parser.parse_args(argv)
    return run(Path(args.root))


if __name__ == "__main__":
    sys.exit(main())
