"""docs/security.md links each mitigation to its test: every test it names must exist,
so the threat model cannot point at a test that was renamed or removed."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`((?:[\w/]+\.py)?)((?:::\w+)?)`")


def named_tests() -> list[tuple[str, str]]:
    """(file, test name) for every test the doc names; `::name` continues the file
    named last, as the doc writes it."""
    found, current = [], None
    for path, name in REFERENCE.findall(DOC.read_text()):
        if path.endswith(".py") and "/tests/" in f"/{path}":
            current = path
        elif path:
            continue
        if name and current:
            found.append((current, name[2:]))
        elif path and current and not name:
            found.append((current, ""))
    return found


def test_every_test_the_threat_model_names_exists():
    tests = named_tests()
    assert len(tests) > 50
    missing = []
    for path, name in tests:
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif name and not re.search(
            rf"^\s*(async )?def {name}\(", file.read_text(), re.M
        ):
            missing.append(f"{path}::{name}")
    assert not missing, missing
