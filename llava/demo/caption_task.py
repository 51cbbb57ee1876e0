"""The captioning sample task: synthetic scenes with captions in a house style, as training
conversations and as batch-inference questions with reference captions.

    python -m llava.demo.caption_task --output-dir playground/data/captioning

writes images/, train.json (conversations: the caption prompt -> one caption),
and for a validation split (checkpoint selection) and a test split
{val,test}_questions.jsonl (question_id, image, text) and {val,test}_answers.jsonl
(question_id, answers: three reference captions), the files `inference.sh` and
`python -m llava.eval.evaluate --metric caption` read.

The house style is a listing, unlike the sentences the embedded base learnt in
stage 1 and 2 ("There are two objects: a red circle at the top left and ..."):

    2 shapes: red circle (top left), blue square (bottom right).

so what fine-tuning teaches shows in the scores.  The references are the
caption, the same objects in reverse order, and a shorter variant without the
count, so that n-gram metrics reward the content more than one wording.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llava.data.outputs import json_list_text, jsonl_text, write_atomically
from llava.demo.scenes import plan_scenes, save_scene
from llava.staged_dir import staged_output

CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."  # LLaVA-1.5's COCO caption prompt


def _order(objects):
    return sorted(objects, key=lambda o: (o.vertical != "top", o.horizontal != "left"))


def house_caption(objects) -> str:
    items = ", ".join(f"{o.color} {o.shape} ({o.vertical} {o.horizontal})" for o in _order(objects))
    return f"{len(objects)} shape{'s' if len(objects) != 1 else ''}: {items}."


def references(objects) -> list[str]:
    ordered = _order(objects)
    reverse = ", ".join(f"{o.color} {o.shape} ({o.vertical} {o.horizontal})" for o in reversed(ordered))
    short = ", ".join(f"{o.color} {o.shape} {o.vertical} {o.horizontal}" for o in ordered)
    n = len(objects)
    return [house_caption(objects), f"{n} shape{'s' if n != 1 else ''}: {reverse}.", f"Shapes: {short}."]


@staged_output("llava.demo.caption_task")
def make_caption_task(output_dir: str | Path, num_train_images: int = 1500, num_test_images: int = 150,
                      num_val_images: int = 60, seed: int = 11, image_size: tuple[int, int] = (96, 72)) -> dict:
    out = Path(output_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    plans = plan_scenes(num_train_images, num_val_images + num_test_images, seed=seed, image_size=image_size)
    train = []
    questions, answers = {"val": [], "test": []}, {"val": [], "test": []}
    for index, plan in enumerate(plans):
        save_scene(plan, image_size, images / plan.file_name)
        cid = f"c{plan.image_id:07d}"
        if plan.split == "train":
            train.append({"id": cid, "image": plan.file_name, "conversations": [
                {"from": "human", "value": "<image>\n" + CAPTION_PROMPT},
                {"from": "gpt", "value": house_caption(plan.objects)}]})
        else:
            split = "val" if index < num_train_images + num_val_images else "test"
            n = len(plan.objects)
            category = "one object" if n == 1 else f"{n} objects"
            questions[split].append({"question_id": cid, "image": plan.file_name, "text": CAPTION_PROMPT,
                                     "category": category})
            answers[split].append({"question_id": cid, "answers": references(plan.objects), "category": category})
    files = {out / "train.json": json_list_text(train)}
    for split in ("val", "test"):
        files[out / f"{split}_questions.jsonl"] = jsonl_text(questions[split])
        files[out / f"{split}_answers.jsonl"] = jsonl_text(answers[split])
    write_atomically(files)
    return {"output_dir": out, "train": len(train), "val": len(questions["val"]), "test": len(questions["test"])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="playground/data/captioning")
    ap.add_argument("--num-train-images", type=int, default=1500)
    ap.add_argument("--num-test-images", type=int, default=150)
    ap.add_argument("--num-val-images", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    r = make_caption_task(args.output_dir, args.num_train_images, args.num_test_images, args.num_val_images,
                          args.seed)
    print(f"{r['train']} training captions; {r['val']} validation and {r['test']} test images with 3 references "
          f"each -> {r['output_dir']}")


if __name__ == "__main__":
    main()
