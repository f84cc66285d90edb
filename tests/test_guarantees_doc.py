"""docs/guarantees.md names, for each guarantee, a test that exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_the_guarantees_page_names_exists():
    text = (ROOT / "docs" / "guarantees.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(cited) >= 20
    missing = [f"{f}::{name}" for f, name in cited
               if not (ROOT / f).is_file() or not re.search(rf"^def {name}\(", (ROOT / f).read_text(), re.M)]
    assert not missing, f"docs/guarantees.md names tests that do not exist: {missing}"
