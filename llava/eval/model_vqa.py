"""Batch inference: a question JSONL in, LLaVA's answer JSONL out.

    python -m llava.eval.model_vqa --model-path checkpoints/llava-smol-task-merged \\
        --question-file playground/data/sample_task_llava/val_questions.jsonl \\
        --image-folder playground/data/sample_task/images --answers-file answers.jsonl

Each answer line is the original's `{question_id, prompt, text, answer_id,
model_id, metadata}`.  What differs from the original model_vqa(_loader):

  * batched: questions sorted by prompt length (longest first, so a batch that
    does not fit in memory fails at once, not an hour in), left-padded,
    `--batch-size` at a time; images decoded and preprocessed in DataLoader
    workers while the model generates;
  * the prompt's shared parts computed once (llava.model.prefix_cache): the
    system prompt for the whole run, an image and its tokens once per batch for
    all the questions about it (they are batched together);
  * resumable: answers are appended and fsynced per batch; run the same
    command after a kill and it answers only what is missing (`--no-resume`
    starts over); the run is resumable.py's, which tag rating and labeling share;
  * a bad question line (not UTF-8, not a JSON object, an unpaired surrogate
    escape, an odd question_id, an image path outside --image-folder; see
    question_file.py), a missing or corrupt image, or a prompt longer than
    the model's context is an error record in ANSWERS.errors.jsonl (line,
    question_id, reason) and the run goes on; errored questions are retried
    by the next run; so is an unreadable line of the answers file resumed;
  * every flag and path is checked before the model loads, and an answers
    file (or its errors file) that is one of the inputs, a directory or a
    file of the model is refused before any work (output_paths.py);
  * answers appear in batch order, not question order: match them by
    question_id (llava.eval.evaluate does).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from llava.constants import MULTIPLE_CHOICE_PROMPT
from llava.eval.answers_file import AnswersFile
from llava.eval.output_paths import refuse_outputs_over_images
from llava.eval.question_file import Question, get_chunk, read_questions
from llava.eval.resumable import ResumableRun, add_batch_args, batch_outputs, check_files
from llava.mm_utils import ImageError, load_image
from llava.model.args import add_model_args
from llava.model.cpu_features import cpu_has_native_bf16
from llava.model.families import FamilyError
from llava.model.flags import check_flags
from llava.model.inputs import (
    check_image_count,
    family_to_model,
    generate_batch,
    pad_left,
    prompt_ids,
    render_prompt,
    to_model,
)
from llava.model.prefix_cache import PrefixCache, common_prefix, image_grouped_batches, image_part

log = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap, required=True)
    add_batch_args(ap, "--answers-file", max_new_tokens=128)
    ap.add_argument("--question-file", required=True)
    ap.add_argument("--image-folder", default="", help="image paths in the questions are relative to this")
    ap.add_argument("--answers-file", required=True)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    # The underscore spellings are the original model_vqa(_loader)'s.
    ap.add_argument("--top-p", "--top_p", type=float, default=None)
    ap.add_argument("--num-beams", "--num_beams", type=int, default=1)
    ap.add_argument("--min-new-tokens", type=int, default=0, help="no end of answer before this many tokens")
    ap.add_argument("--length-penalty", type=float, default=1.0,
                    help="beam search: > 1 favours longer answers, < 1 shorter")
    ap.add_argument("--num-chunks", type=int, default=1, help="split the questions into this many chunks ...")
    ap.add_argument("--chunk-idx", type=int, default=0, help="... and answer this one (0-based)")
    ap.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                    help="recompute the prompt prefix all questions share (the system prompt) in every batch")
    ap.add_argument("--no-image-prefix", dest="image_prefix", action="store_false",
                    help="run an image's tokens once per question, not once per image in a batch")
    ap.add_argument("--cpu-bf16", action="store_true",
                    help="on a CPU, run the matmuls in bf16 autocast (weights stay fp32): faster where the CPU "
                         "has bf16 instructions (AVX512-BF16 or AMX); answers may differ a little from fp32's")
    ap.add_argument("--seed", type=int, default=0, help="for sampling (--temperature > 0)")
    ap.add_argument("--single-pred-prompt", action="store_true",
                    help=f"append '{MULTIPLE_CHOICE_PROMPT}' to every question, as the original's ScienceQA and "
                         "MMBench runs do (the answer record's prompt includes it)")
    args = ap.parse_args(argv)
    # Every flag is checked here, before a file is read or the model loads (llava/model/flags.py).
    check_flags(ap, args)
    if args.num_chunks < 1:
        ap.error(f"--num-chunks must be at least 1, got {args.num_chunks}")
    if not 0 <= args.chunk_idx < args.num_chunks:
        ap.error(f"--chunk-idx must be in [0, {args.num_chunks}), got {args.chunk_idx}")
    return args


class QuestionImages(Dataset):
    """Item i: the question's prompt ids and its preprocessed image (or the reason it has none)."""

    def __init__(self, questions: list[Question], ids: list[list[int]], image_folder: str, image_processor,
                 prompts: list[str] | None = None):
        self.questions, self.ids = questions, ids
        self.image_folder = Path(image_folder)
        self.image_processor = image_processor
        self.prompts = prompts  # another family's rendered prompts: its processor makes the batch in collate

    def __len__(self):
        return len(self.questions)

    def __getitem__(self, i: int) -> dict:
        q = self.questions[i]
        item = {"index": i, "ids": self.ids[i], "image": q.image, "pixels": None, "error": None}
        if self.prompts is not None:
            item["prompt"], item["picture"] = self.prompts[i], None
        if q.image:
            try:
                image = load_image(self.image_folder / q.image)
                if self.prompts is not None:
                    item["picture"] = image
                else:
                    item["pixels"] = self.image_processor(image, return_tensors="pt")["pixel_values"][0]
            except ImageError as exc:
                item["error"] = str(exc)
        return item


def collate(items: list[dict], pad_id: int, per_image: bool = False) -> dict:
    """Left-padded ids and stacked pixels of the usable items; the others with their errors.

    per_image: pixels of each distinct image once, and image_rows[i] the image of row i.
    """
    ok = [it for it in items if it["error"] is None]
    batch = {"indices": [it["index"] for it in ok],
             "errors": [(it["index"], it["error"]) for it in items if it["error"] is not None]}
    if ok:
        batch["input_ids"], batch["attention_mask"] = pad_left([it["ids"] for it in ok], pad_id)
        if per_image:
            first = {}
            for it in ok:
                first.setdefault(it["image"], it)
            order = list(first)
            batch["image_rows"] = [order.index(it["image"]) for it in ok]
            ok = list(first.values())
        pixels = [it["pixels"] for it in ok if it["pixels"] is not None]
        batch["pixels"] = torch.stack(pixels) if pixels else None
    return batch


def family_collate(items: list[dict], family, processor) -> dict:
    """As collate, for another family: its processor makes the batch (ids, masks and image tensors)."""
    ok = [it for it in items if it["error"] is None]
    batch = {"indices": [it["index"] for it in ok],
             "errors": [(it["index"], it["error"]) for it in items if it["error"] is not None]}
    if ok:
        batch["inputs"] = family.inputs(processor, [it["prompt"] for it in ok], [it["picture"] for it in ok])
    return batch


def length_sorted_batches(lengths: list[int], batch_size: int, groups: list | None = None) -> list[list[int]]:
    """Batches of indices, longest first; with `groups`, a batch holds one group's indices only."""
    groups = groups or [0] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches = []
    for g in dict.fromkeys(groups[i] for i in order):
        members = [i for i in order if groups[i] == g]
        batches += [members[b:b + batch_size] for b in range(0, len(members), batch_size)]
    return batches


def answer_id(model_id: str, question_id: str, text: str) -> str:
    """Stable across runs (the original's is a random shortuuid): same model and answer, same id."""
    return hashlib.sha1(f"{model_id}\0{question_id}\0{text}".encode()).hexdigest()[:22]


def max_prompt_chars(loaded) -> int:
    """More characters than any text that fits in the context can have: no token covers more characters
    than its own string in the vocabulary has; twice that, for normalizers that shorten the text."""
    longest = max((len(t) for t in loaded.tokenizer.get_vocab()), default=1)
    return 2 * loaded.context_len * max(longest, 1)


def run(loaded, questions: list[Question], args, writer: AnswersFile, model_id: str) -> dict:
    """Answer `questions` into `writer`; return counts, errors and throughput."""
    bf16 = getattr(args, "cpu_bf16", False) and loaded.model.device.type == "cpu"
    if bf16:
        if not cpu_has_native_bf16():
            log.warning("--cpu-bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX); expect it slower")
    # Around everything, the prefix caches included: their keys and values must be bf16 too.
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        return _run(loaded, questions, args, writer, model_id)


def _run(loaded, questions: list[Question], args, writer: AnswersFile, model_id: str) -> dict:
    errors, todo, ids, prompts = [], [], [], []
    most_chars = max_prompt_chars(loaded)
    for q in questions:
        if len(q.text) > most_chars:  # refused before tokenizing it all, which takes long for megabytes
            errors.append({"line": q.line, "question_id": q.question_id,
                           "error": f"question text of {len(q.text)} characters cannot fit in the model's "
                                    f"context of {loaded.context_len} tokens"})
            continue
        try:
            prompt = render_prompt(loaded, q.text, q.image is not None, args.conv_mode, q.history)
        except FamilyError as exc:  # e.g. a question without an image for BLIP-2
            errors.append({"line": q.line, "question_id": q.question_id, "error": str(exc)})
            continue
        row = prompt_ids(loaded, prompt)
        try:
            check_image_count(loaded, row, q.image is not None)  # e.g. "<image>" typed into the text
        except ValueError as exc:
            errors.append({"line": q.line, "question_id": q.question_id, "error": f"question text: {exc}"})
            continue
        if len(row) + args.max_new_tokens > loaded.context_len:
            errors.append({"line": q.line, "question_id": q.question_id,
                           "error": f"prompt is {len(row)} tokens; with --max-new-tokens {args.max_new_tokens} it "
                                    f"exceeds the model's context of {loaded.context_len}"})
            continue
        todo.append(q)
        ids.append(row)
        prompts.append(prompt)
    native = loaded.family.native  # LLaVA-1.5: our exact tokenization, and the prompt caches built on it
    prefix = part = None
    if native and getattr(args, "prefix_cache", True) and args.num_beams == 1 and len(todo) > 1:
        shared = common_prefix(ids, loaded.image_token_id)
        if len(shared) >= 8:  # below that, not worth a cache copy per batch
            prefix = PrefixCache(loaded, shared)
            ids = [row[len(shared):] for row in ids]
            if getattr(args, "image_prefix", True) and len({q.image for q in todo}) < len(todo):
                part = image_part(ids, loaded.image_token_id)
                ids = [row[len(part):] for row in ids] if part else ids
    if part:
        batches = image_grouped_batches([q.image for q in todo], [len(r) for r in ids], args.batch_size)
    elif native:
        batches = length_sorted_batches([len(r) for r in ids], args.batch_size)
    else:  # a processor batches questions with images or without, not both
        batches = length_sorted_batches([len(r) for r in ids], args.batch_size, [q.image is None for q in todo])
    dataset = QuestionImages(todo, ids, args.image_folder, loaded.image_processor, None if native else prompts)
    collate_fn = (partial(collate, pad_id=loaded.tokenizer.pad_token_id, per_image=bool(part)) if native
                  else partial(family_collate, family=loaded.family, processor=loaded.processor))
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                        num_workers=args.num_workers if len(todo) > args.batch_size else 0)
    answered = tokens = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="answering", unit="q", disable=not args.progress)
    try:
        for batch in loader:
            for i, msg in batch["errors"]:
                errors.append({"line": todo[i].line, "question_id": todo[i].question_id, "error": msg})
            records = []
            if batch["indices"]:
                if native:
                    inputs = to_model(loaded, batch["input_ids"], batch["attention_mask"], batch["pixels"], prefix,
                                      part, batch.get("image_rows"))
                else:
                    inputs = family_to_model(loaded, batch["inputs"])
                texts, counts = generate_batch(loaded, inputs, max_new_tokens=args.max_new_tokens,
                                               temperature=args.temperature, top_p=args.top_p,
                                               num_beams=args.num_beams,
                                               min_new_tokens=getattr(args, "min_new_tokens", 0),
                                               length_penalty=getattr(args, "length_penalty", 1.0))
                for i, text in zip(batch["indices"], texts):
                    q = todo[i]
                    records.append({"question_id": q.id_to_write, "prompt": q.text, "text": text,
                                    "answer_id": answer_id(model_id, q.question_id, text), "model_id": model_id,
                                    "metadata": {"category": q.category} if q.category is not None else {}})
                writer.write(records)
                answered += len(records)
                tokens += sum(counts)
            bar.update(len(batch["indices"]) + len(batch["errors"]))
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return {"answered": answered, "generated_tokens": tokens, "seconds": seconds, "errors": errors}


def main(argv=None) -> dict:
    args = parse_args(argv)
    outputs = check_files(args, {"--question-file": args.question_file}, {"--image-folder": args.image_folder or None},
                          batch_outputs("--answers-file", args.answers_file))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    questions, bad = read_questions(args.question_file)
    refuse_outputs_over_images(outputs, args.image_folder, [(q.image, q.line) for q in questions if q.image])
    if not questions and not bad:
        print(f"{args.question_file}: no questions (the file is empty)")
    questions = get_chunk(questions, args.num_chunks, args.chunk_idx)
    if args.single_pred_prompt:
        questions = [dataclasses.replace(q, text=f"{q.text}\n{MULTIPLE_CHOICE_PROMPT}") for q in questions]
    with ResumableRun(args.answers_file, args) as batch:
        batch.errors += [{"line": b.line, "question_id": b.question_id, "error": b.error} for b in bad]
        todo = batch.todo(questions)
        if todo:
            batch.add(run(batch.model(), todo, args, batch.store, batch.model_id))
    stats, s = batch.stats, batch.stats["seconds"]
    print(f"answered {stats['answered']} questions in {s:.1f} s: {stats['answered'] / s if s else 0:.2f} answers/s, "
          f"{stats['generated_tokens'] / s if s else 0:.1f} generated tokens/s (batch {args.batch_size}); "
          f"{len(batch.store.done)} answers in {args.answers_file}" + batch.errors_note())
    return {**stats, "errors": batch.errors}


if __name__ == "__main__":
    main()
