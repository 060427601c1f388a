"""Which broker a new device may use is one rule, on the page and in the API: the
platform broker (the default) or one of the tenant's own brokers; never another
tenant's, which reads exactly like a made-up code."""

import re
import uuid

import pytest
from django.urls import reverse

from devices.models import Device
from devices.services.brokers import broker_create
from devices.services.claims import claim_code_for
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db

DEVICES = "/api/v1/devices/"


@pytest.fixture
def brokers(alice, carol, platform_broker):
    def make(membership, name, prefix):
        return broker_create(
            membership=membership,
            name=name,
            host=f"mqtt.{prefix}.test",
            port=8883,
            use_tls=True,
            topic_prefix=prefix,
        )

    return {
        "platform": platform_broker,
        "own": [make(alice, "Acme east", "east"), make(alice, "Acme west", "west")],
        "foreign": make(carol, "Globex broker", "globex"),
    }


def _options(html: str) -> list[tuple[str, str]]:
    select = re.search(r'<select id="broker" name="broker">(.*?)</select>', html, re.S)
    return re.findall(r'<option value="([0-9a-f]*)"[^>]*>([^<]*)</option>', select[1])


def test_the_page_offers_the_platform_broker_first_then_the_tenants_own(
    login, adam, pool_a, brokers
):
    html = login(adam).get(reverse("device_add")).content.decode()
    codes = [code for code, _ in _options(html)]
    east, west = brokers["own"]
    assert codes == [brokers["platform"].code.hex, east.code.hex, west.code.hex]
    assert brokers["foreign"].code.hex not in html
    assert brokers["foreign"].name not in html


def _page_add(client, pool, broker_code, device_id):
    return client.post(
        reverse("device_add"),
        {
            "pool": pool.code.hex,
            "device_id": device_id,
            "broker": broker_code,
            "protocol": "v3.1",
            # Needed on the platform broker, ignored on a tenant's own.
            "claim_code": claim_code_for(device_id),
        },
    )


def _api_add(membership, pool, broker_code, device_id):
    payload = {
        "pool": str(pool.code),
        "device_id": device_id,
        "protocol": "v3.1",
        "claim_code": claim_code_for(device_id),
    }
    if broker_code is not None:
        payload["broker"] = broker_code
    return api_client(membership).post(DEVICES, payload, format="json")


@pytest.mark.parametrize("which", ["default", "platform", "own"])
def test_page_and_api_accept_the_same_brokers(login, adam, tenant_a, brokers, which):
    from devices.models import Pool

    pools = [Pool.objects.create(tenant=tenant_a, name=f"P{n}") for n in range(2)]
    expected = brokers["own"][0] if which == "own" else brokers["platform"]
    code = {
        "default": None,
        "platform": brokers["platform"].code.hex,
        "own": brokers["own"][0].code.hex,
    }[which]

    page = _page_add(login(adam), pools[0], code or "", "v31-page")
    assert page.status_code in (200, 302), page.content.decode()[:500]
    api = _api_add(adam, pools[1], code, "v31-api")
    assert api.status_code == 201, api.content

    assert Device.objects.get(device_id="v31-page").broker == expected
    assert Device.objects.get(device_id="v31-api").broker == expected


@pytest.mark.parametrize("which", ["foreign", "made-up", "malformed"])
def test_page_and_api_refuse_the_same_brokers_alike(
    login, adam, pool_a, brokers, which
):
    code = {
        "foreign": brokers["foreign"].code.hex,
        "made-up": uuid.uuid4().hex,
        "malformed": "not-a-code",
    }[which]
    page = _page_add(login(adam), pool_a, code, "v31-page")
    assert page.status_code == 400
    assert "Pick the platform broker or one of your own brokers." in (
        page.content.decode()
    )
    api = _api_add(adam, pool_a, code, "v31-api")
    body = assert_error(api, 400)
    assert body["fields"]["broker"] == [
        "Pick the platform broker or one of your own brokers."
    ]
    assert not Device.objects.exists()


def test_the_api_refuses_another_tenants_broker_as_a_made_up_one(adam, pool_a, brokers):
    foreign = _api_add(adam, pool_a, brokers["foreign"].code.hex, "v31-a").content
    made_up = _api_add(adam, pool_a, uuid.uuid4().hex, "v31-a").content
    assert foreign == made_up
