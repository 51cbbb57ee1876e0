"""Task data (a table + an image folder, or a dataset with images) -> LLaVA training and validation files.

    report = preprocess(PreprocessConfig(input="train.csv", image_folder="images", output_dir="out"))

Steps, each in its own module:
    tables.py     read records, each with its file and line (CSV/TSV/JSON/JSONL/Parquet/Arrow)
    hf_tables.py  ... or each with its row, from a Hugging Face dataset (hf:ORG/NAME, save_to_disk)
    embedded_images.py  write images held as bytes (the `datasets` Image feature) into the image folder
    questions.py  map columns, check values, merge repeated rows into questions
    images.py     open and fully decode every referenced image once
    outputs.py    split by image, build conversations, write atomically
and this module ties them together and builds the report.

Nothing is dropped silently: every record is either used or listed in
report.json under "problems" with its file, line (or Parquet row), field and
reason, and rows_read == rows_used + rows_skipped.  Damage that loses more
than its own record (an unclosed quote that swallows the lines after it, a
JSON list broken mid-way) is counted in "lines_lost" and fails the run
(exit 1, no data files): the data would silently be missing those records.

Before any reading, the output folder is checked: writable, not a file, and
not holding the input at one of the names written there (a raw train.json in
--output-dir would otherwise be replaced).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from llava.data.embedded_images import EmbeddedImages
from llava.data.hf_tables import is_dataset_source, open_dataset
from llava.data.images import check_images
from llava.data.outputs import (
    conversation,
    json_list_text,
    jsonl_text,
    split_images,
    train_records,
    val_answer_line,
    val_question_line,
    write_atomically,
)
from llava.data.questions import Problem, Question, merge_rows, parse_record, parse_template, resolve_columns
from llava.data.tables import TableError, open_table
from llava.file_guard import refuse_output_dir_over_inputs
from llava.printable import printable

# Exit codes of the command (see docs/data.md).
EXIT_OK = 0
EXIT_PROBLEMS = 1  # nothing usable remains, lines were lost, or --strict and at least one problem
EXIT_BAD_INPUT = 2  # the input cannot be read at all: missing file or column, bad option (argparse also uses 2)



class ConfigError(ValueError):
    """An option value that makes the run impossible (reported as exit code 2)."""


OUTPUT_FILES = ("train.json", "val.json", "val_questions.jsonl", "val_answers.jsonl")


def check_output_dir(cfg: "PreprocessConfig") -> None:
    """ConfigError, before any work, for an --output-dir that cannot be written or would overwrite the input."""
    out = Path(cfg.output_dir)
    shown = printable(out)
    try:
        refuse_output_dir_over_inputs("--output-dir", out, [*OUTPUT_FILES, "report.json"], {"--input": cfg.input})
    except SystemExit as exc:
        raise ConfigError(str(exc.code)) from None
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {shown}: a file, not a directory")
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise ConfigError(f"--output-dir {shown}: {printable(existing)} is a file, not a directory")
    try:  # a real write, not os.access: that says yes to root on a read-only file system
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(f"--output-dir {shown}: cannot write there ({exc.strerror or exc})") from None


@dataclass
class PreprocessConfig:
    input: str
    image_folder: str
    output_dir: str
    image_column: str | None = None  # default "image"
    image_template: str | None = None  # e.g. "COCO_val2014_{image_id:012d}.jpg"; wins over image_column
    question_column: str | None = None  # default "question"
    answer_column: str | None = None  # default "answer"
    id_column: str | None = None  # default "question_id" if present, else ids from line numbers
    category_column: str | None = None  # default "category" if present
    options_column: str | None = None  # one list column, or "A,B,C,D" for one option per column
    options_separator: str = "|"
    answer_separator: str | None = None  # split string answers ("red|crimson") into several
    prompt_suffix: str | None = None  # appended on a new line to open questions
    val_fraction: float = 0.1
    seed: int = 0
    turns_per_image: int = 1
    strict: bool = False
    workers: int | None = None  # image-check threads
    progress: bool = True
    split: str | None = None  # a Hugging Face dataset's split (hf:..., save_to_disk folder)
    hf_config: str | None = None  # a hub dataset's configuration (subset) name

    def validate(self) -> None:
        if (self.split is not None or self.hf_config is not None) and not is_dataset_source(self.input):
            flag = "--split" if self.split is not None else "--hf-config"
            raise ConfigError(f"{flag} applies to a Hugging Face dataset (--input hf:ORG/NAME, or a save_to_disk "
                              f"folder); --input {printable(self.input)} is neither")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ConfigError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.turns_per_image < 1:
            raise ConfigError(f"--turns-per-image must be >= 1, got {self.turns_per_image}")
        if self.answer_separator == "":
            raise ConfigError("--answer-separator must not be empty")
        if not self.options_separator:
            raise ConfigError("--options-separator must not be empty")


@dataclass
class Result:
    exit_code: int
    report: dict
    wrote: bool  # whether the data files were (re)written
    seconds: float = 0.0  # wall time; kept out of report.json so that file is reproducible


def _count_rows(problems: list[Problem]) -> Counter:
    return Counter(p.kind for p in problems)


def preprocess(cfg: PreprocessConfig) -> Result:
    """Run the whole pipeline. Raises TableError / ConfigError when the input cannot be used at all."""
    started = time.perf_counter()
    cfg.validate()
    check_output_dir(cfg)
    image_folder = Path(cfg.image_folder)
    dataset = is_dataset_source(cfg.input)
    may_embed = dataset or Path(cfg.input).suffix.lower() in (".parquet", ".arrow")
    if not image_folder.is_dir() and not (may_embed and not image_folder.exists()):
        raise TableError(f"--image-folder {printable(cfg.image_folder)}: "
                         f"{'not a directory' if image_folder.exists() else 'no such directory'}")
    out_dir = Path(cfg.output_dir)

    if cfg.image_template:
        parse_template(cfg.image_template)  # a malformed template fails before a long read

    # 1. Read every record. A header is checked before reading; JSON/JSONL
    # columns are only known once every record is read.
    table = open_dataset(cfg.input, cfg.split, cfg.hf_config) if dataset else open_table(cfg.input)
    cols = resolve_columns(table, cfg) if table.has_header else None
    embedded = _embedded_images(table, cols, image_folder)
    source = embedded.records(table.records) if embedded else table.records
    records = list(tqdm(source, desc="reading rows", unit="row", total=table.rows, disable=not cfg.progress))
    cols = cols or resolve_columns(table, cfg)

    # 2. Records -> rows -> questions.
    problems: list[Problem] = []
    warnings: list[Problem] = []
    rows = []
    for rec in records:
        parsed = parse_record(rec, cols, cfg)
        if isinstance(parsed, Problem):
            problems.append(parsed)
        else:
            rows.append(parsed)
            warnings.extend(parsed.warnings)
    questions, conflicts = merge_rows(rows)
    problems.extend(conflicts)

    # 3. Images: each distinct one checked once; its questions' rows go if it fails.
    checks = check_images(image_folder, [q.image for q in questions.values()], cfg.workers, cfg.progress)
    bad_images = {name: c for name, c in checks.items() if not c.ok}
    usable: list[Question] = []
    for q in questions.values():
        check = bad_images.get(q.image)
        if check is None:
            usable.append(q)
            continue
        for loc in q.locs:
            problems.append(Problem(check.reason, f"image {q.image!r}: {check.detail}", loc, cols.image))
    problems.sort(key=lambda p: (p.loc.line or 0, p.loc.row or 0))

    # 4. Split by image and build outputs.
    val_images = split_images([q.image for q in usable], cfg.val_fraction, cfg.seed)
    train_qs = [q for q in usable if q.image not in val_images]
    val_qs = [q for q in usable if q.image in val_images]
    train = train_records(train_qs, cfg.prompt_suffix, cfg.turns_per_image)
    val = [conversation([q], cfg.prompt_suffix) for q in val_qs]  # single-turn, 1:1 with val_questions.jsonl

    report = _report(cfg, table, cols, len(records), usable, train_qs, val_qs, train, val_images,
                     problems, warnings, bad_images)
    if embedded:
        report["embedded_images"] = embedded.as_dict()
    if not usable or report["lines_lost"]:
        exit_code = EXIT_PROBLEMS
    elif cfg.strict and problems:
        exit_code = EXIT_PROBLEMS
    else:
        exit_code = EXIT_OK
    report["exit_code"] = exit_code
    report["wrote_data_files"] = exit_code == EXIT_OK
    files = {out_dir / "report.json": json.dumps(report, indent=2, ensure_ascii=False) + "\n"}
    if exit_code == EXIT_OK:
        files.update({
            out_dir / "train.json": json_list_text(train),
            out_dir / "val.json": json_list_text(val),
            out_dir / "val_questions.jsonl": jsonl_text([val_question_line(q, cfg.prompt_suffix) for q in val_qs]),
            out_dir / "val_answers.jsonl": jsonl_text([val_answer_line(q) for q in val_qs]),
        })
    # report.json goes last: it describes the data files next to it.
    write_atomically(dict(sorted(files.items(), key=lambda kv: kv[0].name == "report.json")))
    return Result(exit_code, report, exit_code == EXIT_OK, time.perf_counter() - started)


def _embedded_images(table, cols, image_folder: Path) -> EmbeddedImages | None:
    """The writer for an image column that holds the images themselves; the image folder is made for it."""
    if cols is None or cols.image is None or cols.image not in table.image_columns:
        if not image_folder.is_dir():
            raise TableError(f"--image-folder {printable(image_folder)}: no such directory (the input holds "
                             "image paths, not images, so they must be there already)")
        return None
    try:
        image_folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--image-folder {printable(image_folder)}: cannot create it to write the dataset's "
                          f"images there ({exc.strerror or exc})") from None
    return EmbeddedImages(image_folder, cols.image)


def _report(cfg, table, cols, rows_read, usable, train_qs, val_qs, train, val_images, problems, warnings,
            bad_images) -> dict:
    rows_used = sum(len(q.locs) for q in usable)
    image_reasons = Counter(c.reason for c in bad_images.values())
    return {
        "input": printable(table.path),
        "format": table.format,
        "image_folder": printable(Path(cfg.image_folder).resolve()),
        "output_dir": printable(Path(cfg.output_dir).resolve()),
        "columns": cols.as_dict(),
        "settings": {k: v for k, v in asdict(cfg).items()
                     if k not in ("input", "image_folder", "output_dir", "progress", "workers")
                     and (v is not None or k not in ("split", "hf_config"))},
        "rows_read": rows_read,
        "rows_used": rows_used,
        "rows_skipped": {"total": len(problems), "by_reason": dict(sorted(_count_rows(problems).items()))},
        # Lines (Parquet: rows) holding other records that damage made unreadable: not in rows_read.
        "lines_lost": sum(p.lost for p in problems),
        "questions": {"train": len(train_qs), "val": len(val_qs), "total": len(usable)},
        "train_conversations": len(train),
        "images": {
            "referenced": len({q.image for q in usable}) + len(bad_images),
            "train": len({q.image for q in train_qs}),
            "val": len(val_images),
            "skipped": {"total": len(bad_images), "by_reason": dict(sorted(image_reasons.items()))},
        },
        "problems": [p.as_dict() for p in problems],
        "warnings": {"total": len(warnings), "by_reason": dict(sorted(_count_rows(warnings).items())),
                     "items": [w.as_dict() for w in warnings]},
    }


def format_summary(result: Result, max_problems: int = 10) -> str:
    """A few lines for a person; report.json has everything."""
    r = result.report
    q, img = r["questions"], r["images"]
    lines = [
        f"read {r['rows_read']} rows from {r['input']} ({r['format']}); used {r['rows_used']}, "
        f"skipped {r['rows_skipped']['total']} "
        f"({result.seconds:.1f} s, {r['rows_read'] / max(result.seconds, 1e-9):.0f} rows/s)",
        f"questions: {q['train']} train ({r['train_conversations']} conversations), {q['val']} val; "
        f"images: {img['train']} train, {img['val']} val, {img['skipped']['total']} unusable",
    ]
    if "embedded_images" in r:
        e = r["embedded_images"]
        lines.append(f"images held in column {e['column']!r}: wrote {e['files_written']} file(s) to {e['folder']} "
                     f"({e['files_already_there']} already there, named by content)")
    if r["lines_lost"]:
        lines.append(f"LOST {r['lines_lost']} line(s) to damage that swallowed other records (below); fix the file "
                     "and run again")
    for reason, n in r["rows_skipped"]["by_reason"].items():
        lines.append(f"  skipped {n} row(s): {reason}")
    for reason, n in r["warnings"]["by_reason"].items():
        lines.append(f"  warning on {n} row(s): {reason}")
    for p in r["problems"][:max_problems]:
        where = f"{p['file']}:{p['line']}" if "line" in p else f"{p['file']} row {p['row']}"
        lines.append(f"  {where}: {p['message']}")
    if len(r["problems"]) > max_problems:
        lines.append(f"  ... {len(r['problems']) - max_problems} more in report.json")
    out = r["output_dir"]
    if result.wrote:
        lines.append(f"wrote {', '.join(OUTPUT_FILES)} and report.json to {out}")
    elif r["lines_lost"]:
        lines.append(f"{r['lines_lost']} line(s) lost: data files not written; see {out}/report.json")
    elif not q["total"]:
        lines.append(f"nothing usable remains; wrote only {out}/report.json")
    else:
        n = r["rows_skipped"]["total"]
        lines.append(f"--strict: {n} problem(s), data files not written; see {out}/report.json")
    return "\n".join(lines)
