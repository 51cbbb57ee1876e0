"""The synthetic scenes every sample task draws: 1-4 coloured shapes on a light background.

Each scene has at most one object per quadrant, so every object is wholly on
the left or right half and the top or bottom half and nothing overlaps: "on the
left" is never a judgement call.  Scenes are 96x72 by default, non-square on
purpose, so pad-to-square in the image processor matters.

Everything is drawn from random.Random seeded with strings (hashed with
SHA-512 by Python, so stable across processes and PYTHONHASHSEED), and JPEGs
are saved with fixed settings: the same seed gives byte-identical files.
`plan_scenes` is the pure part (what each image shows, no files), so the tasks
built on it, and their tests, can recompute what each image shows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageDraw

IMAGE_TEMPLATE = "SYN_{image_id:012d}.jpg"

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


@dataclass
class ImagePlan:
    split: str  # "train" / "test"
    image_id: int
    background: tuple[int, int, int]
    objects: list[SceneObject]
    questions: list = field(default_factory=list)  # what a task asks about the scene, if anything

    @property
    def file_name(self) -> str:
        return IMAGE_TEMPLATE.format(image_id=self.image_id)


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


def plan_scenes(
    num_train_images: int,
    num_test_images: int,
    seed: int,
    image_size: tuple[int, int] = (96, 72),
    questions: Callable[[random.Random, list[SceneObject]], list] | None = None,
) -> list[ImagePlan]:
    """What every image shows (train first, then test); no files written.  `questions(rng, objects)`,
    when given, fills each plan's questions from the scene's own random stream, after the scene."""
    if num_train_images < 0 or num_test_images < 0:
        raise ValueError("image counts must be >= 0")
    total = num_train_images + num_test_images
    # Scattered ids, as real datasets have (and so `{image_id:012d}` padding is exercised).  The seed
    # strings name the VQA sample task, the first user of these scenes: every task's files stay the same.
    ids = random.Random(f"sample-task:{seed}:ids").sample(range(1, max(10**6, 10 * total)), total)
    plans = []
    for index, image_id in enumerate(ids):
        rng = random.Random(f"sample-task:{seed}:image:{index}")
        background, objects = make_scene(rng, image_size)
        plan = ImagePlan("train" if index < num_train_images else "test", image_id, background, objects)
        if questions is not None:
            plan.questions = questions(rng, objects)
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


def save_scene(plan: ImagePlan, image_size: tuple[int, int], to: str | Path | BinaryIO) -> None:
    """The scene as a JPEG file (or into a buffer).  Fixed quality and subsampling, no optimize pass:
    deterministic bytes; 4:4:4 keeps colour edges sharp."""
    draw_scene(plan, image_size).save(to, "JPEG", quality=95, subsampling=0)
