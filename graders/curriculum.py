"""The ladder's manifest (`curriculum.toml`): stages, exercises and checkpoints, in order."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path


def kit_root() -> Path:
    """The folder that holds `curriculum.toml`, `exercises/` and (in the full kit) `solutions/`."""
    return Path(os.environ.get("LADDER_ROOT") or Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class Exercise:
    slug: str
    innovation: str
    stage: int
    paper: str = ""
    authors: str = ""
    year: int = 0
    framework: str = ""
    uses: tuple[str, ...] = ()  # a checkpoint's pieces: the exercises whose modules it loads

    @property
    def folder(self) -> Path:
        return kit_root() / "exercises" / self.slug

    @property
    def is_checkpoint(self) -> bool:
        return self.slug.startswith("checkpoint_")


@dataclass(frozen=True)
class Stage:
    number: int
    title: str
    exercises: tuple[Exercise, ...] = field(default=())
    checkpoint: Exercise | None = None


class UnknownExercise(LookupError):
    """Raised for a slug that is not on the ladder; its message names the known ones."""


@cache
def stages() -> tuple[Stage, ...]:
    manifest = tomllib.loads((kit_root() / "curriculum.toml").read_text())
    result = []
    for number, raw in enumerate(manifest["stage"], start=1):
        exercises = tuple(Exercise(stage=number, **e) for e in raw.get("exercise", ()))
        checkpoint = None
        if "checkpoint" in raw:  # a checkpoint is named by its stage and titled by its task
            title, uses = raw["checkpoint"]["title"], tuple(raw["checkpoint"]["uses"])
            checkpoint = Exercise(f"checkpoint_{number}", title, number, uses=uses)
        result.append(Stage(number, raw["title"], exercises, checkpoint))
    return tuple(result)


def all_exercises(checkpoints: bool = True) -> list[Exercise]:
    """Every rung in ladder order; checkpoints close their stage."""
    out: list[Exercise] = []
    for stage in stages():
        out += stage.exercises
        if checkpoints and stage.checkpoint:
            out.append(stage.checkpoint)
    return out


def exercise(slug: str) -> Exercise:
    for ex in all_exercises():
        if ex.slug == slug:
            return ex
    known = ", ".join(e.slug for e in all_exercises())
    raise UnknownExercise(f"no exercise named {slug!r} on the ladder; known exercises: {known}")


def pieces(slug: str) -> tuple[str, ...]:
    """The modules that grading `slug` needs: its own, or a checkpoint's pieces."""
    ex = exercise(slug)
    return ex.uses if ex.is_checkpoint else (slug,)
