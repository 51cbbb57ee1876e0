"""Scoring functions for batch-inference answers, one place to import them from; pure Python,
no model imports. llava/eval/evaluate.py applies them to files.

Short answers (the default `vqa` metric), per answer-key row:

* Ten answers (a VQAv2-style key: ten annotators, repeats kept): the official
  VQA accuracy, `vqa_accuracy` (llava/eval/vqa_metric.py, quirks included).
* Any other number: our keys (`val_answers.jsonl`) list *acceptable
  alternative spellings* (["2", "two"], ["gray", "grey"]), not annotations;
  the leave-one-out formula would punish them (three agreeing alternatives
  give 2/3, a single one 0), so the row scores 1.0 when the prediction equals
  any alternative after the official normalisation, `vqa_match_any`.
* `exact_match`: llava/eval/normalize.py's simpler rule, against any answer.
* Multiple choice (rows with "choices" and "answer_letter"): the prediction is
  first resolved to a letter, `choice_letter`; every metric of the row then
  compares that letter, so "B) dog" is right everywhere when B is.

Captions: BLEU-4 / ROUGE-L / CIDEr-D as coco-caption (caption_metrics.py).
Ratings 0-5: MAE, exact, within-1, Spearman (rating_metrics.py).
"""

from __future__ import annotations

import re

from llava.eval.caption_metrics import bleu, caption_scores, cider_d, rouge_l, tokenize
from llava.eval.normalize import exact_match, normalize_answer
from llava.eval.rating_metrics import gold_score, parse_score, rating_scores, spearman
from llava.eval.vqa_metric import clean_prediction, vqa_accuracy, vqa_match_any

__all__ = [
    "OFFICIAL_VQA_ANSWERS", "bleu", "caption_scores", "choice_letter", "cider_d", "clean_prediction",
    "exact_match", "gold_score", "multiple_choice_correct", "normalize_answer", "parse_score",
    "rating_scores", "rouge_l", "short_answer_score", "spearman", "tokenize", "vqa_accuracy", "vqa_match_any",
]

OFFICIAL_VQA_ANSWERS = 10  # a key row with this many answers is scored with the official formula

# "B", "b", "B.", "(B)", "(B).", "B)" - the letter alone
_BARE_LETTER = re.compile(r"\(?([A-Za-z])\)?\.?")
# "B) dog", "B. dog", "B: dog", "(B) dog" - a letter, a delimiter, then text. Without a delimiter
# ("A dog") the letter may be an article, so that is not read as a choice.
_LETTER_AND_TEXT = re.compile(r"(?:\(([A-Za-z])\)[.:]?|([A-Za-z])[.):])\s+\S.*", re.DOTALL)


def _plain(text: str) -> str:
    text = text.strip()
    return (text[:-1] if text.endswith(".") else text).strip().casefold()


def choice_letter(prediction: str, choices: list[str]) -> str | None:
    """The letter (A, B, ...) a prediction picks among `choices`, or None.

    Accepted: the letter alone in any case, with or without brackets or a
    period ("B", "b", "B.", "(B)"); the letter, a delimiter and text ("B) dog",
    "B. dog", "(B) dog"; the letter wins over the text); or the text of one
    choice (case-insensitive, outer spaces and one final period ignored). A
    letter past the last choice resolves to nothing.
    """
    text = prediction.strip()
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    match = _BARE_LETTER.fullmatch(text) or _LETTER_AND_TEXT.fullmatch(text)
    if match:
        letter = next(g for g in match.groups() if g).upper()
        return letter if letter in letters else None
    for letter, choice in zip(letters, choices):
        if _plain(text) == _plain(str(choice)):
            return letter
    return None


def multiple_choice_correct(prediction: str, choices: list[str], answer_letter: str) -> bool:
    return choice_letter(prediction, choices) == str(answer_letter).strip().upper()


def short_answer_score(prediction: str, key: dict) -> dict:
    """The scores of one answer against its key row: {"vqa_accuracy", "exact_match"} and, for a
    multiple-choice row, "multiple_choice" (0/1)."""
    raw = key["answers"]
    answers = [str(a) for a in raw] if isinstance(raw, list) else [str(raw)]
    if not answers:
        raise ValueError(f"question {key.get('question_id')!r}: empty 'answers'")
    if key.get("choices") and key.get("answer_letter"):
        correct = float(multiple_choice_correct(prediction, key["choices"], key["answer_letter"]))
        return {"vqa_accuracy": correct, "exact_match": correct, "multiple_choice": correct}
    if len(answers) == OFFICIAL_VQA_ANSWERS:
        vqa = vqa_accuracy(prediction, answers)
    else:
        vqa = vqa_match_any(prediction, answers)
    return {"vqa_accuracy": vqa, "exact_match": float(exact_match(prediction, answers))}
