"""The dashboard's static files in production mode: collectstatic with WhiteNoise's
manifest storage succeeds (the vendored Chart.js and its source map included) and
every page refers only to files that exist under their hashed names."""

import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse


@pytest.fixture
def collected(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        },
    }
    call_command("collectstatic", "--noinput", verbosity=0)
    settings.DEBUG = False
    return tmp_path


def test_pages_refer_to_collected_hashed_files(
    collected: Path, login, olivia, device_a, pool_a
):
    client = login(olivia)
    urls = [
        reverse("pools"),
        reverse("pool_detail", args=[pool_a.code]),
        reverse("pool_programs", args=[pool_a.code]),
        reverse("pool_history", args=[pool_a.code]),
        reverse("devices"),
    ]
    seen = set()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        for ref in re.findall(
            r'(?:src|href)="/static/([^"]+)"', response.content.decode()
        ):
            assert (collected / ref).is_file(), ref
            # A hashed name: a change of the file changes its URL (cache busting).
            assert re.search(r"\.[0-9a-f]{12}\.(js|css|svg)$", ref), ref
            seen.add(re.sub(r"\.[0-9a-f]{12}\.", ".", ref))
    assert {
        "js/pool.js",
        "js/overview.js",
        "js/history.js",
        "css/dashboard.css",
        "vendor/chartjs/chart.umd.min.js",
    } <= seen
    # WhiteNoise serves pre-compressed copies.
    assert list(collected.glob("js/pool.*.js.gz"))


def test_chart_library_is_vendored_with_its_license():
    from django.conf import settings

    vendor = Path(settings.BASE_DIR) / "static" / "vendor" / "chartjs"
    head = (vendor / "chart.umd.min.js").read_text()[:200]
    assert "Chart.js v4.6.1" in head
    assert "MIT" in (vendor / "LICENSE.md").read_text()
    assert "4.6.1" in (vendor / "VERSION").read_text()
