"""Scores for rating tasks: the model answers an integer 0-5 (tag_rating), and we compare it
with the gold score.

Answers are free text, so the score is parsed: a JSON object with a "score"
field (what the rating prompt asks for, possibly wrapped in prose or a code
fence), else the first stand-alone integer 0-5 in the text ("Score: 3", "3/5").
Anything else is *invalid*: counted and reported, never a crash, and left out
of the error metrics (an invalid answer has no distance to the gold score), so
read the metrics together with the valid count.
"""

from __future__ import annotations

import json
import math
import re

MIN_SCORE, MAX_SCORE = 0, 5
_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
# a digit 0-5 not part of a longer number: "10", "4.5" and "-1" hold none
_INTEGER = re.compile(r"(?<![\d.-])[0-5](?!\d|\.\d)")


def as_score(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"\d+", value):
            return None
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and MIN_SCORE <= value <= MAX_SCORE:
        return value
    return None


def score_object(text: str, pattern: re.Pattern = _OBJECT) -> dict | None:
    """The first JSON object with a "score" field: the whole text, or one inside it (prose, a code fence)."""
    for candidate in [text.strip(), *pattern.findall(text)]:
        try:
            obj = json.loads(candidate)
        except (json.JSONDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested deep
            continue
        if isinstance(obj, dict) and "score" in obj:
            return obj
    return None


def parse_score(text: str) -> int | None:
    """The integer score in an answer, or None when there is none."""
    obj = score_object(text)
    if obj is not None:
        return as_score(obj["score"])  # a JSON score out of range is invalid, not searched further
    match = _INTEGER.search(text)
    return int(match.group()) if match else None


def gold_score(answers) -> int:
    """The gold score of a key row: 3, "3", [3] or ["3"]."""
    value = answers[0] if isinstance(answers, list) and len(answers) == 1 else answers
    score = as_score(value)
    if score is None:
        raise ValueError(f"rating answer {answers!r} is not an integer {MIN_SCORE}-{MAX_SCORE}")
    return score


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (as scipy.stats.rankdata)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the (tie-averaged) ranks. None when undefined
    (fewer than two pairs, or one side constant), where scipy would give nan."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def rating_scores(predicted: list[int], gold: list[int]) -> dict:
    """MAE, exact and within-1 accuracy, Spearman over valid (parsed) predictions."""
    if len(predicted) != len(gold):
        raise ValueError("predicted and gold differ in length")
    n = len(predicted)
    if n == 0:
        return {"mae": None, "exact_accuracy": None, "within_1_accuracy": None, "spearman": None}
    errors = [abs(p - g) for p, g in zip(predicted, gold)]
    return {
        "mae": sum(errors) / n,
        "exact_accuracy": sum(e == 0 for e in errors) / n,
        "within_1_accuracy": sum(e <= 1 for e in errors) / n,
        "spearman": spearman(predicted, gold),
    }
