"""Caption metrics as the COCO caption evaluation (coco-caption / pycocoevalcap) computes them:
corpus BLEU-1..4, ROUGE-L and CIDEr-D, re-implemented here in a few lines each.

Why not depend on pycocoevalcap: its scorers are small pure Python, but the wheel
is ~100 MB of Java jars (tokenizer, METEOR, SPICE) and pulls in pycocotools; we
want none of that. Its PTB tokenizer needs Java, so captions are tokenized by
`tokenize` below: lower case, words of letters/digits (an inner apostrophe
kept, "don't"), all other punctuation dropped. PTB would split "don't" into
"do n't" and keep hyphenated words whole, so scores on such text can differ
slightly from coco-caption's; on plain captions they agree.

Each function takes `candidates: {image_id: str}` and `references:
{image_id: [str, ...]}` with the same keys, as coco-caption's scorers do, and
returns (corpus score, per-image scores). An empty candidate (a missing answer)
scores 0 everywhere.
"""

from __future__ import annotations

import math
import re
from collections import Counter

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _check(candidates: dict, references: dict) -> list:
    if set(candidates) != set(references):
        raise ValueError("candidates and references must have the same image ids")
    if any(not refs for refs in references.values()):
        raise ValueError("every image needs at least one reference")
    return sorted(candidates, key=str)


# ---------------------------------------------------------------- BLEU (bleu_scorer.py)
# coco-caption adds these to avoid 0/0 and log(0); they are why a corpus with no
# matching 4-gram gets a tiny, not zero, BLEU-4, and why a perfect match is 1 - 1e-9ish.
_TINY, _SMALL = 1e-15, 1e-9


def bleu(candidates: dict[str, str], references: dict[str, list[str]], n: int = 4) -> tuple[list[float], dict]:
    """Corpus BLEU-1..n: clipped n-gram counts summed over the corpus, cumulative geometric mean of
    the precisions, brevity penalty exp(1 - r/c) when the candidates are shorter in total, where
    r sums, per image, the reference length closest to the candidate's (coco's "closest")."""
    keys = _check(candidates, references)
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    per_image = {}
    for key in keys:
        cand = tokenize(candidates[key])
        refs = [tokenize(r) for r in references[key]]
        # closest reference length, ties to the shorter: min over (|len - c|, len)
        r = min((abs(len(ref) - len(cand)), len(ref)) for ref in refs)[1]
        g, c = [], []
        for k in range(1, n + 1):
            max_ref = Counter()
            for ref in refs:
                max_ref |= ngrams(ref, k)  # per n-gram, the most any one reference has
            counts = ngrams(cand, k)
            g.append(max(len(cand) - k + 1, 0))
            c.append(sum(min(cnt, max_ref[gram]) for gram, cnt in counts.items()))
        per_image[key] = _bleu_from_counts(g, c, len(cand), r)[-1]
        test_len, ref_len = test_len + len(cand), ref_len + r
        guess = [a + b for a, b in zip(guess, g)]
        correct = [a + b for a, b in zip(correct, c)]
    return _bleu_from_counts(guess, correct, test_len, ref_len), per_image


def _bleu_from_counts(guess: list[int], correct: list[int], test_len: int, ref_len: int) -> list[float]:
    scores, product = [], 1.0
    for k, (g, c) in enumerate(zip(guess, correct)):
        product *= (c + _TINY) / (g + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ---------------------------------------------------------------- ROUGE-L (rouge.py)
def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_single(candidate: str, refs: list[str], beta: float = 1.2) -> float:
    """LCS-based F-measure; precision and recall are each the max over the references (not the F of
    the best reference), and recall weighs beta^2 = 1.44 times precision, as coco-caption does."""
    cand = tokenize(candidate)
    if not cand:
        return 0.0
    lcs = [(_lcs(r, cand), len(r)) for r in map(tokenize, refs)]
    prec = max(m / len(cand) for m, _ in lcs)
    rec = max(m / n if n else 0.0 for m, n in lcs)
    if prec == 0 or rec == 0:
        return 0.0
    return (1 + beta ** 2) * prec * rec / (rec + beta ** 2 * prec)


def rouge_l(candidates: dict[str, str], references: dict[str, list[str]]) -> tuple[float, dict]:
    keys = _check(candidates, references)
    per_image = {k: rouge_l_single(candidates[k], references[k]) for k in keys}
    return (sum(per_image.values()) / len(keys) if keys else 0.0), per_image


# ---------------------------------------------------------------- CIDEr-D (cider_scorer.py)
def cider_d(candidates: dict[str, str], references: dict[str, list[str]], n: int = 4,
            sigma: float = 6.0) -> tuple[float, dict]:
    """CIDEr-D: per n-gram order, the cosine of tf-idf vectors (document frequency = the number of
    images whose references contain the n-gram, over the evaluated set), with the candidate's
    counts clipped by the reference's, times a gaussian penalty exp(-d^2 / 2 sigma^2) on the
    length difference d; averaged over orders 1..n and references, times 10.

    coco-caption measures "length" in bigrams (words - 1); kept, though the difference d is the
    same as in words for any non-empty caption, and an empty one scores 0 anyway."""
    keys = _check(candidates, references)
    if not keys:
        return 0.0, {}
    cand_counts = {k: _counts(tokenize(candidates[k]), n) for k in keys}
    ref_counts = {k: [_counts(tokenize(r), n) for r in references[k]] for k in keys}
    df = Counter()
    for k in keys:
        df.update({g for ref in ref_counts[k] for g in ref})
    log_docs = math.log(len(keys))

    def vectors(counts: Counter):
        vec = [dict() for _ in range(n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (log_docs - math.log(max(1.0, df[gram])))
        norms = [math.sqrt(sum(v * v for v in order.values())) for order in vec]
        length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, norms, length

    per_image = {}
    for k in keys:
        vec, norm, length = vectors(cand_counts[k])
        total = 0.0
        for ref in ref_counts[k]:
            rvec, rnorm, rlength = vectors(ref)
            penalty = math.exp(-((length - rlength) ** 2) / (2 * sigma ** 2))
            for o in range(n):
                dot = sum(min(v, rvec[o].get(g, 0.0)) * rvec[o].get(g, 0.0) for g, v in vec[o].items())
                if norm[o] != 0 and rnorm[o] != 0:
                    dot /= norm[o] * rnorm[o]
                total += dot * penalty
        per_image[k] = total / n / len(ref_counts[k]) * 10.0
    return sum(per_image.values()) / len(keys), per_image


def _counts(words: list[str], n: int) -> Counter:
    counts = Counter()
    for k in range(1, n + 1):
        counts.update(ngrams(words, k))
    return counts


def caption_scores(candidates: dict[str, str], references: dict[str, list[str]]) -> dict:
    """All three on one set: {"bleu_1".."bleu_4", "rouge_l", "cider_d"} and per-image rouge_l / cider_d."""
    bleus, _ = bleu(candidates, references)
    rouge, rouge_per = rouge_l(candidates, references)
    cider, cider_per = cider_d(candidates, references)
    scores = {f"bleu_{k + 1}": b for k, b in enumerate(bleus)}
    scores.update(rouge_l=rouge, cider_d=cider)
    return {"scores": scores, "per_image": {"rouge_l": rouge_per, "cider_d": cider_per}}
