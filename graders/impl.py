"""Load the implementation under test: the learner's, the reference, or a reference with a mistake.

Every module is executed from its file under a private name (`ladder.<impl>.<slug>`), so that the
learner's module, the reference and each mutant live side by side in one process.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from functools import cache
from pathlib import Path
from types import ModuleType

from graders.curriculum import kit_root
from graders.mutants import Mutant, collect

STUB = "stub"  # the pseudo-mutant that replaces every solution block by NotImplementedError


class ImplementationError(Exception):
    """The module under test cannot be imported; the message says where and why."""


def module_path(slug: str, impl: str = "exercises") -> Path:
    """`impl`: "exercises" (the learner's), "solutions" (the reference) or a folder of `<slug>/`."""
    root = kit_root() / impl if impl in ("exercises", "solutions") else Path(impl)
    return root / slug / f"{slug}.py"


def execute(path: Path, name: str, source: str | None = None) -> ModuleType:
    if source is None:
        if not path.is_file():
            raise ImplementationError(f"{path} does not exist")
        source = path.read_text(encoding="utf-8")
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as err:
        where = f"{err.filename}, line {err.lineno}"
        text = f"\n    {err.text.rstrip()}" if err.text else ""
        raise ImplementationError(f"{where}: {err.msg}{text}") from None
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        exec(code, module.__dict__)
    except Exception as err:
        del sys.modules[name]
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(path)]
        where = f"{path}, line {frames[-1].lineno}" if frames else str(path)
        raise ImplementationError(f"importing {where} raised {type(err).__name__}: {err}") from err
    return module


@cache
def mutants(slug: str) -> dict[str, Mutant]:
    """The known mistakes of an exercise, from `solutions/<slug>/mutants.py`."""
    path = kit_root() / "solutions" / slug / "mutants.py"
    return collect(vars(execute(path, f"ladder.mutants.{slug}"))) if path.is_file() else {}


@cache
def load(slug: str, impl: str = "exercises", mutant: str | None = None) -> ModuleType:
    """The module of `slug` from `impl`; with `mutant`, a fresh reference carrying that mistake."""
    if mutant is None:
        return execute(module_path(slug, impl), f"ladder.{_tag(impl)}.{slug}")
    path = module_path(slug, "solutions")
    name = f"ladder.mutant.{slug}.{mutant}"
    if mutant == STUB:
        from graders.stubs import make_stub

        return execute(path, name, make_stub(path.read_text(encoding="utf-8"), slug))
    known = mutants(slug)
    if mutant not in known:
        raise ImplementationError(
            f"{slug} has no mutant {mutant!r}; known: {', '.join([STUB, *known])}"
        )
    module = execute(path, name)
    *owner_path, attr = known[mutant].target.split(".")
    owner = module
    for part in owner_path:
        owner = getattr(owner, part)
    setattr(owner, attr, known[mutant].replacement)
    return module


def reference(slug: str) -> ModuleType:
    """The reference module; `mutants.py` files use it to call the reference's own helpers."""
    return load(slug, "solutions")


def _tag(impl: str) -> str:
    return impl if impl in ("exercises", "solutions") else f"path{abs(hash(impl))}"
