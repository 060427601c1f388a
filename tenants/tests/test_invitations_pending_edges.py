"""The pending-invitations list (team page and API) drops an invitation once it is
accepted or revoked, and keeps the others."""

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from poolsaas.api.testing import api_client
from tenants.models import Invitation
from tenants.services import invitation_create

pytestmark = pytest.mark.django_db

PASSWORD = "tide-lantern-92-copper"


@pytest.fixture
def invite(mailoutbox, django_capture_on_commit_callbacks):
    def do(membership, email):
        with django_capture_on_commit_callbacks(execute=True):
            invitation, _ = invitation_create(
                membership=membership, email=email, role="operator"
            )
        link = re.search(r"https?://\S+/invitations/\S+/", mailoutbox[-1].body)
        return invitation, urlsplit(link.group(0)).path

    return do


def _pending_on_page(client) -> list[str]:
    html = client.get(reverse("team")).content.decode()
    section = html.split("<h2>Pending invitations</h2>", 1)[1].split("</section>")[0]
    if "No pending invitations." in section:
        return []
    return re.findall(r'data-label="E-mail">([^<]+)</td>', section)


def _pending_in_api(membership) -> list[str]:
    body = api_client(membership).get("/api/v1/invitations/").json()
    return sorted(row["email"] for row in body["results"])


def test_accepted_and_revoked_invitations_leave_the_list(login, alice, adam, invite):
    _, accept_path = invite(alice, "nina@acme.test")
    revoked, _ = invite(alice, "rob@acme.test")
    invite(alice, "sam@acme.test")
    page = login(adam)
    assert sorted(_pending_on_page(page)) == [
        "nina@acme.test",
        "rob@acme.test",
        "sam@acme.test",
    ]

    # Nina accepts from her link, in a browser of her own.
    signup = Client().post(
        accept_path,
        {"full_name": "Nina", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert signup.status_code == 302
    assert sorted(_pending_on_page(page)) == ["rob@acme.test", "sam@acme.test"]
    assert _pending_in_api(adam) == ["rob@acme.test", "sam@acme.test"]

    # Adam revokes Rob's on the page.
    response = page.post(reverse("invitation_revoke", args=[revoked.code]))
    assert response.status_code == 302
    assert _pending_on_page(page) == ["sam@acme.test"]
    assert _pending_in_api(adam) == ["sam@acme.test"]

    # Sam's, revoked through the API, empties it.
    sam = Invitation.objects.get(email="sam@acme.test")
    assert api_client(adam).delete(f"/api/v1/invitations/{sam.code}/").status_code in (
        200,
        204,
    )
    assert _pending_on_page(page) == []
    assert "No pending invitations." in page.get(reverse("team")).content.decode()
    assert _pending_in_api(adam) == []
