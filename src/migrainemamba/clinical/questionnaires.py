"""MIDAS and HIT-6: scoring and grades as published.

- **MIDAS** (Migraine Disability Assessment; Stewart et al., Neurology 2001;
  56(6 Suppl 1):S20-8): five questions, each a number of days in the last 3
  months (missed work or school; work or school productivity reduced by half or
  more; missed household work; household productivity reduced by half or more;
  missed family, social or leisure activities). Score = the sum. Grades:
  I 0-5 little or no disability, II 6-10 mild, III 11-20 moderate, IV 21+ severe.
  Days counted in question 1 are not counted again in question 2 (and 3 in 4), so
  each pair sums to at most the 90-day recall period.
- **HIT-6** (Headache Impact Test; Kosinski et al., Qual Life Res 2003;
  12:963-74): six questions answered never / rarely / sometimes / very often /
  always, scored 6 / 8 / 10 / 11 / 13. Total 36-78. Impact: <= 49 little or no,
  50-55 some, 56-59 substantial, >= 60 severe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migrainemamba.data.schema import (
    HIT6_ANSWERS,
    HIT6_ITEMS,
    MIDAS_ITEMS,
    MIDAS_RECALL_DAYS,
)

HIT6_POINTS: dict[str, int] = dict(zip(HIT6_ANSWERS, (6, 8, 10, 11, 13), strict=True))
HIT6_ANSWER_OF_POINTS: dict[int, str] = {v: k for k, v in HIT6_POINTS.items()}

# (upper bound inclusive, grade, meaning); the last bound is open
MIDAS_GRADES: tuple[tuple[float, str, str], ...] = (
    (5, "I", "little or no disability"),
    (10, "II", "mild disability"),
    (20, "III", "moderate disability"),
    (float("inf"), "IV", "severe disability"),
)
HIT6_GRADES: tuple[tuple[float, str, str], ...] = (
    (49, "little or no impact", "little or no impact"),
    (55, "some impact", "some impact"),
    (59, "substantial impact", "substantial impact"),
    (float("inf"), "severe impact", "severe impact"),
)
# pairs of MIDAS items that may not count the same day twice
MIDAS_EXCLUSIVE_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3))


class QuestionnaireError(ValueError):
    """Answers that cannot be scored; ``field`` names the item."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Score:
    instrument: str
    score: int
    grade: str
    meaning: str
    answers: tuple[int, ...]  # item scores as stored (MIDAS days, HIT-6 points)


def _grade(score: int, table: tuple[tuple[float, str, str], ...]) -> tuple[str, str]:
    return next((grade, meaning) for bound, grade, meaning in table if score <= bound)


def score_midas(days: Sequence[int]) -> Score:
    """The MIDAS score and grade of the five item answers (days in the last 3 months)."""
    if len(days) != len(MIDAS_ITEMS):
        raise QuestionnaireError("answers", f"MIDAS has {len(MIDAS_ITEMS)} items, got {len(days)}")
    for name, value in zip(MIDAS_ITEMS, days, strict=True):
        if isinstance(value, bool) or not isinstance(value, int):
            raise QuestionnaireError(name, f"{value!r} is not a whole number of days")
        if not 0 <= value <= MIDAS_RECALL_DAYS:
            raise QuestionnaireError(name, f"{value} is outside 0..{MIDAS_RECALL_DAYS} days")
    for a, b in MIDAS_EXCLUSIVE_PAIRS:
        if days[a] + days[b] > MIDAS_RECALL_DAYS:
            raise QuestionnaireError(
                MIDAS_ITEMS[b],
                f"{MIDAS_ITEMS[a]} + {MIDAS_ITEMS[b]} = {days[a] + days[b]} days exceeds the "
                f"{MIDAS_RECALL_DAYS}-day recall (days of the first are not counted again)",
            )
    total = int(sum(days))
    grade, meaning = _grade(total, MIDAS_GRADES)
    return Score("MIDAS", total, grade, meaning, tuple(int(d) for d in days))


def score_hit6(answers: Sequence[str]) -> Score:
    """The HIT-6 total and impact class of the six answers (never .. always)."""
    if len(answers) != len(HIT6_ITEMS):
        raise QuestionnaireError(
            "answers", f"HIT-6 has {len(HIT6_ITEMS)} items, got {len(answers)}"
        )
    points = []
    for name, answer in zip(HIT6_ITEMS, answers, strict=True):
        if answer not in HIT6_POINTS:
            raise QuestionnaireError(name, f"{answer!r} is not one of {', '.join(HIT6_ANSWERS)}")
        points.append(HIT6_POINTS[answer])
    total = sum(points)
    grade, meaning = _grade(total, HIT6_GRADES)
    return Score("HIT-6", total, grade, meaning, tuple(points))


def score_stored(instrument: str, answers: Sequence[int]) -> Score:
    """Rescore a stored row (item scores as kept in the contract's ``answers``)."""
    if instrument == "MIDAS":
        return score_midas(list(answers))
    if instrument == "HIT-6":
        labels = [HIT6_ANSWER_OF_POINTS.get(int(p), str(p)) for p in answers]
        return score_hit6(labels)
    raise QuestionnaireError("instrument", f"{instrument!r} is not MIDAS or HIT-6")
