"""docs/reliability.md lists every kind of bad input the suite tests, each with a test that exists."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def collected(*flags: str) -> set[str]:
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *flags,
                        "tests"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return {line.strip() for line in p.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_every_bad_input_case_is_listed_with_a_test_that_exists():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    refs = set(re.findall(r"`(tests/[^`\s]+::[^`]+)`", doc))
    every, bad = collected(), collected("-m", "bad_input")
    functions = {i.split("[")[0] for i in every}
    unlisted = sorted(i for i in bad if i not in refs and i.split("[")[0] not in refs)
    assert not unlisted, f"{len(unlisted)} bad_input cases are not in docs/reliability.md, e.g. {unlisted[:5]}"
    stale = sorted(r for r in refs if r not in every and r not in functions)
    assert not stale, f"docs/reliability.md names tests that do not exist: {stale[:5]}"
    assert len(bad) >= 80
