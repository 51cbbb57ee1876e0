"""Rate how well each image matches a search term, 0-5, with a short explanation.

    python -m llava.tasks.tag_rating --model-path checkpoints/llava-smol-rating-merged \\
        --input playground/data/tag_rating/test/pairs.jsonl --image-folder playground/data/tag_rating/images \\
        --output ratings.jsonl [--annotation-file playground/data/tag_rating/test/answers.jsonl]
    python -m llava.tasks.tag_rating --input pairs.jsonl --image-folder D --output ratings.jsonl   # embedded default

--input: JSONL, JSON, CSV, TSV or Parquet rows with question_id (or id), image and
tag (category optional).  Every line of --output is a JSON object with an integer
score 0-5:

    {"question_id": "r1", "image": "a.jpg", "tag": "red circle", "score": 4,
     "explanation": "...", "text": "{\\"explanation\\": ..., \\"score\\": 4}", "raw": "<the model's own text>",
     "flagged": false, "model_id": ..., "answer_id": ..., "metadata": {"category": ...}}

Generation is batch inference's (llava.eval.model_vqa: batched, length-sorted,
resumable, bad rows to OUTPUT.errors.jsonl: a field that is not text (bytes that
are not UTF-8, an unpaired surrogate escape), an id that is not a string or an
integer, an image path outside --image-folder).  Flags and paths are checked
before the model loads; an output (the ratings, OUTPUT.errors.jsonl,
OUTPUT.stats.json) that is one of the inputs is refused before any work.  An answer with no valid JSON score
is asked again with constrained decoding: the answer is forced to begin
`{"explanation": "`, the explanation ends at its closing quote, and the score is
the digit 0-5 the model finds most likely after `", "score": `.  Such lines have
"flagged": true.  The run prints tokens/s and peak memory, and with
--annotation-file the rating metrics (MAE, exact, within-1, Spearman).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import torch

from llava.conversation import USER, first_turn_with_image, get_template
from llava.data.tables import TableError, has_undecodable, is_missing, open_table
from llava.eval.evaluate import evaluate, format_table, read_annotations, read_answers
from llava.eval.json_lines import unpaired_surrogate
from llava.eval.model_vqa import run
from llava.eval.output_paths import refuse_outputs_over_images
from llava.eval.question_file import BadLine, Question, image_name_error, question_id_of
from llava.eval.resumable import ResumableRun, Words, add_batch_args, batch_outputs, check_files
from llava.mm_utils import load_image
from llava.model.args import add_model_args
from llava.model.flags import check_flags
from llava.model.inputs import build_batch, render_prompt
from llava.tasks.rating_prompt import ANSWER_PREFIX, SCORE_PREFIX, format_answer, parse_answer, rating_prompt

log = logging.getLogger(__name__)
WORDS = Words(items="pairs", already="already rated", results="ratings", verb="rate",
              torn="that pair is rated again")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    add_batch_args(ap, "--output", max_new_tokens=64)
    ap.add_argument("--input", required=True, help="rows of question_id (or id), image, tag")
    ap.add_argument("--image-folder", default="", help="image paths in --input are relative to this")
    ap.add_argument("--output", required=True, help="ratings JSONL (resumed when it exists)")
    ap.add_argument("--annotation-file", default=None, help="gold scores: print the rating metrics")
    args = ap.parse_args(argv)
    check_flags(ap, args)  # model and count flags, before anything is read or loaded
    # What model_vqa.run reads: greedy, one beam.
    args.temperature, args.top_p, args.num_beams = 0.0, None, 1
    return args


def _value_error(values: dict) -> str | None:
    """A field that cannot be text: bytes that were not UTF-8, or a lone surrogate escape from JSON."""
    for name, value in values.items():
        if isinstance(value, str) and has_undecodable(value):
            return f"field {name!r} holds bytes that are not UTF-8"
    where = unpaired_surrogate(values)
    return None if where is None else f"{where} holds an unpaired surrogate escape, which is not text"


def read_pairs(path: str | Path) -> tuple[list[Question], list[BadLine], dict[str, str]]:
    """Questions whose text is the rating prompt, the unusable rows, and each question's tag."""
    questions, bad, tags, seen = [], [], {}, {}
    for n, rec in enumerate(open_table(path).records, 1):
        where, line = str(rec.loc), rec.loc.line or rec.loc.row or n
        error = rec.error or _value_error(rec.values)
        if error:
            bad.append(BadLine(line, None, f"{where}: {error}"))
            continue
        v = rec.values
        qid = v.get("question_id", v.get("id"))
        if is_missing(qid):
            bad.append(BadLine(line, None, f"{where}: no question_id (or id)"))
            continue
        qid, error = question_id_of(qid)
        if error:
            bad.append(BadLine(line, None, f"{where}: {error}"))
            continue
        tag = v.get("tag")
        if is_missing(tag) or not isinstance(tag, (str, int, float)):
            bad.append(BadLine(line, qid, f"{where}: {qid!r} has no tag" if is_missing(tag)
                               else f"{where}: {qid!r}: tag must be text"))
            continue
        if qid in seen:
            bad.append(BadLine(line, qid, f"{where}: {qid!r} repeats {seen[qid]}; only the first is rated"))
            continue
        image = None if is_missing(v.get("image")) else v["image"]
        error = image_name_error(image) if image is not None else None
        if error:
            bad.append(BadLine(line, qid, f"{where}: {qid!r}: {error}"))
            continue
        seen[qid] = where
        tags[qid] = str(tag).strip()
        category = None if is_missing(v.get("category")) else str(v["category"])
        questions.append(Question(qid, rating_prompt(tags[qid]), image, category, line))
    return questions, bad, tags


class ConstrainedRater:
    """The score (and explanation) of an answer that could not be parsed, by constrained decoding."""

    def __init__(self, loaded, conv_mode: str | None, image_folder: str, max_new_tokens: int):
        self.loaded, self.conv_mode = loaded, conv_mode
        self.image_folder = Path(image_folder)
        self.max_new_tokens = max_new_tokens
        self.generated_tokens = 0

    def _prefix(self, question: Question, partial: str) -> str:
        """The prompt with the assistant's answer begun as `partial`, in the model's template."""
        if not self.loaded.family.native:  # another family: its generation prompt, then the answer begun
            return render_prompt(self.loaded, question.text, question.image is not None) + partial
        template = get_template(self.conv_mode or self.loaded.conv_mode)
        user = first_turn_with_image(question.text) if question.image else question.text
        text, spans = template.render([(USER, user), ("assistant", partial)], eos_token=self.loaded.tokenizer.eos_token)
        return text[:spans[-1][0]] + partial

    @torch.inference_mode()
    def rate(self, question: Question) -> tuple[int, str]:
        loaded = self.loaded
        image = load_image(self.image_folder / question.image) if question.image else None
        prefix = self._prefix(question, ANSWER_PREFIX)
        batch = build_batch(loaded, [prefix], [image])
        out = loaded.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    stop_strings=['"'], tokenizer=loaded.tokenizer,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
        new = out[0, batch["input_ids"].shape[1]:]
        self.generated_tokens += len(new)
        explanation = loaded.tokenizer.decode(new, skip_special_tokens=True).split('"')[0].replace("\\", "").strip()
        stem = prefix + explanation + SCORE_PREFIX
        candidates = [stem + str(d) for d in range(6)]
        batch = build_batch(loaded, candidates, [image] * 6)
        logprobs = torch.log_softmax(loaded.model(**batch).logits.float(), dim=-1)
        rows = [batch["input_ids"][r][batch["attention_mask"][r].bool()].tolist() for r in range(6)]
        common = 0
        while all(len(r) > common for r in rows) and len({r[common] for r in rows}) == 1:
            common += 1
        totals = []
        for r, ids in enumerate(rows):
            # where row r's tokens sit (after its padding; BLIP-2's processor pads after its query tokens)
            at = batch["attention_mask"][r].bool().nonzero().squeeze(1).tolist()
            # logits at position p predict the token at p + 1
            totals.append(sum(logprobs[r, at[j] - 1, ids[j]].item() for j in range(common, len(ids))))
        return max(range(6), key=lambda d: totals[d]), explanation


class RatingWriter:
    """Turns batch inference's answer records into rating lines, then writes them (resumably)."""

    def __init__(self, answers_file, questions: list[Question], tags: dict[str, str], rater: ConstrainedRater):
        self.answers_file = answers_file
        self.by_id = {q.question_id: q for q in questions}
        self.tags, self.rater = tags, rater
        self.flagged = 0
        self.errors: list[dict] = []  # constrained retries that failed: to the errors file, asked again next run

    @property
    def done(self):
        return self.answers_file.done

    def write(self, records: list[dict]) -> None:
        ratings = []
        for r in records:
            try:
                ratings.append(self.rating(r))
            except Exception as exc:  # e.g. the image became unreadable between the two reads
                q = self.by_id[r["question_id"]]
                log.warning("constrained retry of %s failed: %s", q.question_id, exc)  # the run goes on
                self.errors.append({"line": q.line, "question_id": q.question_id,
                                    "error": f"unparseable answer, and the constrained retry failed: {exc}"})
        self.answers_file.write(ratings)

    def rating(self, record: dict) -> dict:
        q = self.by_id[record["question_id"]]
        raw = record["text"]
        score, explanation = parse_answer(raw)
        flagged = score is None
        if flagged:
            self.flagged += 1
            score, explanation = self.rater.rate(q)
        text = format_answer(explanation or "", score)
        return {"question_id": q.question_id, "image": q.image, "tag": self.tags[q.question_id], "score": score,
                "explanation": explanation or "", "text": text, "raw": raw, "flagged": flagged,
                "answer_id": record["answer_id"], "model_id": record["model_id"], "metadata": record["metadata"]}


def peak_memory() -> dict:
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    outputs = check_files(args, {"--input": args.input, "--annotation-file": args.annotation_file},
                          {"--image-folder": args.image_folder or None},
                          batch_outputs("--output", args.output,
                                        {"the stats file of --output": Path(args.output).with_suffix(".stats.json")}))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        questions, bad, tags = read_pairs(args.input)
    except TableError as exc:
        raise SystemExit(f"error: {exc}") from None
    refuse_outputs_over_images(outputs, args.image_folder, [(q.image, q.line) for q in questions if q.image])
    if not questions and not bad:
        print(f"{args.input}: no pairs to rate (the file is empty)")
    flagged = 0
    with ResumableRun(args.output, args, WORDS, flag="--output") as batch:
        batch.errors += [{"line": b.line, "question_id": b.question_id, "error": b.error} for b in bad]
        todo = batch.todo(questions)
        if todo:
            rater = ConstrainedRater(batch.model(), args.conv_mode, args.image_folder, args.max_new_tokens)
            writer = RatingWriter(batch.store, todo, tags, rater)
            start = time.perf_counter()
            batch.add(run(batch.model(), todo, args, writer, batch.model_id))
            batch.stats["seconds"] = time.perf_counter() - start  # with the constrained retries
            batch.stats["generated_tokens"] += rater.generated_tokens
            flagged = writer.flagged
            batch.errors += writer.errors
    s, errors = batch.stats["seconds"], batch.errors
    result = {"rated": batch.stats["answered"], "flagged": flagged, "seconds": round(s, 2),
              "tokens_per_second": round(batch.stats["generated_tokens"] / s, 1) if s else 0.0, **peak_memory(),
              "errors": len(errors)}
    print(f"rated {result['rated']} pairs in {s:.1f} s, {result['tokens_per_second']} generated tokens/s, "
          f"peak memory {result['peak_rss_mib']} MiB RSS"
          + (f", {result['peak_cuda_mib']} MiB CUDA" if "peak_cuda_mib" in result else "")
          + f"; {flagged} unparseable answers scored by constrained decoding (flagged)" + batch.errors_note())
    outputs["the stats file of --output"].write_text(json.dumps(result, indent=1) + "\n")
    if args.annotation_file:
        key = read_annotations(args.annotation_file, "rating")  # its unusable lines are printed, and left out
        if not key:
            print(f"{args.annotation_file}: no usable gold score; no metrics")
            return result
        scores = evaluate(read_answers(args.output), key, metric="rating")
        print(format_table(scores))
        result["metrics"] = scores["scores"]
    return result


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
