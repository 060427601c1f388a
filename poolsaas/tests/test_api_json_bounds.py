"""Issue 10 point 9: deeply nested or oversized JSON answers a clear 400 in the one
API error shape (anonymous login and authenticated writes alike), and a deeply nested
WebSocket message gets an error instead of reaching a handler."""

import json

import pytest

from devices.tests.test_consumers import (
    pool_path,
    receive_type,
    session_cookie,
    socket,
)
from poolsaas.api.parsers import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    JSONTooDeep,
    json_depth_check,
)
from poolsaas.api.testing import api_client, assert_error

DEEP = '{"email": ' + "[" * 100_000 + "]" * 100_000 + "}"


def post_raw(client, path: str, body: str, method: str = "post"):
    return getattr(client, method)(path, data=body, content_type="application/json")


@pytest.mark.django_db
def test_deeply_nested_login_is_a_400_not_a_500():
    response = post_raw(api_client(), "/api/login", DEEP)
    error = assert_error(response, 400, "too_deep")
    assert f"at most {MAX_JSON_DEPTH} levels" in error["message"]


@pytest.mark.django_db
def test_deeply_nested_write_is_a_400_and_changes_nothing(adam, pool_a):
    body = '{"name": "x", "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    response = post_raw(
        api_client(adam), f"/api/v1/pools/{pool_a.code.hex}/", body, method="patch"
    )
    assert_error(response, 400, "too_deep")
    pool_a.refresh_from_db()
    assert pool_a.name == "Acme Main Pool"


@pytest.mark.django_db
def test_just_under_the_recursion_limit_is_refused_too(adam, pool_a):
    # 900 levels parse in Python, then crash whatever walks them next.
    body = '{"name": ' + "[" * 900 + "]" * 900 + "}"
    response = post_raw(
        api_client(adam), f"/api/v1/pools/{pool_a.code.hex}/", body, method="patch"
    )
    assert_error(response, 400, "too_deep")


@pytest.mark.django_db
def test_oversized_body_is_a_400():
    body = json.dumps({"email": "a@b.test", "password": "x" * (MAX_JSON_BYTES + 10)})
    assert_error(post_raw(api_client(), "/api/login", body), 400, "too_large")


@pytest.mark.django_db
def test_malformed_and_non_standard_json_are_400():
    for body in ("{not json", '{"email": NaN}', "\xff"):
        assert_error(post_raw(api_client(), "/api/login", body), 400)


def test_depth_check_counts_brackets_outside_strings_only():
    json_depth_check('{"a": "' + "[" * 500 + '"}')  # brackets inside a string
    json_depth_check("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    with pytest.raises(JSONTooDeep):
        json_depth_check("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    # An escaped quote does not end the string.
    json_depth_check('["\\"' + "{" * 100 + '"]')


@pytest.mark.django_db(transaction=True)
async def test_deeply_nested_socket_message_is_an_error(olivia, pool_a):
    comm = socket(pool_path(pool_a), cookie=await session_cookie(olivia))
    assert (await comm.connect(timeout=10))[0]
    await receive_type(comm, "snapshot")
    # Under the 16 KiB cap and under Python's recursion limit: it parses, so only
    # the depth bound keeps it from the handlers.
    nested = "[" * 900 + "]" * 900
    await comm.send_to(
        text_data='{"type": "command", "op": "pump", "value": ' + nested + "}"
    )
    error = await receive_type(comm, "error")
    assert "JSON objects" in error["message"]
    await comm.send_json_to({"type": "ping"})
    await receive_type(comm, "pong")
    await comm.disconnect()
