"""Test helpers for the API: clients holding a persona's token, the error shape."""

import random

from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from tenants.auth import refresh_token_for


def tokens_for(membership, *, second_factor: bool = False) -> RefreshToken:
    """The tokens /api/login would hand this membership."""
    return refresh_token_for(membership=membership, second_factor=second_factor)


def loopback_address() -> str:
    # A fresh loopback address per client keeps anonymous buckets and login
    # lockouts of one test from spilling into the next.
    return "127.{}.{}.{}".format(*(random.randint(1, 254) for _ in range(3)))


def api_client(membership=None, *, token: str | None = None) -> APIClient:
    client = APIClient(REMOTE_ADDR=loopback_address())
    if membership is not None:
        token = str(tokens_for(membership).access_token)
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The one error shape; returns its body's "error"."""
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    if code is not None:
        assert error["code"] == code, error
    return error
