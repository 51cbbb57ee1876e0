"""The tag-rating sample task: synthetic scenes, each with tags rated 0-5 by fixed rules, with an explanation.

    python -m llava.demo.rating_task --output-dir playground/data/tag_rating

A tag is an object ("red circle"), a colour, a shape or a count ("three
objects"); its score follows from the scene by fixed rules (`rate_*`), with a
templated explanation; tags are drawn so that the six scores are about equally
common.  The rows (train.jsonl, test.jsonl) go through the library's own
`convert` (llava/tasks/rating_data.py), as a user's table would, into train/
and test/.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from llava.data.outputs import jsonl_text, write_atomically
from llava.demo.scenes import COLORS, NUMBER_WORDS, PLURALS, SHAPES, plan_scenes, save_scene
from llava.staged_dir import staged_output
from llava.tasks.rating_data import convert

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
        others = len(objects) - len(hits)
        return Rating(color, "color", 3, f"The {hits[0].shape} at the {_where(hits[0])} is {color}; "
                                         f"{_n_objects(others)} {'is' if others == 1 else 'are'} not.")
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


@staged_output("llava.demo.rating_task")
def make_rating_task(output_dir: str | Path, num_train_images: int = 1200, num_test_images: int = 150,
                     seed: int = 7, tags_per_image: int = 3, image_size: tuple[int, int] = (96, 72)) -> dict:
    """Images plus train.jsonl / test.jsonl rows, then `convert` of each into train/ and test/."""
    out = Path(output_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    plans = plan_scenes(num_train_images, num_test_images, seed=seed, image_size=image_size)
    rows = {"train": [], "test": []}
    for plan in plans:
        save_scene(plan, image_size, images / plan.file_name)
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="playground/data/tag_rating")
    ap.add_argument("--num-train-images", type=int, default=1200)
    ap.add_argument("--num-test-images", type=int, default=150)
    ap.add_argument("--tags-per-image", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    result = make_rating_task(args.output_dir, args.num_train_images, args.num_test_images, args.seed,
                              args.tags_per_image)
    for split in ("train", "test"):
        r = result[split]
        print(f"{split}: {r['rows']} ratings -> {r['output_dir']} (scores 0-5: "
              f"{', '.join(str(n) for n in r['score_counts'].values())})")


if __name__ == "__main__":
    main()
