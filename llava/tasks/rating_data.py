"""Tag-relevance rating data: rows of (image, tag, score 0-5, explanation) made into training
conversations and evaluation files, and an offline sample task drawn from the synthetic scenes.

    python -m llava.tasks.rating_data sample --output-dir playground/data/tag_rating
    python -m llava.tasks.rating_data convert --input my_rows.jsonl --image-folder my_images --output-dir OUT

`convert` reads CSV, TSV, JSON, JSONL or Parquet with columns image, tag, score,
explanation (and optionally id) and writes into OUT:

    conversations.json   LLaVA conversations for the training scripts (--data_path)
    pairs.jsonl          {question_id, image, tag, category} for python -m llava.tasks.tag_rating --input
    answers.jsonl        {question_id, answers: [score], category}, the key for llava.eval.evaluate --metric rating
    rejected.jsonl       every row left out, with its file:line and the reason (only when there are some)

In the sample task the tag is an object ("red circle"), a colour, a shape or a
count ("three objects"), and the score follows from the scene by fixed rules
(`rate`), with a templated explanation; tags are drawn so that the six scores
are about equally common.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

from llava.data.images import check_image, normalize_relative
from llava.data.outputs import json_list_text, jsonl_text, write_atomically
from llava.data.sample_task import COLORS, NUMBER_WORDS, PLURALS, SHAPES, draw_scene, plan_task
from llava.data.tables import TableError, is_missing, open_table
from llava.eval.rating_metrics import MAX_SCORE, MIN_SCORE, as_score
from llava.tasks.rating_prompt import format_answer, rating_prompt
from llava.staged_dir import staged_output

TAG_KINDS = ("object", "color", "shape", "count")


@dataclass(frozen=True)
class Rating:
    tag: str
    kind: str
    score: int
    explanation: str


def _where(o) -> str:
    return f"{o.vertical} {o.horizontal}"


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _n_objects(n: int) -> str:
    return f"{NUMBER_WORDS[n]} object" + ("" if n == 1 else "s")


def rate_object(objects, color: str, shape: str) -> Rating:
    tag = f"{color} {shape}"
    exact = [o for o in objects if o.color == color and o.shape == shape]
    if exact and len(objects) == 1:
        return Rating(tag, "object", 5, f"The only object is {_a(tag)}, exactly the search term.")
    if exact:
        return Rating(tag, "object", 4, f"There is {_a(tag)} at the {_where(exact[0])}, among "
                                        f"{_n_objects(len(objects))}.")
    same_shape = [o for o in objects if o.shape == shape]
    if same_shape:
        return Rating(tag, "object", 2, f"There is {_a(shape)}, but it is {same_shape[0].color}, not {color}.")
    same_color = [o for o in objects if o.color == color]
    if same_color:
        return Rating(tag, "object", 1, f"There is something {color}, but it is {_a(same_color[0].shape)}, "
                                        f"not {_a(shape)}.")
    return Rating(tag, "object", 0, f"There is no {color} object and no {shape}.")


def rate_color(objects, color: str) -> Rating:
    hits = [o for o in objects if o.color == color]
    if hits and len(hits) == len(objects):
        return Rating(color, "color", 5, f"Every object is {color}." if len(objects) > 1
                      else f"The only object, {_a(hits[0].shape)}, is {color}.")
    if hits:
        return Rating(color, "color", 3, f"The {hits[0].shape} at the {_where(hits[0])} is {color}; "
                                         f"{_n_objects(len(objects) - len(hits))} {'is' if len(objects) - len(hits) == 1 else 'are'} not.")
    return Rating(color, "color", 0, f"No object is {color}.")


def rate_shape(objects, shape: str) -> Rating:
    tag = PLURALS[shape]
    hits = [o for o in objects if o.shape == shape]
    if hits and len(hits) == len(objects):
        return Rating(tag, "shape", 5, f"Every object is {_a(shape)}." if len(objects) > 1
                      else f"The only object is {_a(hits[0].color + ' ' + shape)}.")
    if hits:
        return Rating(tag, "shape", 3, f"The {hits[0].color} object at the {_where(hits[0])} is {_a(shape)}, "
                                       f"but not every object is.")
    return Rating(tag, "shape", 0, f"There is no {shape}.")


def rate_count(objects, n: int) -> Rating:
    tag = _n_objects(n)
    have = len(objects)
    if have == n:
        return Rating(tag, "count", 5, f"There are exactly {tag}." if n > 1 else "There is exactly one object.")
    if abs(have - n) == 1:
        return Rating(tag, "count", 2, f"There {'is' if have == 1 else 'are'} {_n_objects(have)}, "
                                       f"one {'more' if have > n else 'fewer'} than {NUMBER_WORDS[n]}.")
    return Rating(tag, "count", 0, f"There {'is' if have == 1 else 'are'} {_n_objects(have)}, "
                                   f"not {NUMBER_WORDS[n]}.")


def candidate_ratings(objects) -> list[Rating]:
    out = [rate_object(objects, c, s) for c in COLORS for s in SHAPES]
    out += [rate_color(objects, c) for c in COLORS]
    out += [rate_shape(objects, s) for s in SHAPES]
    out += [rate_count(objects, n) for n in range(1, 5)]
    return out


def choose_ratings(rng: random.Random, candidates: list[Rating], k: int) -> list[Rating]:
    """k distinct tags, each drawn for a score picked uniformly among the scores this scene offers."""
    chosen: list[Rating] = []
    left = list(candidates)
    while left and len(chosen) < k:
        score = rng.choice(sorted({r.score for r in left}))
        pick = rng.choice([r for r in left if r.score == score])
        chosen.append(pick)
        left = [r for r in left if r.tag != pick.tag]
    return chosen


@staged_output("llava.tasks.rating_data sample")
def make_sample(output_dir: str | Path, num_train_images: int = 1200, num_test_images: int = 150, seed: int = 7,
                tags_per_image: int = 3, image_size: tuple[int, int] = (96, 72)) -> dict:
    """Images plus train.jsonl / test.jsonl rows, then `convert` of each into train/ and test/."""
    out = Path(output_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    plans = plan_task(num_train_images, num_test_images, seed=seed, image_size=image_size, questions_per_image=0)
    rows = {"train": [], "test": []}
    for plan in plans:
        draw_scene(plan, image_size).save(images / plan.file_name, "JPEG", quality=95, subsampling=0)
        rng = random.Random(f"tag-rating:{seed}:{plan.image_id}")
        for r in choose_ratings(rng, candidate_ratings(plan.objects), tags_per_image):
            rows[plan.split].append({"id": f"r{len(rows['train']) + len(rows['test']) + 1:06d}",
                                     "image": plan.file_name, "tag": r.tag, "score": r.score,
                                     "explanation": r.explanation, "kind": r.kind})
    write_atomically({out / f"{split}.jsonl": jsonl_text(r) for split, r in rows.items()})
    result = {"output_dir": out, "images_dir": images}
    for split in rows:
        result[split] = convert(out / f"{split}.jsonl", images, out / split)
    return result


def read_rows(path: str | Path, image_folder: str | Path, check_images: bool = True) -> tuple[list[dict], list[dict]]:
    """(usable rows, rejected rows with location and reason) of a user's rating table."""
    table = open_table(path)
    folder = Path(image_folder)
    good, rejected, seen, image_ok = [], [], {}, {}
    for rec in table.records:
        where = str(rec.loc)

        def reject(reason: str, rid=None):
            rejected.append({"where": where, "id": rid, "error": f"{where}: {reason}"})

        if rec.error:
            reject(rec.error)
            continue
        v = rec.values
        rid = None if is_missing(v.get("id")) else str(v.get("id"))
        rid = rid or where
        missing = [c for c in ("image", "tag", "score", "explanation") if is_missing(v.get(c))]
        if missing:
            reject(f"missing {', '.join(missing)}", rid)
            continue
        score = as_score(v["score"])
        if score is None:
            reject(f"score {v['score']!r} is not an integer {MIN_SCORE}-{MAX_SCORE}", rid)
            continue
        if rid in seen:
            reject(f"id {rid!r} repeats {seen[rid]}", rid)
            continue
        image = normalize_relative(str(v["image"]))
        if image is None:
            reject(f"image {v['image']!r} is outside the image folder", rid)
            continue
        if check_images:
            if image not in image_ok:
                check = check_image(folder / image)
                image_ok[image] = None if check.ok else check.detail
            if image_ok[image] is not None:
                reject(f"image {image}: {image_ok[image]}", rid)
                continue
        seen[rid] = where
        kind = None if is_missing(v.get("kind")) else str(v["kind"])
        good.append({"id": rid, "image": image, "tag": str(v["tag"]).strip(), "score": score,
                     "explanation": str(v["explanation"]).strip(), "kind": kind})
    return good, rejected


def convert(path: str | Path, image_folder: str | Path, output_dir: str | Path) -> dict:
    rows, rejected = read_rows(path, image_folder)
    out = Path(output_dir)
    files = {
        out / "conversations.json": json_list_text([
            {"id": r["id"], "image": r["image"], "conversations": [
                {"from": "human", "value": "<image>\n" + rating_prompt(r["tag"])},
                {"from": "gpt", "value": format_answer(r["explanation"], r["score"])}]} for r in rows]),
        out / "pairs.jsonl": jsonl_text([{"question_id": r["id"], "image": r["image"], "tag": r["tag"],
                                          **({"category": r["kind"]} if r["kind"] else {})} for r in rows]),
        out / "answers.jsonl": jsonl_text([{"question_id": r["id"], "answers": [r["score"]],
                                            **({"category": r["kind"]} if r["kind"] else {})} for r in rows]),
    }
    if rejected:
        files[out / "rejected.jsonl"] = jsonl_text(rejected)
    elif (out / "rejected.jsonl").exists():
        (out / "rejected.jsonl").unlink()
    write_atomically(files)
    scores = [r["score"] for r in rows]
    return {"rows": len(rows), "rejected": len(rejected), "output_dir": out,
            "score_counts": {s: scores.count(s) for s in range(MIN_SCORE, MAX_SCORE + 1)}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="make the offline sample rating task")
    s.add_argument("--output-dir", default="playground/data/tag_rating")
    s.add_argument("--num-train-images", type=int, default=1200)
    s.add_argument("--num-test-images", type=int, default=150)
    s.add_argument("--tags-per-image", type=int, default=3)
    s.add_argument("--seed", type=int, default=7)
    c = sub.add_parser("convert", help="rows of (image, tag, score, explanation) -> conversations + eval files")
    c.add_argument("--input", required=True)
    c.add_argument("--image-folder", required=True)
    c.add_argument("--output-dir", required=True)
    args = ap.parse_args(argv)
    try:
        if args.command == "sample":
            result = make_sample(args.output_dir, args.num_train_images, args.num_test_images, args.seed,
                                 args.tags_per_image)
            for split in ("train", "test"):
                r = result[split]
                print(f"{split}: {r['rows']} ratings -> {r['output_dir']} (scores 0-5: "
                      f"{', '.join(str(n) for n in r['score_counts'].values())})")
        else:
            r = convert(args.input, args.image_folder, args.output_dir)
            print(f"{r['rows']} ratings -> {r['output_dir']}/conversations.json, pairs.jsonl, answers.jsonl"
                  + (f"; {r['rejected']} rows left out, see {r['output_dir']}/rejected.jsonl" if r["rejected"] else ""))
    except TableError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
