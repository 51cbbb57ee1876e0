"""The official VQAv2 accuracy, ported from the VQA API's vqaEval.py (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py), quirks included, so our numbers
are comparable with published ones.

What the official code does, and so what this does:

* The prediction: newlines and tabs become spaces, it is stripped, then
  `process_punctuation`, then `process_digit_article`.
* The ground-truth answers are used *raw*, unless they are not all identical
  (`len(set(gtAnswers)) > 1`): then each gets `process_punctuation` only - no
  strip, no lower-casing, no number words, no article removal. So ten "yes."
  never match a prediction "yes" (the prediction loses its period, the
  answers keep theirs), and among mixed answers a "two" never matches anything
  (the prediction "two" became "2").
* Accuracy: for each answer left out in turn, min(#remaining answers equal to
  the prediction / 3, 1); the mean of those (10 leave-one-out subsets for the
  usual 10 annotators). Three of ten agreeing gives 0.9, not 1.0.

Two known variants of vqaEval.py exist; this follows the one above. The other
(LAVIS, later forks) strips every answer and normalises prediction and answers
only when the answers are mixed.
"""

from __future__ import annotations

import re

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # keys with capitals ("Im", "Ive") never match: words are lower-cased first, as in the original.
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
              "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# "(?!<=\d)" is the original's typo for a look-behind; as written it is a look-ahead that
# always holds at a ".", so this strips every period not followed by a digit ("3.5" stays).
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The original calls periodStrip.sub("", text, re.UNICODE): the flag lands in the `count`
# argument (re.UNICODE == 32), so at most 32 periods go. Kept for identical results.
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """Each PUNCT mark is deleted if it touches a space somewhere in the text, or if the text has a
    digit,digit comma anywhere ("1,000" -> "1000"); otherwise it becomes a space ("a/b" -> "a b").
    The tests look at the input text while the replacements build up on the output, as in the original."""
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lower case; number words zero..ten (and "none") to digits; articles dropped; contractions
    missing their apostrophe restored ("dont" -> "don't"); whitespace collapsed."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def clean_prediction(text: str) -> str:
    """The official treatment of a predicted answer."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Official VQA accuracy of one prediction against the annotators' answers (usually 10).

    Fewer than 10 answers use the same leave-one-out over however many there
    are, except one: leaving out the only answer leaves nothing to match, so the
    formula would give 0 even for a correct answer. A single answer therefore
    scores 1.0 on a match and 0.0 otherwise (compared as the official code
    compares all-identical answers: raw).
    """
    if not gt_answers:
        raise ValueError("no ground-truth answers")
    pred = clean_prediction(prediction)
    gts = [str(a) for a in gt_answers]
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    if len(gts) == 1:
        return float(gts[0] == pred)
    matches = sum(a == pred for a in gts)
    # Leaving out answer i removes one match exactly when answer i itself matches.
    scores = [min(1.0, (matches - (a == pred)) / 3) for a in gts]
    return sum(scores) / len(scores)


def vqa_match_any(prediction: str, alternatives: list[str]) -> float:
    """1.0 when the prediction equals any alternative spelling, both normalised the official way
    (punctuation, then digits/articles/contractions), else 0.0. For keys whose `answers` are
    acceptable alternatives (["2", "two"]) rather than ten annotations, where the leave-one-out
    formula would punish agreement (three identical alternatives would score 2/3)."""
    pred = clean_prediction(prediction)
    return float(any(pred == clean_prediction(str(a)) for a in alternatives))
