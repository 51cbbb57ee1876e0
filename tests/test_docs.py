"""The README and docs/ match the code (issue 19): every path they name exists, every library module
is in the README's layout, and each doc opens with commands and keeps its measurements in one section
at its end, naming the script that measured them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PATH = re.compile(r"(?<![\w./-])((?:llava|scripts|bench|tests|docs)/[\w./-]*[\w/])")
COMMAND = re.compile(r"^    (?:\S+=\S+ )*(?:python|\.venv/bin/python|bash|make) ", re.M)
MEASURED_BY = re.compile(r"bench/\w+\.(?:py|sh)|scripts/\w+\.(?:py|sh)|inference\.sh|make demo|pytest")


def doc_id(path: Path) -> str:
    return path.name


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each '## ' section, in order; headings inside indented code do not count."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def layout_entries(readme: str) -> dict[str, str]:
    """The README's layout block: {'llava/model': 'builder.py (...) ...', 'llava/constants.py': '...'}."""
    layout = dict(sections(readme))["Layout"]
    return {m.group(1).rstrip("/"): m.group(2)
            for m in re.finditer(r"^    (\S+) +(.*(?:\n {20,}\S.*)*)", layout, re.M)}


@pytest.mark.parametrize("doc", [README, *DOCS], ids=doc_id)
def test_every_path_a_doc_names_exists(doc):
    named = {p.split("::")[0] for p in PATH.findall(doc.read_text())}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_every_library_module_is_in_the_readme_layout():
    entries = layout_entries(README.read_text())
    top = " ".join(v for k, v in entries.items() if k.endswith(".py")) + " " + " ".join(entries)
    missing = []
    for f in sorted((ROOT / "llava").rglob("*.py")):
        if f.name == "__init__.py":
            continue
        package = f.parent.relative_to(ROOT).as_posix()
        where = top if package == "llava" else entries.get(package, "")
        if not re.search(rf"(?<![\w.]){re.escape(f.name)}", where):
            missing.append(f.relative_to(ROOT).as_posix())
    assert not missing, f"modules missing from the README's layout: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_a_doc_opens_with_commands(doc):
    text = doc.read_text()
    opening = text[:text.find("\n## ")] if "\n## " in text else text
    assert COMMAND.search(opening), f"{doc.name}: no command before its first section"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_measurements_are_one_section_at_the_end_with_what_measured_them(doc):
    found = sections(doc.read_text())
    headings = [h.strip() for h, _ in found]
    assert headings.count("Measurements") == 1, f"{doc.name}: {headings.count('Measurements')} such sections"
    assert headings[-1] == "Measurements", f"{doc.name}: sections after Measurements: {headings}"
    body = found[-1][1]
    assert MEASURED_BY.search(body), f"{doc.name}: its Measurements name no command that measures them"
