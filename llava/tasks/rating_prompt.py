"""The tag-relevance rating prompt and answer format, shared by training data and the rater.

The model is asked how well an image matches a search term, on a scale whose six
levels are spelled out, and answers one JSON object:

    {"explanation": "There is a red circle at the top left, among 3 objects.", "score": 4}

The explanation comes first so that the score is written after the reasons
(and a constrained retry can force the score alone, see tag_rating.py).
"""

from __future__ import annotations

import json
import re

from llava.eval.rating_metrics import MAX_SCORE, MIN_SCORE, as_score, score_object

SCALE = (
    (0, "not relevant: nothing in the image matches the term"),
    (1, "barely relevant: a minor detail relates to the term"),
    (2, "somewhat relevant: part of the term matches, the rest does not"),
    (3, "relevant: the term matches part of the image"),
    (4, "very relevant: the term clearly matches, among other things"),
    (5, "perfectly relevant: the term describes the image exactly"),
)
ANSWER_PREFIX = '{"explanation": "'
SCORE_PREFIX = '", "score": '


def rating_prompt(tag: str) -> str:
    levels = "\n".join(f"{n} = {text}" for n, text in SCALE)
    return (f'How well does the image match the search term "{tag.strip()}"? Rate it from {MIN_SCORE} to '
            f"{MAX_SCORE}:\n{levels}\n"
            'Answer with JSON only: {"explanation": "<one short sentence>", "score": <integer 0-5>}')


def format_answer(explanation: str, score: int) -> str:
    """The training target and the canonical answer text: explanation first, then the score."""
    if as_score(score) is None:
        raise ValueError(f"score {score!r} is not an integer {MIN_SCORE}-{MAX_SCORE}")
    return json.dumps({"explanation": explanation.strip(), "score": int(score)}, ensure_ascii=False)


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_EXPLANATION = re.compile(r'"explanation"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL)


def parse_answer(text: str) -> tuple[int | None, str | None]:
    """(score, explanation) from a model's answer; score None when the answer holds no valid score.

    Accepts the JSON object bare, in a code fence or inside prose; a score as an int,
    a float like 3.0 or a digit string. A JSON score outside 0-5 is invalid (not clamped);
    text without JSON is not searched for a bare digit, because "3 objects" is not a rating.
    """
    obj = score_object(text, _OBJECT)
    if obj is None:
        return None, None
    explanation = obj.get("explanation")
    return as_score(obj["score"]), explanation.strip() if isinstance(explanation, str) else None


def partial_explanation(text: str) -> str | None:
    """The explanation of a broken answer, when its "explanation" string is complete."""
    m = _EXPLANATION.search(text)
    if not m:
        return None
    try:
        return json.loads(f'"{m.group(1)}"').strip()
    except json.JSONDecodeError:
        return None
