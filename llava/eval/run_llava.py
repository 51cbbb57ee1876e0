"""`from llava.eval.run_llava import eval_model`: the original LLaVA's one-question helper, kept so that
notebooks and scripts written for it run here unchanged.

    args = type("Args", (), {"model_path": path, "model_base": None, "model_name": get_model_name_from_path(path),
                             "query": "What is shown?", "conv_mode": None, "image_file": "photo.jpg", "sep": ",",
                             "temperature": 0, "top_p": None, "num_beams": 1, "max_new_tokens": 512})()
    eval_model(args)        # prints the answer (and returns it)

or `python -m llava.eval.run_llava --model-path ... --image-file ... --query ...`.  The model loads
through load_pretrained_model and the prompt through the model's template, as every command here
does; `<image-placeholder>` in the query puts the image there, otherwise it goes first.  One image
per query (LLaVA-1.5 models are trained on one); for a conversation use `python -m llava.serve.cli`.
"""

from __future__ import annotations

import argparse

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_PLACEHOLDER
from llava.conversation import first_turn_with_image, get_template
from llava.image_decode import ImageError, load_image
from llava.model.builder import load_pretrained_model
from llava.model.errors import ModelLoadError
from llava.model.inputs import build_batch, generate_batch


def image_files(image_file: str | None, sep: str = ",") -> list[str]:
    return [p for p in (image_file or "").split(sep) if p.strip()]


def eval_model(args) -> str:
    """Answer args.query about args.image_file with the model at args.model_path; print and return it."""
    files = image_files(getattr(args, "image_file", None), getattr(args, "sep", ",") or ",")
    if len(files) > 1:
        raise ValueError(f"image_file names {len(files)} images ({', '.join(files)}): this model takes one "
                         "image per question; ask about each in turn")
    image = load_image(files[0]) if files else None
    loaded = load_pretrained_model(args.model_path, getattr(args, "model_base", None))
    query = args.query
    if image is not None:
        query = (query.replace(IMAGE_PLACEHOLDER, DEFAULT_IMAGE_TOKEN, 1) if IMAGE_PLACEHOLDER in query
                 else first_turn_with_image(query))
    template = get_template(getattr(args, "conv_mode", None) or loaded.conv_mode)
    prompt = template.prompt(query, eos_token=loaded.tokenizer.eos_token)
    texts, _ = generate_batch(loaded, build_batch(loaded, [prompt], [image]),
                              max_new_tokens=getattr(args, "max_new_tokens", 512),
                              temperature=getattr(args, "temperature", 0.2) or 0.0,
                              top_p=getattr(args, "top_p", None), num_beams=getattr(args, "num_beams", 1) or 1)
    print(texts[0])
    return texts[0]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--model-base", default=None)
    ap.add_argument("--image-file", default=None, help="one image (the original took several, joined by --sep)")
    ap.add_argument("--query", required=True)
    ap.add_argument("--conv-mode", default=None, help="default: the model's own template")
    ap.add_argument("--sep", default=",")
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--top_p", "--top-p", type=float, default=None)
    ap.add_argument("--num_beams", "--num-beams", type=int, default=1)
    ap.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=512)
    args = ap.parse_args(argv)
    files = image_files(args.image_file, args.sep)
    if len(files) > 1:
        ap.error(f"--image-file names {len(files)} images: this model takes one image per question")
    try:
        return eval_model(args)
    except (ImageError, ModelLoadError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
