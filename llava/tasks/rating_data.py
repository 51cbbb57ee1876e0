"""Tag-relevance rating data: rows of (image, tag, score 0-5, explanation) made into training
conversations and evaluation files.

    python -m llava.tasks.rating_data convert --input my_rows.jsonl --image-folder my_images --output-dir OUT

`convert` reads CSV, TSV, JSON, JSONL or Parquet with columns image, tag, score,
explanation (and optionally id) and writes into OUT:

    conversations.json   LLaVA conversations for the training scripts (--data_path)
    pairs.jsonl          {question_id, image, tag, category} for python -m llava.tasks.tag_rating --input
    answers.jsonl        {question_id, answers: [score], category}, the key for llava.eval.evaluate --metric rating
    rejected.jsonl       every row left out, with its file:line and the reason (only when there are some)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llava.data.images import check_image, normalize_relative
from llava.data.outputs import json_list_text, jsonl_text, write_atomically
from llava.data.tables import TableError, is_missing, open_table
from llava.eval.rating_metrics import MAX_SCORE, MIN_SCORE, as_score
from llava.tasks.rating_prompt import format_answer, rating_prompt


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
    c = sub.add_parser("convert", help="rows of (image, tag, score, explanation) -> conversations + eval files")
    c.add_argument("--input", required=True)
    c.add_argument("--image-folder", required=True)
    c.add_argument("--output-dir", required=True)
    args = ap.parse_args(argv)
    try:
        r = convert(args.input, args.image_folder, args.output_dir)
        print(f"{r['rows']} ratings -> {r['output_dir']}/conversations.json, pairs.jsonl, answers.jsonl"
              + (f"; {r['rejected']} rows left out, see {r['output_dir']}/rejected.jsonl" if r["rejected"] else ""))
    except TableError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
