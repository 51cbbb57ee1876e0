"""Golden values for llava/eval/metrics.py, each worked out by hand from the official rules."""

import math

import pytest

from llava.eval import normalize
from llava.eval.metrics import (
    bleu,
    choice_letter,
    cider_d,
    clean_prediction,
    exact_match,
    gold_score,
    multiple_choice_correct,
    parse_score,
    rating_scores,
    rouge_l,
    short_answer_score,
    spearman,
    vqa_accuracy,
    vqa_match_any,
)
from llava.eval.vqa_metric import process_punctuation


# ---------------------------------------------------------------- VQA normalisation
@pytest.mark.parametrize("raw, expected", [
    ("Two dogs.", "2 dogs"),        # period stripped, number word to digit
    ("the cat", "cat"),             # article dropped
    ("a dog", "dog"),
    ("dont", "don't"),              # contraction restored
    ("isnt", "isn't"),
    ("3.5", "3.5"),                 # a period before a digit stays
    ("5.", "5"),
    ("yes!", "yes"),                # "!" touches no space: becomes a space, then split away
    ("none", "0"),
    ("1,000", "1000"),              # digit,digit comma in the text: punctuation deleted, not spaced
    ("red, white", "red white"),    # ", " touches a space: deleted
    ("black-and-white", "black and white"),  # "-" touches no space: becomes a space
    ("a/b", "b"),                   # "/" -> space, then "a" is an article
    ("  Yes\n", "yes"),
    ("Im here", "im here"),         # the original's capitalised contraction keys never match
])
def test_official_prediction_normalisation(raw, expected):
    assert clean_prediction(raw) == expected


def test_punctuation_rule_looks_at_the_whole_input():
    # One digit,digit comma anywhere makes every mark vanish, even away from it.
    assert process_punctuation("a-b 1,000") == "ab 1000"
    assert process_punctuation("a-b 1000") == "a b 1000"


# ---------------------------------------------------------------- VQA accuracy
def test_leave_one_out_over_ten_annotators():
    assert vqa_accuracy("2", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)   # (3*2/3 + 7*1)/10
    assert vqa_accuracy("2", ["2"] * 2 + ["3"] * 8) == pytest.approx(0.6)   # (2*1/3 + 8*2/3)/10
    assert vqa_accuracy("2", ["2"] * 1 + ["3"] * 9) == pytest.approx(0.3)   # (1*0 + 9*1/3)/10
    assert vqa_accuracy("2", ["2"] * 4 + ["3"] * 6) == 1.0
    assert vqa_accuracy("4", ["2"] * 4 + ["3"] * 6) == 0.0
    assert vqa_accuracy("Two.", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)  # the prediction is normalised


def test_identical_ground_truth_is_not_normalised():
    # All ten "yes." are identical, so they keep their period; the prediction loses its own.
    assert vqa_accuracy("yes", ["yes."] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes."] * 10) == 0.0
    # Mixed answers get process_punctuation: nine "yes." become "yes".
    assert vqa_accuracy("yes", ["yes."] * 9 + ["no"]) == 1.0


def test_mixed_ground_truth_gets_punctuation_only():
    # "two" in the answers is not turned into "2" (no digit/article step for them),
    # while the prediction "two" is: only the two "2"s match -> 0.6.
    assert vqa_accuracy("two", ["two"] * 5 + ["2"] * 2 + ["3"] * 3) == pytest.approx(0.6)


def test_fewer_than_ten_answers():
    assert vqa_accuracy("2", ["2"]) == 1.0        # single answer: a match is 1.0, not 0
    assert vqa_accuracy("3", ["2"]) == 0.0
    assert vqa_accuracy("2", ["2", "2", "2"]) == pytest.approx(2 / 3)  # leave-one-out over three
    with pytest.raises(ValueError):
        vqa_accuracy("2", [])


def test_alternative_spellings():
    assert vqa_match_any("two", ["2", "two"]) == 1.0
    assert vqa_match_any("Gray.", ["gray", "grey"]) == 1.0
    assert vqa_match_any("grey", ["gray"]) == 0.0
    assert vqa_match_any("The top left", ["top left"]) == 1.0


def test_key_row_decides_the_formula():
    ten = {"answers": ["2"] * 3 + ["3"] * 7}
    assert short_answer_score("2", ten)["vqa_accuracy"] == pytest.approx(0.9)  # official formula
    three = {"answers": ["2", "2", "two"]}
    assert short_answer_score("2", three) == {"vqa_accuracy": 1.0, "exact_match": 1.0}  # alternatives
    assert short_answer_score("3", three) == {"vqa_accuracy": 0.0, "exact_match": 0.0}


def test_exact_match_is_normalize_modules():
    assert exact_match is normalize.exact_match
    assert exact_match("Two.", ["2"]) and not exact_match("red circle", ["red"])


# ---------------------------------------------------------------- multiple choice
CHOICES = ["cat", "dog", "cow"]


@pytest.mark.parametrize("text", ["B", "b", "B.", "(B)", "B) dog", "B. dog", "(B) dog", "B: dog", "dog", " Dog. "])
def test_choice_forms_resolve_to_the_letter(text):
    assert choice_letter(text, CHOICES) == "B"


@pytest.mark.parametrize("text", ["A dog", "D", "horse", "B dog", ""])
def test_unresolvable_choices(text):
    assert choice_letter(text, CHOICES) is None


def test_multiple_choice_correct_and_its_row_scores():
    assert multiple_choice_correct("B) cow", CHOICES, "B")   # the letter wins over the text
    assert not multiple_choice_correct("C", CHOICES, "B")
    assert multiple_choice_correct("b", CHOICES, "b")
    row = {"answers": ["B"], "choices": CHOICES, "answer_letter": "B"}
    assert short_answer_score("(B) dog", row) == {"vqa_accuracy": 1.0, "exact_match": 1.0, "multiple_choice": 1.0}
    assert short_answer_score("cow", row)["multiple_choice"] == 0.0


# ---------------------------------------------------------------- captions
def test_bleu_identical_and_brevity_penalty():
    scores, _ = bleu({"1": "A man rides a horse."}, {"1": ["a man rides a horse"]})
    assert scores == pytest.approx([1.0] * 4)
    # 2 words against 6: every precision that exists is 1, brevity penalty exp(1 - 6/2).
    scores, _ = bleu({"1": "the cat"}, {"1": ["the cat sat on the mat"]})
    assert scores[0] == pytest.approx(math.exp(-2))
    assert scores[1] == pytest.approx(math.exp(-2))
    # No trigram at all: coco's (0 + 1e-15) / (0 + 1e-9) makes p3 = 1e-6, not 0.
    assert scores[2] == pytest.approx(1e-6 ** (1 / 3) * math.exp(-2))


def test_bleu_is_corpus_level_with_closest_reference_length():
    cands = {"1": "a b c d", "2": "a b w x"}
    refs = {"1": ["a b c d"], "2": ["w x y z"]}
    # Summed counts: p1 = 6/8, p2 = 4/6, p3 = 2/4, p4 = 1/2 (a mean of per-image scores would be ~0.5).
    assert bleu(cands, refs)[0][3] == pytest.approx((0.75 * 2 / 3 * 0.5 * 0.5) ** 0.25)
    # Reference lengths 1 and 5 are both 2 from 3: the tie goes to the shorter, so no brevity penalty.
    assert bleu({"1": "the cat sat"}, {"1": ["cat", "the cat sat on mat"]})[0][1] == pytest.approx(1.0)


def test_rouge_l():
    assert rouge_l({"1": "a man rides a horse"}, {"1": ["A man rides a horse."]})[0] == pytest.approx(1.0)
    # LCS "the cat on mat" = 4: P = 4/5, R = 4/6, F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    p, r = 4 / 5, 4 / 6
    expected = 2.44 * p * r / (r + 1.44 * p)
    assert rouge_l({"1": "the cat sat on mat"}, {"1": ["the cat is on the mat"]})[0] == pytest.approx(expected)
    assert expected == pytest.approx(0.71554, abs=1e-5)
    # Precision and recall are maxed separately over references: (P=.5, R=1) and (P=1, R=.5) give F = 1.
    assert rouge_l({"1": "a b c d"}, {"1": ["a b", "a b c d e f g h"]})[0] == pytest.approx(1.0)
    assert rouge_l({"1": ""}, {"1": ["a b"]})[0] == 0.0


def test_cider_d_hand_computed():
    refs = {"1": ["red car on road"], "2": ["blue sky above hills"]}  # no shared words: every df is 1
    score, per = cider_d({"1": "red car on road", "2": "green tree"}, refs)
    assert per["1"] == pytest.approx(10.0)   # cosine 1 at every order, no length penalty, x10
    assert per["2"] == 0.0                   # nothing in common
    assert score == pytest.approx(5.0)
    # "red car": unigram cosine 2/(sqrt2*2) = 1/sqrt2, bigram 1/sqrt3, no 3/4-grams; the length
    # penalty counts bigrams: 1 vs 3, exp(-(2^2) / (2 * 6^2)).
    _, per = cider_d({"1": "red car", "2": "blue sky above hills"}, refs)
    assert per["1"] == pytest.approx(10 * (1 / math.sqrt(2) + 1 / math.sqrt(3)) / 4 * math.exp(-4 / 72))
    # Clipping: "red" four times counts as min(4, 1) against the reference: cosine 1/8, not 1/2.
    _, per = cider_d({"1": "red red red red", "2": "blue sky above hills"}, refs)
    assert per["1"] == pytest.approx(10 * (1 / 8) / 4)


def test_cider_d_document_frequency_zeroes_common_ngrams():
    # "red" is in both images' references: idf log(2/2) = 0, so it carries no weight.
    refs = {"1": ["red car on road"], "2": ["red sky above hills"]}
    _, per = cider_d({"1": "red car on road", "2": "red"}, refs)
    assert per["2"] == 0.0
    assert per["1"] == pytest.approx(10.0)


# ---------------------------------------------------------------- ratings
@pytest.mark.parametrize("text, expected", [
    ('{"explanation": "sharp and well lit", "score": 4}', 4),
    ("Score: 3", 3),
    ('Here you go:\n```json\n{"score": 2, "explanation": "blurry"}\n```', 2),
    ('{"score": "5"}', 5),
    ("3/5", 3),
    ("I give it a 1.", 1),
    ("garbage", None),
    ("10 out of 10", None),         # no stand-alone digit 0-5
    ("7", None),
    ("rated 9/10", None),
    ("-1", None),
    ("4.5", None),
    ('{"score": 7}', None),
    ("", None),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_gold_score_forms():
    assert gold_score([3]) == gold_score("3") == gold_score(["3"]) == gold_score(3) == 3
    with pytest.raises(ValueError, match="not an integer"):
        gold_score(["x"])


def test_rating_scores_hand_computed():
    s = rating_scores([3, 4, 0, 5], [3, 2, 1, 5])
    # errors 0, 2, 1, 0; ranks (2,3,1,4) vs (3,2,1,4): sum d^2 = 2, rho = 1 - 6*2/(4*15)
    assert s == pytest.approx({"mae": 0.75, "exact_accuracy": 0.5, "within_1_accuracy": 0.75, "spearman": 0.8})


def test_spearman_ties_and_undefined():
    # ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): cov 4.5, variances 4.5 and 5
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([2, 2, 2], [1, 2, 3]) is None
    assert spearman([1], [1]) is None
    assert rating_scores([], [])["mae"] is None


def test_spearman_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    x, y = [0, 3, 3, 5, 1, 2, 4, 4], [1, 3, 2, 5, 0, 2, 5, 3]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
