"""Turn table records into questions: column mapping, value checks, answers, multiple choice.

A record becomes a `Row` (one question with one or more answers) or a
`Problem` naming its file, line, field and reason. Rows sharing a
question_id are then merged into one `Question` with all their answers,
the repeated-rows layout VQA task files use for several acceptable answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN, MULTIPLE_CHOICE_PROMPT
from llava.data.images import UNSAFE_PATH, normalize_relative
from llava.data.tables import Location, Record, Table, TableError, has_undecodable, is_missing

LETTERS = string.ascii_uppercase
_INT_LIKE = re.compile(r"^[+-]?\d+(\.0*)?$")


@dataclass(slots=True)
class Problem:
    kind: str  # short stable key, counted by reason in the report
    message: str
    loc: Location
    field: str | None = None
    other: Location | None = None  # the earlier row a duplicate conflicts with
    lost: int = 0  # lines (Parquet: rows) of other records this damage made unreadable (tables.Record.lost)

    def as_dict(self) -> dict:
        d = {**self.loc.as_dict(), "reason": self.kind, "message": self.message}
        if self.field:
            d["field"] = self.field
        if self.other is not None:
            d["first_seen"] = self.other.as_dict()
        if self.lost:
            d["lost"] = self.lost
        return d

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}"


@dataclass
class Columns:
    """The resolved column mapping (what the report prints as "columns")."""

    question: str
    answer: str
    image: str | None = None
    image_template: str | None = None
    template_fields: list[tuple[str, bool]] = field(default_factory=list)  # (column, convert int-like to int)
    id: str | None = None  # None: ids are generated from line/row numbers
    category: str | None = None
    options: list[str] | None = None  # one list column, or several columns holding one option each

    def as_dict(self) -> dict:
        return {
            "image": None if self.image_template else self.image,
            "image_template": self.image_template,
            "question": self.question,
            "answer": self.answer,
            "id": self.id,
            "category": self.category,
            "options": (self.options[0] if len(self.options) == 1 else self.options) if self.options else None,
        }


@dataclass(slots=True)
class Row:
    loc: Location
    question_id: str
    image: str
    question: str
    answers: list[str]
    category: str | None
    options: list[str] | None
    warnings: list[Problem] = field(default_factory=list)


@dataclass(slots=True)
class Question:
    question_id: str
    image: str
    question: str
    category: str | None
    options: list[str] | None
    answers: list[str] = field(default_factory=list)  # all answers, repeats kept, in order
    locs: list[Location] = field(default_factory=list)  # one per contributing row

    @property
    def target(self) -> str:
        """Most frequent answer; ties go to the first seen (Counter keeps insertion order)."""
        return Counter(self.answers).most_common(1)[0][0]

    def prompt(self, suffix: str | None) -> str:
        """The question as the model sees it, without the image token."""
        if self.options:
            lines = [self.question] + [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(self.options)]
            return "\n".join(lines + [MULTIPLE_CHOICE_PROMPT])
        return f"{self.question}\n{suffix}" if suffix else self.question


def parse_template(template: str) -> list[tuple[str, bool]]:
    """Columns a file-name template uses, and whether each wants integer-looking values as int.

    '{image_id:012d}' needs int('000123') to pad; '{image_id}' must keep "000123" as written.
    """
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TableError(f"--image-template {template!r}: {exc}") from None
    for _literal, name, spec, _conv in parsed:
        if name is None:
            continue
        column = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not column or column.isdigit():
            raise TableError(f"--image-template {template!r}: fields must name columns, e.g. {{image_id}}")
        fields.append((column, bool(spec) and not spec.endswith("s")))
    if not fields:
        raise TableError(f"--image-template {template!r} names no column, so every row would get the same image")
    return fields


def resolve_columns(table: Table, cfg) -> Columns:
    """Map config to actual columns; raise TableError naming a missing column and the available ones.

    For JSON/JSONL (no header) this runs after reading, so `table.columns` is
    the union of keys seen: a column missing from every record is an error
    here, one missing from some records is a per-record problem later.
    """
    available = table.columns
    # A JSON file with no records has no keys to check: let it through, to end as "nothing usable".
    have = set(available) if available or table.has_header else _Everything()

    def missing(column: str, flag: str, hint: str = "") -> TableError:
        where = "header" if table.has_header else "records"
        return TableError(
            f"{table.path}: column {column!r} ({flag}) not found in the {where}; "
            f"available columns: {', '.join(available) or '(none)'}{hint}"
        )

    cols = Columns(question=cfg.question_column or "question", answer=cfg.answer_column or "answer")
    for name, flag in ((cols.question, "--question-column"), (cols.answer, "--answer-column")):
        if name not in have:
            raise missing(name, flag)
    if cfg.image_template:
        cols.image_template = cfg.image_template
        cols.template_fields = parse_template(cfg.image_template)
        for column, _ in cols.template_fields:
            if column not in have:
                raise missing(column, f"named in --image-template {cfg.image_template!r}")
    else:
        cols.image = cfg.image_column or "image"
        if cols.image not in have:
            hint = ""
            if "image_id" in have:
                hint = ("; to build file names from image_id use e.g. "
                        "--image-template 'COCO_val2014_{image_id:012d}.jpg'")
            raise missing(cols.image, "--image-column", hint)
    # Optional columns: a default that is absent just switches the feature off;
    # a column the user named explicitly must exist.
    for attr, named, flag, default in (("id", cfg.id_column, "--id-column", "question_id"),
                                       ("category", cfg.category_column, "--category-column", "category")):
        if named and named not in have:
            raise missing(named, flag)
        if named or default in have:
            setattr(cols, attr, named or default)
    if cfg.options_column:
        cols.options = [c.strip() for c in cfg.options_column.split(",") if c.strip()]
        for column in cols.options:
            if column not in have:
                raise missing(column, "--options-column")
    return cols


class _Everything:
    def __contains__(self, item) -> bool:
        return True


class _Bad(Exception):
    """Internal: a field value that makes the row unusable."""

    def __init__(self, kind: str, message: str, field: str | None = None):
        super().__init__(message)
        self.kind, self.message, self.field = kind, message, field


def _text(value: Any, column: str, what: str) -> str:
    """A field as stripped text; numbers are accepted (JSON answers like 2), other types are not."""
    if isinstance(value, str):
        if has_undecodable(value):
            raise _Bad("undecodable_text", f"{what} ({column!r}) is not valid UTF-8", column)
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad("unreadable_value", f"{what} ({column!r}) has unsupported type {type(value).__name__}", column)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Parquet/pandas turn int columns with gaps into floats
    return str(value)


def _get(rec: Record, column: str, what: str, required: bool = True) -> Any:
    if column not in rec.values:
        raise _Bad("missing_field", f"missing field {column!r} ({what})", column)
    value = rec.values[column]
    if required and is_missing(value):
        raise _Bad(f"empty_{what.replace(' ', '_')}", f"empty {what} ({column!r})", column)
    return value


def _split_list(value: Any, column: str, what: str, separator: str | None) -> list[str]:
    """A list value, or a string split by separator, as a list of non-empty texts."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif is_missing(value):
        items = []
    else:
        text = _text(value, column, what)
        items = text.split(separator) if separator else [text]
    out = []
    for i, item in enumerate(items, 1):
        if is_missing(item):
            raise _Bad(f"empty_{what.replace(' ', '_')}", f"{what} #{i} in {column!r} is empty", column)
        out.append(_text(item, column, what))
    return out


def _image_name(rec: Record, cols: Columns) -> str:
    if cols.image_template:
        values = {}
        for column, wants_int in cols.template_fields:
            value = _get(rec, column, "image template field")
            if wants_int and isinstance(value, str) and _INT_LIKE.match(value.strip()):
                value = int(float(value)) if "." in value else int(value)
            elif wants_int and isinstance(value, float) and value.is_integer():
                value = int(value)
            values[column] = value
        try:
            name = cols.image_template.format_map(values)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise _Bad("bad_image_template", f"cannot fill --image-template with {shown} ({exc})") from None
    else:
        name = _text(_get(rec, cols.image, "image"), cols.image, "image")
    if has_undecodable(name):
        raise _Bad("undecodable_text", f"image path {name!r} is not valid UTF-8 text", cols.image)
    norm = normalize_relative(name)
    if norm is None:
        raise _Bad(UNSAFE_PATH, f"image path {name!r} is absolute or leaves --image-folder", cols.image)
    return norm


def _options(rec: Record, cols: Columns, separator: str) -> list[str] | None:
    if not cols.options:
        return None
    if len(cols.options) == 1:
        column = cols.options[0]
        opts = _split_list(_get(rec, column, "options", required=False), column, "option", separator)
    else:  # MMBench style: columns A, B, C, D; trailing empty ones mean fewer options
        opts, gap = [], None
        for column in cols.options:
            value = _get(rec, column, "option", required=False)
            if is_missing(value):
                gap = gap or column
            elif gap:
                raise _Bad("bad_options", f"option column {gap!r} is empty but a later one, {column!r}, is not", gap)
            else:
                opts.append(_text(value, column, "option"))
    if len(opts) > len(LETTERS):
        raise _Bad("bad_options", f"{len(opts)} options; at most {len(LETTERS)} can get letters", cols.options[0])
    return opts or None  # no options: an open question, allowed in a mixed file


def _to_letter(answer: str, options: list[str], column: str) -> str:
    """Accept the option's letter ("B", "b") or its text; letters win when both could match."""
    if len(answer) == 1 and answer.upper() in LETTERS[: len(options)]:
        return answer.upper()
    for i, opt in enumerate(options):
        if answer == opt:
            return LETTERS[i]
    folded = [i for i, opt in enumerate(options) if answer.casefold() == opt.casefold()]
    if len(folded) == 1:
        return LETTERS[folded[0]]
    raise _Bad(
        "answer_not_an_option",
        f"answer {answer!r} is neither an option letter (A-{LETTERS[len(options) - 1]}) nor one of the options "
        f"{options!r}",
        column,
    )


def parse_record(rec: Record, cols: Columns, cfg) -> Row | Problem:
    if rec.error is not None:
        return Problem(rec.kind or "unreadable_record", rec.error, rec.loc, lost=rec.lost)
    try:
        warnings = []
        if cols.id:
            qid = _text(_get(rec, cols.id, "question id"), cols.id, "question id")
        else:
            qid = f"line{rec.loc.line}" if rec.loc.line is not None else f"row{rec.loc.row}"
        image = _image_name(rec, cols)
        question = _text(_get(rec, cols.question, "question"), cols.question, "question")
        if DEFAULT_IMAGE_TOKEN in question:
            # LLaVA-format sources often carry "<image>\n"; we add exactly one ourselves.
            question = question.replace(DEFAULT_IMAGE_TOKEN, "").strip()
            warnings.append(Problem("image_token_removed", f"removed {DEFAULT_IMAGE_TOKEN} from the question",
                                    rec.loc, cols.question))
            if not question:
                msg = f"empty question ({cols.question!r}) once {DEFAULT_IMAGE_TOKEN} is removed"
                raise _Bad("empty_question", msg, cols.question)
        answers = _split_list(_get(rec, cols.answer, "answer"), cols.answer, "answer", cfg.answer_separator)
        if not answers:
            raise _Bad("empty_answer", f"empty answer ({cols.answer!r})", cols.answer)
        category = None
        if cols.category and not is_missing(rec.values.get(cols.category)):
            category = _text(rec.values[cols.category], cols.category, "category")
        options = _options(rec, cols, cfg.options_separator)
        if options:
            answers = [_to_letter(a, options, cols.answer) for a in answers]
    except _Bad as bad:
        return Problem(bad.kind, bad.message, rec.loc, bad.field)
    return Row(rec.loc, qid, image, question, answers, category, options, warnings)


def merge_rows(rows: list[Row]) -> tuple[dict[str, Question], list[Problem]]:
    """Group rows by question_id; a row that disagrees with the first one is a problem, not merged."""
    questions: dict[str, Question] = {}
    problems: list[Problem] = []
    for row in rows:
        q = questions.get(row.question_id)
        if q is None:
            q = questions[row.question_id] = Question(row.question_id, row.image, row.question, row.category,
                                                       row.options)
        else:
            diffs = [
                f"{name} {new!r} vs {old!r}"
                for name, new, old in (("image", row.image, q.image), ("question", row.question, q.question),
                                       ("options", row.options, q.options), ("category", row.category, q.category))
                if new != old
            ]
            if diffs:
                problems.append(Problem(
                    "conflicting_question_id",
                    f"question_id {row.question_id!r} was first seen at {q.locs[0]} with a different "
                    + "; ".join(diffs),
                    row.loc, other=q.locs[0],
                ))
                continue
        q.answers.extend(row.answers)
        q.locs.append(row.loc)
    return questions, problems
