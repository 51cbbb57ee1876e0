"""Caption data for training the embedded default's base: synthetic scenes described in words.

    python -m llava.demo.scene_captions --output-dir playground/data/scene_captions

No pretrained CLIP exists offline, so the embedded default's vision tower
starts random and must learn to see before any task fine-tuning can work (a
random frozen base learns nothing under LoRA).  This writes the data for that:
scenes of the same kind as the sample task's (drawn by its code, from another
seed, so no task image is seen), each with a caption naming every object's
colour, shape and place, in LLaVA's conversation format:

    DIR/images/SYN_*.jpg
    DIR/captions.json       [{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
                                                               {"from": "gpt", "value": "There are two ..."}]}]
    DIR/chat.json           the same scenes as conversations: questions answered in full sentences
                            ("Which colour does the diamond have?" -> "The diamond is red."), as
                            LLaVA's stage-2 instruction data; half of them ask for the caption first,
                            half start straight with a question (else the model learns that a first
                            turn is always answered with a caption, whatever it asks)

Stage 1 (projector only) trains on captions.json, stage 2 on chat.json.  Neither
holds the task's wording or its short answers: after them the base describes
scenes and answers questions about them in sentences, and the task's LoRA
fine-tune teaches the competition's one-word format and phrasing.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from llava.demo.scenes import COLORS, NUMBER_WORDS, PLURALS, SHAPES, plan_scenes, save_scene
from llava.staged_dir import staged_output

INSTRUCTIONS = [
    "Describe the image.",
    "What is in this picture?",
    "Describe the shapes in the image and where they are.",
    "Give a short description of the scene.",
]


def caption(objects) -> str:
    """'There are two objects: a red circle at the top left and a blue square at the bottom right.'"""
    order = sorted(objects, key=lambda o: (o.vertical != "top", o.horizontal != "left"))
    parts = [f"{_article(o.color)} {o.color} {o.shape} at the {o.vertical} {o.horizontal}" for o in order]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    n = len(objects)
    head = "There is one object" if n == 1 else f"There are {NUMBER_WORDS[n]} objects"
    return f"{head}: {listed}."


def chat_turns(objects, rng: random.Random, k: int = 2) -> list[tuple[str, str]]:
    """k questions about the scene, each with a full-sentence answer, from different kinds."""
    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]
    pairs = [(o.color, o.shape) for o in objects]
    kinds: dict[str, list[tuple[str, str]]] = {k: [] for k in ("color", "shape", "where", "count", "see")}
    for o in objects:
        if shapes.count(o.shape) == 1:
            kinds["color"].append((f"Which colour does the {o.shape} have?", f"The {o.shape} is {o.color}."))
        if colors.count(o.color) == 1:
            kinds["shape"].append((f"Tell me the shape of the {o.color} object.",
                                   f"The {o.color} object is {_article(o.shape)} {o.shape}."))
        if pairs.count((o.color, o.shape)) == 1:
            kinds["where"].append((f"Where is the {o.color} {o.shape}?",
                                   f"The {o.color} {o.shape} is at the {o.vertical} {o.horizontal}."))
    n = len(objects)
    kinds["count"].append(("Count the objects in the picture.",
                           "There is one object." if n == 1 else f"There are {NUMBER_WORDS[n]} objects."))
    shape = rng.choice(SHAPES)
    m = shapes.count(shape)
    kinds["count"].append((f"Count the {PLURALS[shape]}.", f"There are no {PLURALS[shape]}." if m == 0 else
                           f"There is one {shape}." if m == 1 else f"There are {NUMBER_WORDS[m]} {PLURALS[shape]}."))
    c, s = rng.choice(pairs) if rng.random() < 0.5 else (rng.choice(list(COLORS)), rng.choice(SHAPES))
    kinds["see"].append((f"Can you see {_article(c)} {c} {s}?", f"Yes, there is {_article(c)} {c} {s}."
                         if (c, s) in pairs else f"No, there is no {c} {s}."))
    available = [name for name, qs in kinds.items() if qs]
    return [rng.choice(kinds[name]) for name in rng.sample(available, min(k, len(available)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@staged_output("llava.demo.scene_captions")
def make_scene_captions(output_dir: str | Path, num_images: int = 4000, seed: int = 1,
                        image_size: tuple[int, int] = (96, 72)) -> dict:
    out = Path(output_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    # The sample task uses seed 0; another seed gives other scenes.
    plans = plan_scenes(num_train_images=num_images, num_test_images=0, seed=1000 + seed, image_size=image_size)
    rng = random.Random(f"scene-captions:{seed}")
    records, chats = [], []
    for i, plan in enumerate(plans):
        save_scene(plan, image_size, images / plan.file_name)
        records.append({
            "id": f"cap{i:06d}",
            "image": plan.file_name,
            "conversations": [
                {"from": "human", "value": "<image>\n" + rng.choice(INSTRUCTIONS)},
                {"from": "gpt", "value": caption(plan.objects)},
            ],
        })
        caption_first = rng.random() < 0.5
        turns = [turn for q, a in chat_turns(plan.objects, rng, k=2 if caption_first else 3)
                 for turn in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
        if caption_first:
            conversation = records[-1]["conversations"] + turns
        else:
            conversation = [{"from": "human", "value": "<image>\n" + turns[0]["value"]}, *turns[1:]]
        chats.append({**records[-1], "id": f"chat{i:06d}", "conversations": conversation})
    path = out / "captions.json"
    path.write_text(json.dumps(records, indent=1))
    (out / "chat.json").write_text(json.dumps(chats, indent=1))
    return {"captions": path, "chat": out / "chat.json", "images_dir": images, "num_images": len(records)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="playground/data/scene_captions")
    ap.add_argument("--num-images", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    info = make_scene_captions(args.output_dir, args.num_images, args.seed)
    print(f"wrote {info['num_images']} captioned scenes to {info['captions']}")


if __name__ == "__main__":
    main()
