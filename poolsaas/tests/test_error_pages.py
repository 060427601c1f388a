"""What a customer sees when something is not there: the product's own 404 page, also
under DEBUG (`make run`), the same for another tenant's pool as for a made-up one; the
API keeps its JSON error shape. Plus the small things around it: the notice of a
suspended tenant and the favicon."""

import re
import uuid

import pytest
from django.contrib.staticfiles import finders
from django.test import override_settings

from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db

DJANGO_DEBUG_404 = b"Using the URLconf defined in"


@pytest.fixture(params=[True, False], ids=["debug", "production"])
def debug(request, settings):
    with override_settings(DEBUG=request.param):
        yield request.param


@pytest.mark.parametrize(
    "path", ["/no/such/page/", "/pools/{foreign}/", "/pools/{missing}/history/"]
)
def test_html_404s_are_the_products_page(login, alice, pool_b, debug, path):
    path = path.format(foreign=pool_b.code, missing=uuid.uuid4())
    response = login(alice).get(path)
    assert response.status_code == 404
    assert DJANGO_DEBUG_404 not in response.content
    html = response.content.decode()
    assert "<h1>Page not found</h1>" in html
    # A way back, and nothing about the pool asked for.
    assert 'href="/pools/"' in html
    assert str(pool_b.code) not in html
    assert "Globex" not in html


def test_foreign_and_made_up_pools_answer_the_same(login, alice, pool_b, debug):
    client = login(alice)
    foreign = client.get(f"/pools/{pool_b.code}/")
    made_up = client.get(f"/pools/{uuid.uuid4()}/")
    assert foreign.status_code == made_up.status_code == 404
    assert foreign.content == made_up.content


def test_anonymous_404_offers_login(client, debug):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b'href="/login/"' in response.content
    assert DJANGO_DEBUG_404 not in response.content


def test_missing_slash_still_redirects(login, alice, debug):
    response = login(alice).get("/pools")
    assert response.status_code == 301
    assert response["Location"] == "/pools/"


@pytest.mark.parametrize(
    "path", ["/api/v1/pools/{foreign}/", "/api/v1/pools/{missing}/", "/api/nope"]
)
def test_api_404s_keep_their_json_shape(alice, pool_b, debug, path):
    path = path.format(foreign=pool_b.code.hex, missing=uuid.uuid4().hex)
    response = api_client(alice).get(path)
    error = assert_error(response, 404, "not_found")
    assert "Page not found" not in error["message"]


def test_switching_into_a_suspended_tenant_shows_only_its_notice(
    login, alice, carol, make_member
):
    # Alice also belongs to Globex, which is suspended.
    make_member(carol.tenant, "alice@acme.test", "admin")
    carol.tenant.status = "suspended"
    carol.tenant.save()
    client = login(alice)
    page = client.post(
        "/tenant/switch/", {"tenant": str(carol.tenant.code)}, follow=True
    )
    assert page.status_code == 403
    html = page.content.decode()
    assert "Globex Residence is suspended" in html
    assert "You are now working in" not in html
    assert "msg-success" not in html
    # Switching back to an active tenant still says so.
    back = client.post(
        "/tenant/switch/", {"tenant": str(alice.tenant.code)}, follow=True
    )
    assert "You are now working in Acme Pools." in back.content.decode()


def test_every_page_links_the_favicon(client):
    html = client.get("/login/").content.decode()
    (href,) = re.findall(
        r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html
    )
    assert href == "/static/img/favicon.svg"
    path = finders.find("img/favicon.svg")
    assert path is not None
    with open(path) as svg:
        text = svg.read()
    assert text.startswith("<svg") and "<script" not in text


def test_favicon_ico_leads_to_the_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == "/static/img/favicon.svg"
