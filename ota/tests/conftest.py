import pytest


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Releases stored by a test go to its own folder, never into the source tree."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
