"""GET /api/health answers without a login and without touching the database."""


def test_health_answers_ok_with_no_login_and_no_query(client):
    # No `db` fixture: any database access in the view or a middleware raises.
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_refuses_other_methods(client):
    assert client.post("/api/health").status_code == 405
