"""Answer normalisation for exact-match scoring of short answers.

Lower case; punctuation dropped (a decimal point between digits kept);
articles dropped; number words zero..ten written as digits; whitespace
collapsed.  So "Two.", "two" and "2" match, as do "The top left" and
"top left".  (The official VQAv2 normalisation, with its quirks, is
llava/eval's VQA metric; this is the simple rule a held-out check needs.)
"""

from __future__ import annotations

import re

NUMBERS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}
ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"(?<!\d)\.(?!\d)|[^\w\s.]")


def normalize_answer(text: str) -> str:
    text = _PUNCT.sub(" ", text.lower().replace("\n", " "))
    words = [NUMBERS.get(w, w) for w in text.split() if w not in ARTICLES]
    return " ".join(words)


def exact_match(prediction: str, answers: list[str]) -> bool:
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)
