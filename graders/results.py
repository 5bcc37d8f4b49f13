"""What grading produces: a result per case, per exercise and per learner, as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class CaseResult:
    exercise: str
    case: str
    points: float  # earned for correctness
    max_points: float
    message: str = ""  # why points were lost ("" when none were)
    diagnosis: str = ""  # "matches mutant X: <diagnosis>" when a known mistake explains a failure
    speed_ratio: float | None = None  # learner's median time / reference's, when speed is graded
    speed_points: float = 0.0
    max_speed_points: float = 0.0

    @property
    def score(self) -> float:
        return self.points + self.speed_points

    @property
    def max_score(self) -> float:
        return self.max_points + self.max_speed_points


@dataclass
class LearnerResult:
    learner: str
    cases: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # submission-level messages (bad archive, ...)

    def exercise_scores(self) -> dict[str, tuple[float, float]]:
        """exercise -> (score, max score), in the order the cases were graded."""
        totals: dict[str, tuple[float, float]] = {}
        for c in self.cases:
            score, top = totals.get(c.exercise, (0.0, 0.0))
            totals[c.exercise] = (score + c.score, top + c.max_score)
        return totals

    @property
    def total(self) -> tuple[float, float]:
        return (sum(c.score for c in self.cases), sum(c.max_score for c in self.cases))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LearnerResult:
        return cls(data["learner"], [CaseResult(**c) for c in data["cases"]], data.get("notes", []))
