"""The demo class: learners made from the kit itself, for `ladder grade --demo`.

One learner submits the references, one the untouched stubs, several carry known mistakes (the
mutants, written out as real modules) and a few are hostile. Grading it shows every part of the
grader at work on a fresh machine, with no class of one's own.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from graders import impl
from graders.curriculum import kit_root, pieces

# What `ladder grade --demo` grades unless told otherwise: the three exemplars and the first
# checkpoint, enough to show every part of the grader in a few minutes; `--exercise` picks others.
EXERCISES = ("backprop", "attention", "speculative_decoding", "checkpoint_1")

HOSTILE = {  # learner -> (exercise, attack from tests/hostile/): contained, scored zero, harmless
    "mallory": ("attention", "read_reference.py"),
    "trudy": ("attention", "infinite_loop.py"),
    "oscar": ("attention", "exit_at_import.py"),
}


def mutant_source(slug: str, name: str) -> str:
    """The reference with one known mistake, as a learner's module would carry it."""
    reference = impl.module_path(slug, "solutions").read_text(encoding="utf-8")
    mutants_file = kit_root() / "solutions" / slug / "mutants.py"
    lines = mutants_file.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    keep = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            "graders",
            "__future__",
        ):
            continue
        if isinstance(node, ast.Assign) and "reference(" in ast.unparse(node.value):
            continue
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
            continue  # the module docstring
        decorators = getattr(node, "decorator_list", None)
        first = decorators[-1].end_lineno + 1 if decorators else node.lineno  # drop @mutant(...)
        keep.append("\n".join(lines[first - 1 : node.end_lineno]))
    target = impl.mutants(slug)[name].target
    snapshot = (
        "def _as_written(value):  # a class is copied, so the mistake patched in below spares ref\n"
        "    if isinstance(value, type) and value.__module__ == __name__:\n"
        "        skip = ('__dict__', '__weakref__')\n"
        "        body = {k: v for k, v in vars(value).items() if k not in skip}\n"
        "        return type(value.__name__, value.__bases__, body)\n"
        "    return value\n\n\n"
        "ref = _types.SimpleNamespace(**{k: _as_written(v) for k, v in globals().items()})"
    )
    mistakes = "\n\n".join(keep)
    return (
        f"{reference}\n\n# A demo learner's mistake: {name}\nimport types as _types\n\n"
        f"{snapshot}\n\n{mistakes}\n\n{target} = {name}\n"
    )


def build(folder: Path, exercises: list[str]) -> Path:
    """Write the demo class into `folder` (one sub-folder per learner) and return it."""
    if folder.exists():
        shutil.rmtree(folder)
    learners: dict[str, dict[str, str]] = {"ada": {}, "grace": {}}
    exercises = list(dict.fromkeys(p for slug in exercises for p in pieces(slug)))
    for slug in exercises:
        learners["ada"][slug] = impl.module_path(slug, "solutions").read_text(encoding="utf-8")
        learners["grace"][slug] = impl.module_path(slug, "exercises").read_text(encoding="utf-8")
    for i, slug in enumerate(exercises):  # each mutant goes to a learner, cycling through a few
        for j, name in enumerate(impl.mutants(slug)):
            learner = ["alan", "barbara", "claude", "donald"][(i + j) % 4]
            learners.setdefault(learner, {})[slug] = mutant_source(slug, name)
    hostile = kit_root() / "tests" / "hostile"
    for learner, (slug, attack) in HOSTILE.items():
        if slug in exercises and (hostile / attack).is_file():
            learners[learner] = {slug: (hostile / attack).read_text(encoding="utf-8")}
    for learner, modules in learners.items():
        for slug, source in modules.items():
            path = folder / learner / "exercises" / slug / f"{slug}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
    return folder
