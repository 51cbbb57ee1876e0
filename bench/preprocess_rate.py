"""Preprocessing throughput (rows/s), image checks included.

    .venv/bin/python bench/preprocess_rate.py                         # 3,500 images of 96x72, ~13k rows
    .venv/bin/python bench/preprocess_rate.py --image-size 640 480    # COCO-sized JPEGs: decoding dominates

Generates the sample task in a temporary directory, then runs the library
(`llava.data.preprocess.preprocess`, exactly what the command runs, without
progress bars) several times and prints the median rows/s. The baseline is the
same pipeline with image checks on one thread (`workers=1`), run in the same
process on the same files, so the ratio shows what the thread pool buys.

A third run reads the same rows from Parquet with every image embedded as bytes
(the `datasets` Image feature's storage), so each run also writes the images
into a fresh image folder under content names: its ratio to the CSV + folder
run is what embedded images cost.

Images are freshly written, so they sit in the page cache: this measures the
parsing and decoding work, not a cold disk.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llava.data.preprocess import PreprocessConfig, preprocess
from llava.demo.scenes import IMAGE_TEMPLATE
from llava.demo.vqa_task import make_sample_task


def embedded_parquet(task: dict, path: Path) -> Path:
    """The task's rows as Parquet, each with its image file's bytes in an Image-feature column."""
    with open(task["train_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    images: dict[str, bytes] = {}
    for row in rows:
        name = IMAGE_TEMPLATE.format(image_id=int(row["image_id"]))
        if name not in images:
            images[name] = (Path(task["images_dir"]) / name).read_bytes()
        row["image"] = {"bytes": images[name], "path": name}
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_once(task: dict, out: Path, workers: int | None, embedded: Path | None = None) -> tuple[float, int]:
    if embedded is None:
        source = dict(input=str(task["train_csv"]), image_folder=str(task["images_dir"]), image_template=IMAGE_TEMPLATE)
    else:  # a new, empty image folder each time: the images are written in every timed run
        folder = Path(tempfile.mkdtemp(dir=out.parent, prefix="embedded_images_"))
        source = dict(input=str(embedded), image_folder=str(folder))
    cfg = PreprocessConfig(
        output_dir=str(out), prompt_suffix="Answer the question using a single word or phrase.",
        workers=workers, progress=False, **source,
    )
    start = time.perf_counter()
    result = preprocess(cfg)
    seconds = time.perf_counter() - start
    assert result.exit_code == 0 and result.report["rows_skipped"]["total"] == 0, result.report["rows_skipped"]
    return seconds, result.report["rows_read"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3500, help="train images (about 3.7 rows each)")
    p.add_argument("--image-size", type=int, nargs=2, default=(96, 72), metavar=("W", "H"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=int, default=None, help="image-check threads (default: the library default)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        task = make_sample_task(Path(tmp) / "task", num_train_images=args.images, num_test_images=0,
                                image_size=tuple(args.image_size))
        print(f"generated {task['num_train_images']} images ({args.image_size[0]}x{args.image_size[1]}), "
              f"{task['num_train_rows']} rows in {time.perf_counter() - t0:.1f} s; cpu cores: {os.cpu_count()}")
        parquet = embedded_parquet(task, Path(tmp) / "embedded.parquet")
        configs = {"threaded (default)": (args.workers, None), "baseline: 1 thread": (1, None),
                   "parquet, images as bytes": (args.workers, parquet)}
        times: dict[str, list[float]] = {label: [] for label in configs}
        run_once(task, Path(tmp) / "out", None)  # warm-up: imports, page cache
        for _ in range(args.repeats):
            # Interleaved, so load from other processes on a shared machine hits all alike.
            for label, (workers, embedded) in configs.items():
                seconds, rows = run_once(task, Path(tmp) / "out", workers, embedded)
                times[label].append(seconds)
        runs = {}
        for label in configs:
            runs[label] = rows / statistics.median(times[label])
            print(f"{label:20s} {runs[label]:10,.0f} rows/s  (median of {args.repeats}: "
                  f"{statistics.median(times[label]):.2f} s for {rows} rows)")
        ratio = runs["threaded (default)"] / runs["baseline: 1 thread"]
        print(f"preprocess rate: {runs['threaded (default)']:,.0f} rows/s ({ratio:.2f}x the 1-thread baseline)")
        emb = runs["parquet, images as bytes"]
        print(f"embedded images: {emb:,.0f} rows/s ({emb / runs['threaded (default)']:.2f}x CSV + image folder)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
