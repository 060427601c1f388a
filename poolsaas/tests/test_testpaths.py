"""Every app's tests run in `make test`: pytest only collects the testpaths listed in
pyproject.toml, and two apps (alerts, ota) once sat outside them unseen."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_tests_folder_is_in_the_testpaths():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    testpaths = set(config["tool"]["pytest"]["ini_options"]["testpaths"])
    folders = {
        str(tests.parent.relative_to(ROOT))
        for tests in ROOT.glob("*/tests")
        if tests.is_dir() and any(tests.glob("test_*.py"))
    }
    folders.discard("firmware")  # collected as firmware/tests itself
    assert "firmware/tests" in testpaths
    assert folders - testpaths == set()
