#!/usr/bin/env python
"""Convert task data (a table + image folder, or a Hugging Face dataset) into LLaVA training files.

    python scripts/task_data_preprocessing.py --input task/train.csv --image-folder task/images \\
        --image-template 'SYN_{image_id:012d}.jpg' --output-dir playground/data/task --short-answer
    python scripts/task_data_preprocessing.py --input hf:ORG/NAME --split validation \\
        --image-folder data/vqa/images --output-dir data/vqa --short-answer

A dataset's images (an Image column: Parquet/Arrow with embedded bytes, hf:, a save_to_disk folder)
are written once into --image-folder under names derived from their content.

Writes train.json, val.json, val_questions.jsonl, val_answers.jsonl and report.json.
Exit codes: 0 ok; 1 nothing usable remains, damage lost lines (an unclosed quote), or --strict
and some row had a problem; 2 the input cannot be read or the output folder cannot be written
(missing file or column, bad option). See docs/data.md.
"""

from __future__ import annotations

import argparse
import sys

from llava.constants import SHORT_ANSWER_PROMPT
from llava.data.preprocess import EXIT_BAD_INPUT, ConfigError, PreprocessConfig, format_summary, preprocess
from llava.data.tables import TableError
from llava.model.families import BY_NAME as FAMILY_NAMES
from llava.printable import printable


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True,
                   help="task table: .csv .tsv .json (list) .jsonl .parquet .arrow; a Hugging Face dataset as "
                        "hf:ORG/NAME (anything datasets.load_dataset takes); or a datasets save_to_disk folder")
    p.add_argument("--image-folder", required=True,
                   help="images are looked up (and must stay) under this folder; images a dataset holds as bytes "
                        "are written here (created if missing)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--split", help="the split of a Hugging Face dataset (hf:..., save_to_disk folder); needed when it "
                                   "has more than one")
    p.add_argument("--hf-config", help="the configuration (subset) of an hf: dataset that has several")
    g = p.add_argument_group("columns")
    g.add_argument("--image-column", help="column holding the image path relative to --image-folder (default: image)")
    g.add_argument("--image-template", help="build the image path from columns, e.g. 'COCO_{image_id:012d}.jpg'")
    g.add_argument("--question-column", help="default: question")
    g.add_argument("--answer-column", help="default: answer; a list value, or see --answer-separator")
    g.add_argument("--id-column", help="default: question_id if present, else ids from line numbers")
    g.add_argument("--category-column", help="default: category if present")
    g.add_argument("--options-column", help="multiple-choice options: one list column, or several columns 'A,B,C,D'")
    g.add_argument("--options-separator", default="|", help="splits a string options value (default: |)")
    g.add_argument("--answer-separator", help="splits a string answer into several acceptable answers")
    g = p.add_argument_group("prompt and split")
    suffix = g.add_mutually_exclusive_group()
    suffix.add_argument("--prompt-suffix", help="appended on a new line to every open (non multiple-choice) question")
    suffix.add_argument("--short-answer", action="store_true", help=f"same as --prompt-suffix '{SHORT_ANSWER_PROMPT}'")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of images held out (0 to 1; default 0.1)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--turns-per-image", type=int, default=1,
                   help="group up to N questions of one image into one conversation (default 1)")
    g.add_argument("--model-family", default="llava", choices=sorted(FAMILY_NAMES),
                   help="the family that will train on the output (docs/models.md); the conversations are the same "
                        "for every family (its template is applied in training), this checks the options fit it: "
                        "BLIP-2 takes one question per record")
    g = p.add_argument_group("behaviour")
    g.add_argument("--strict", action="store_true", help="exit 1 and write no data files if any row has a problem")
    g.add_argument("--workers", type=int, help="image-check threads (default: 4 per CPU core, at most 32)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model_family == "blip2" and args.turns_per_image != 1:
        parser.error(f"--turns-per-image {args.turns_per_image}: BLIP-2 has no chat template and trains on one "
                     "question and answer per record; leave --turns-per-image at 1")
    cfg = PreprocessConfig(
        input=args.input, image_folder=args.image_folder, output_dir=args.output_dir,
        image_column=args.image_column, image_template=args.image_template,
        question_column=args.question_column, answer_column=args.answer_column, id_column=args.id_column,
        category_column=args.category_column, options_column=args.options_column,
        options_separator=args.options_separator, answer_separator=args.answer_separator,
        prompt_suffix=SHORT_ANSWER_PROMPT if args.short_answer else args.prompt_suffix,
        val_fraction=args.val_fraction, seed=args.seed, turns_per_image=args.turns_per_image,
        strict=args.strict, workers=args.workers, progress=not args.no_progress,
        split=args.split, hf_config=args.hf_config,
    )
    try:
        result = preprocess(cfg)
    except (TableError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a file that cannot be read (no permission), a disk that fills while writing
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_summary(result))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
