"""The one result record: a graded part of one submission (an nbgrader test cell or a hidden check)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MANUAL = "ManualGrade"  # `Result.error` of a written answer an instructor still has to grade


@dataclass
class Result:
    """One graded part. `points` is what it scored out of `max_points`; `message` says what to look at.

    `error` says why a hidden check failed, machine-readably: the name of the sandbox error class
    ("MissingDefinition", "StudentError", "CallTimeout", "Crashed", "OutputLimit", "ForbiddenOperation",
    "BadResult", "ReferenceCall"), "NotRun" when the time limit for all checks ran out first, "" for a
    plain wrong answer, a pass, or a notebook test cell. A written (hand-graded) answer is "ManualGrade"
    while it awaits the instructor (its `points` stay 0 and it counts in no automatic total), "" when left
    blank (nbgrader scores an unchanged answer 0).
    """

    name: str
    points: float
    max_points: float
    passed: bool
    message: str = ""
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        """The record from `to_dict`'s output (unknown keys ignored)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
