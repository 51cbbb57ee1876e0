"""A small synthetic VQA task, written as raw competition-style task data.

    python -m llava.data.sample_task --output-dir playground/data/sample_task

writes

    DIR/images/SYN_000000123456.jpg ...   96x72 JPEG scenes (non-square on purpose,
                                          so pad-to-square in the image processor matters)
    DIR/train.csv  DIR/test.csv           image_id,question,question_id,answer,category
    DIR/README.txt

Each scene has 1-4 coloured shapes on a light background, one per quadrant, so
every object is wholly on the left or right half and the top or bottom half
and nothing overlaps: "on the left" is never a judgement call. Questions are
only asked when the scene makes them unambiguous (a colour question names a
shape that occurs once, and so on).

A question with several acceptable answers ("2" / "two", "gray" / "grey") is
written as repeated rows with the same question_id, the canonical answer
first: the shape most real VQA task files have, and what the preprocessing
command must merge.

Everything is drawn from random.Random seeded with strings (hashed with
SHA-512 by Python, so stable across processes and PYTHONHASHSEED), and JPEGs
are saved with fixed settings: the same seed gives byte-identical files.
`plan_task` is the pure part (scenes and questions, no files), so tests can
recompute what each image shows.
"""

from __future__ import annotations

import argparse
import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from llava.staged_dir import staged_output

IMAGE_TEMPLATE = "SYN_{image_id:012d}.jpg"
CSV_COLUMNS = ["image_id", "question", "question_id", "answer", "category"]
CATEGORIES = ["color", "shape", "count", "position", "yes_no"]

# Saturated colours far apart in RGB, so a 64 px model input keeps them apart.
COLORS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 20),
    "gray": (120, 120, 120),
}
SHAPES = ["circle", "square", "triangle", "diamond"]
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}
NUMBER_WORDS = ["zero", "one", "two", "three", "four"]
# Other spellings accepted for an answer; written as extra rows after the canonical one.
ALIASES = {"gray": ["grey"], **{str(n): [w] for n, w in enumerate(NUMBER_WORDS)}}

MIN_OBJECT_PX = 14  # smaller than this and a 64 px model input loses the shape
CELL_MARGIN = 3  # px kept free at each cell edge, so objects never touch the midlines


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    cx: int  # centre, px
    cy: int
    size: int  # side of the bounding square, px
    horizontal: str  # "left" / "right"
    vertical: str  # "top" / "bottom"


@dataclass(frozen=True)
class Question:
    question: str
    category: str
    answers: tuple[str, ...]  # canonical first


@dataclass
class ImagePlan:
    split: str  # "train" / "test"
    image_id: int
    background: tuple[int, int, int]
    objects: list[SceneObject]
    questions: list[Question] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return IMAGE_TEMPLATE.format(image_id=self.image_id)


def _answers(canonical: str) -> tuple[str, ...]:
    return (canonical, *ALIASES.get(canonical, []))


def make_scene(rng: random.Random, image_size: tuple[int, int]) -> tuple[tuple[int, int, int], list[SceneObject]]:
    """Background tint and 1-4 objects, one per quadrant, none overlapping or crossing a midline."""
    width, height = image_size
    cell_w, cell_h = width // 2, height // 2
    max_size = min(cell_w, cell_h) - 2 * CELL_MARGIN
    if max_size < MIN_OBJECT_PX:
        raise ValueError(
            f"image size {width}x{height} is too small: objects must be >= {MIN_OBJECT_PX} px and fit in a "
            f"quadrant with {CELL_MARGIN} px margins (need width and height >= {2 * (MIN_OBJECT_PX + 2 * CELL_MARGIN)})"
        )
    min_size = min(max_size, max(MIN_OBJECT_PX, round(0.5 * min(cell_w, cell_h))))
    background = tuple(rng.randint(228, 250) for _ in range(3))
    cells = rng.sample(range(4), rng.randint(1, 4))
    objects = []
    for cell in sorted(cells):
        col, row = cell % 2, cell // 2
        size = rng.randint(min_size, max_size)
        # Centre jittered inside the cell, keeping the whole object CELL_MARGIN px from the cell edges.
        lo_x = col * cell_w + CELL_MARGIN + size // 2
        lo_y = row * cell_h + CELL_MARGIN + size // 2
        hi_x = (col + 1) * cell_w - CELL_MARGIN - (size - size // 2)
        hi_y = (row + 1) * cell_h - CELL_MARGIN - (size - size // 2)
        objects.append(
            SceneObject(
                color=rng.choice(list(COLORS)),
                shape=rng.choice(SHAPES),
                cx=rng.randint(lo_x, max(lo_x, hi_x)),
                cy=rng.randint(lo_y, max(lo_y, hi_y)),
                size=size,
                horizontal="left" if col == 0 else "right",
                vertical="top" if row == 0 else "bottom",
            )
        )
    return background, objects


def candidate_questions(rng: random.Random, objects: list[SceneObject]) -> dict[str, list[Question]]:
    """Every unambiguous question about the scene, by category."""
    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]
    pairs = [(o.color, o.shape) for o in objects]
    out: dict[str, list[Question]] = {c: [] for c in CATEGORIES}
    for o in objects:
        if shapes.count(o.shape) == 1:
            out["color"].append(Question(f"What color is the {o.shape}?", "color", _answers(o.color)))
        if colors.count(o.color) == 1:
            out["shape"].append(Question(f"What shape is the {o.color} object?", "shape", _answers(o.shape)))
        if pairs.count((o.color, o.shape)) == 1:
            name = f"the {o.color} {o.shape}"
            out["position"].append(
                Question(f"Is {name} on the left or the right?", "position", _answers(o.horizontal))
            )
            out["position"].append(
                Question(f"Is {name} at the top or the bottom?", "position", _answers(o.vertical))
            )
    out["count"].append(Question("How many objects are there?", "count", _answers(str(len(objects)))))
    for shape in SHAPES:  # absent shapes too, so "0" is a real answer
        if shape in shapes or rng.random() < 0.15:
            q = f"How many {PLURALS[shape]} are there?"
            out["count"].append(Question(q, "count", _answers(str(shapes.count(shape)))))
    # yes/no balanced: one present and one absent object (colour+shape pair).
    present = rng.choice(pairs)
    absent = rng.choice([(c, s) for c in COLORS for s in SHAPES if (c, s) not in pairs])
    for (c, s), ans in ((present, "yes"), (absent, "no")):
        out["yes_no"].append(Question(f"Is there a {c} {s}?", "yes_no", _answers(ans)))
    return out


def choose_questions(rng: random.Random, candidates: dict[str, list[Question]], k: int) -> list[Question]:
    """Up to k questions, from as many different categories as possible."""
    categories = [c for c in CATEGORIES if candidates[c]]
    rng.shuffle(categories)
    pools = {c: rng.sample(candidates[c], len(candidates[c])) for c in categories}
    chosen: list[Question] = []
    while len(chosen) < k and any(pools.values()):
        for c in categories:  # round-robin over categories
            if pools[c] and len(chosen) < k:
                chosen.append(pools[c].pop())
    return chosen


def plan_task(
    num_train_images: int = 2000,
    num_test_images: int = 200,
    seed: int = 0,
    image_size: tuple[int, int] = (96, 72),
    questions_per_image: int = 3,
) -> list[ImagePlan]:
    """Scenes and questions for every image (train first, then test); no files written."""
    if num_train_images < 0 or num_test_images < 0:
        raise ValueError("image counts must be >= 0")
    total = num_train_images + num_test_images
    # Scattered ids, as real datasets have (and so `{image_id:012d}` padding is exercised).
    ids = random.Random(f"sample-task:{seed}:ids").sample(range(1, max(10**6, 10 * total)), total)
    plans = []
    for index, image_id in enumerate(ids):
        rng = random.Random(f"sample-task:{seed}:image:{index}")
        background, objects = make_scene(rng, image_size)
        plan = ImagePlan("train" if index < num_train_images else "test", image_id, background, objects)
        plan.questions = choose_questions(rng, candidate_questions(rng, objects), questions_per_image)
        plans.append(plan)
    return plans


def draw_scene(plan: ImagePlan, image_size: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", image_size, plan.background)
    draw = ImageDraw.Draw(img)
    for o in plan.objects:
        left, top = o.cx - o.size // 2, o.cy - o.size // 2
        right, bottom = left + o.size - 1, top + o.size - 1
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif o.shape == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(o.cx, top), (right, bottom), (left, bottom)], fill=fill)
        else:  # diamond
            draw.polygon([(o.cx, top), (right, o.cy), (o.cx, bottom), (left, o.cy)], fill=fill)
    return img


README = """\
Synthetic VQA sample task (generated by `python -m llava.data.sample_task`, seed {seed}).

images/          {num_images} JPEG images, {width}x{height}, named {template}
train.csv        {train_rows} rows, {train_questions} questions on {train_images} images
test.csv         {test_rows} rows, {test_questions} questions on {test_images} other images
                 (held out; answers included for scoring)

CSV columns: {columns}
  image_id     integer; the file is images/ + the template above with this id
  question_id  unique across both files
  answer       one acceptable answer; a question with several acceptable answers
               ("2" / "two", "gray" / "grey") has one row per answer with the same
               question_id, the canonical answer (training target) first
  category     one of: {categories}

Preprocess for training with:
  python scripts/task_data_preprocessing.py --input DIR/train.csv --image-folder DIR/images \\
      --image-template '{template}' --output-dir OUT --short-answer
"""


def _write_csv(path: Path, plans: list[ImagePlan], first_qid: int) -> tuple[int, int]:
    """Write rows, one per acceptable answer; returns (rows, questions)."""
    rows = questions = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for plan in plans:
            for q in plan.questions:
                qid = f"q{first_qid + questions:06d}"
                questions += 1
                for answer in q.answers:
                    writer.writerow([plan.image_id, q.question, qid, answer, q.category])
                    rows += 1
    return rows, questions


@staged_output("llava.data.sample_task")
def make_sample_task(
    output_dir: str | Path,
    num_train_images: int = 2000,
    num_test_images: int = 200,
    seed: int = 0,
    image_size: tuple[int, int] = (96, 72),
    questions_per_image: int = 3,
) -> dict:
    """Write the task to output_dir; returns its paths and counts."""
    out = Path(output_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    image_size = (int(image_size[0]), int(image_size[1]))
    plans = plan_task(num_train_images, num_test_images, seed, image_size, questions_per_image)
    for plan in plans:
        # Fixed quality and subsampling, no optimize pass: deterministic bytes. 4:4:4 keeps colour edges sharp.
        draw_scene(plan, image_size).save(images_dir / plan.file_name, "JPEG", quality=95, subsampling=0)
    train = [p for p in plans if p.split == "train"]
    test = [p for p in plans if p.split == "test"]
    train_rows, train_questions = _write_csv(out / "train.csv", train, first_qid=1)
    test_rows, test_questions = _write_csv(out / "test.csv", test, first_qid=1 + train_questions)
    readme = out / "README.txt"
    readme.write_text(
        README.format(
            seed=seed, num_images=len(plans), width=image_size[0], height=image_size[1], template=IMAGE_TEMPLATE,
            train_rows=train_rows, train_questions=train_questions, train_images=len(train),
            test_rows=test_rows, test_questions=test_questions, test_images=len(test),
            columns=",".join(CSV_COLUMNS), categories=", ".join(CATEGORIES),
        ),
        encoding="utf-8",
    )
    return {
        "output_dir": out,
        "images_dir": images_dir,
        "train_csv": out / "train.csv",
        "test_csv": out / "test.csv",
        "readme": readme,
        "image_template": IMAGE_TEMPLATE,
        "num_train_images": len(train),
        "num_test_images": len(test),
        "num_train_questions": train_questions,
        "num_test_questions": test_questions,
        "num_train_rows": train_rows,
        "num_test_rows": test_rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-train-images", type=int, default=2000)
    parser.add_argument("--num-test-images", type=int, default=200)
    parser.add_argument("--questions-per-image", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, nargs=2, default=(96, 72), metavar=("W", "H"))
    args = parser.parse_args(argv)
    try:
        info = make_sample_task(
            args.output_dir, args.num_train_images, args.num_test_images, args.seed,
            tuple(args.image_size), args.questions_per_image,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(
        f"wrote {info['num_train_images']} train + {info['num_test_images']} test images to {info['images_dir']}\n"
        f"  {info['train_csv']}: {info['num_train_questions']} questions ({info['num_train_rows']} rows)\n"
        f"  {info['test_csv']}: {info['num_test_questions']} questions ({info['num_test_rows']} rows)"
    )


if __name__ == "__main__":
    main()
