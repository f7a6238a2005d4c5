"""Repeated failed logins lock an address out of the admin login and the token endpoint."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    settings.ROSETTA_LOGIN_FAILURE_LIMIT = 3
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("operator", "op@example.com", "right-password")


def admin_login(client, password, address="10.0.0.1"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "operator", "password": password},
        REMOTE_ADDR=address,
    )


def test_the_admin_login_refuses_an_address_after_repeated_failures_even_with_the_right_password(
    client, operator
):
    for _ in range(3):
        assert admin_login(client, "guess").status_code == 200  # the form again, with an error
    refused = admin_login(client, "right-password")
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_another_address_can_still_log_in(client, operator):
    for _ in range(3):
        admin_login(client, "guess")
    assert admin_login(client, "right-password", address="10.0.0.2").status_code == 302


def test_the_counter_is_shared_through_the_cache_not_kept_per_process(client, operator, settings):
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    for _ in range(3):
        admin_login(client, "guess")
    assert cache.get("login-failures:10.0.0.1") == 3


def test_the_token_endpoint_hands_out_a_token_and_then_throttles_failures(operator):
    api = APIClient(REMOTE_ADDR="10.0.0.3")
    ok = api.post("/api/auth/token/", {"username": "operator", "password": "right-password"}, format="json")
    assert ok.status_code == 200 and ok.json()["token"]
    for _ in range(3):
        bad = api.post("/api/auth/token/", {"username": "operator", "password": "guess"}, format="json")
        assert bad.status_code == 400
    refused = api.post(
        "/api/auth/token/", {"username": "operator", "password": "right-password"}, format="json"
    )
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.json()["detail"]
    assert "token" not in refused.json()


def test_failures_at_the_token_endpoint_also_lock_the_admin_login(client, operator):
    api = APIClient(REMOTE_ADDR="10.0.0.4")
    for _ in range(3):
        api.post("/api/auth/token/", {"username": "operator", "password": "guess"}, format="json")
    assert admin_login(client, "right-password", address="10.0.0.4").status_code == 429
