import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from rest_framework.test import APIClient

from sources.models import Source

from .factories import SourceFactory

pytestmark = pytest.mark.django_db

PAYLOAD = {
    "name": "production-postgres",
    "pg_host": "db.example.com",
    "pg_port": 5432,
    "pg_database": "app",
    "pg_username": "replicator",
    "pg_password": "s3cret-Pa55",
    "publication_name": "rosetta_pub",
    "slot_name": "rosetta_slot",
}


def test_creating_a_source_with_the_documented_payload_works(admin_api):
    response = admin_api.post("/api/sources/", PAYLOAD, format="json")
    assert response.status_code == 201, response.data
    source = Source.objects.get(name="production-postgres")
    assert source.pg_password == "s3cret-Pa55"
    assert source.wal_warn_bytes == 1024**3 and source.wal_critical_bytes == 5 * 1024**3
    assert response.data["pg_password_set"] is True


def test_the_password_is_never_returned_and_is_ciphertext_in_the_database(admin_api):
    created = admin_api.post("/api/sources/", PAYLOAD, format="json")
    listed = admin_api.get("/api/sources/")
    detail = admin_api.get(f"/api/sources/{created.data['id']}/")
    for response in (created, listed, detail):
        assert "s3cret-Pa55" not in response.content.decode()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_password FROM sources_source WHERE id = %s", [created.data["id"]])
        stored = cursor.fetchone()[0]
    assert stored and "s3cret-Pa55" not in stored and stored.startswith("gAAAA")


def test_unknown_keys_are_rejected_by_name(admin_api):
    response = admin_api.post("/api/sources/", {**PAYLOAD, "pasword": "typo"}, format="json")
    assert response.status_code == 400
    assert "pasword" in response.data
    assert not Source.objects.exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("slot_name", "Rosetta-Slot"),
        ("publication_name", "pub; drop table x"),
        ("pg_port", 70000),
        ("pg_port", 0),
        ("name", "has spaces"),
    ],
)
def test_invalid_fields_get_an_error_naming_the_field(admin_api, field, value):
    response = admin_api.post("/api/sources/", {**PAYLOAD, field: value}, format="json")
    assert response.status_code == 400
    assert field in response.data


def test_warning_threshold_must_be_below_critical(admin_api):
    response = admin_api.post(
        "/api/sources/", {**PAYLOAD, "wal_warn_bytes": 10, "wal_critical_bytes": 5}, format="json"
    )
    assert response.status_code == 400
    assert "wal_warn_bytes" in response.data


def test_updating_without_a_password_keeps_the_stored_one(admin_api):
    source = SourceFactory(pg_password="keep-me")
    response = admin_api.patch(f"/api/sources/{source.pk}/", {"pg_host": "db2.example.com"}, format="json")
    assert response.status_code == 200
    source.refresh_from_db()
    assert source.pg_host == "db2.example.com"
    assert source.pg_password == "keep-me"


def test_a_source_can_be_listed_filtered_updated_and_deleted(admin_api):
    SourceFactory(name="alpha")
    SourceFactory(name="beta")
    listed = admin_api.get("/api/sources/?name=beta")
    assert [row["name"] for row in listed.data["results"]] == ["beta"]
    ordered = admin_api.get("/api/sources/?ordering=-name")
    assert [row["name"] for row in ordered.data["results"]] == ["beta", "alpha"]
    beta = Source.objects.get(name="beta")
    assert admin_api.delete(f"/api/sources/{beta.pk}/").status_code == 204
    assert list(Source.objects.values_list("name", flat=True)) == ["alpha"]


def test_unauthenticated_requests_are_refused():
    client = APIClient()
    assert client.get("/api/sources/").status_code in (401, 403)
    assert client.post("/api/sources/", PAYLOAD, format="json").status_code in (401, 403)
    assert not Source.objects.exists()


def test_writes_need_the_model_permissions(django_user_model):
    user = django_user_model.objects.create_user("viewer", password="x")
    user.user_permissions.add(Permission.objects.get(codename="view_source"))
    client = APIClient()
    client.force_authenticate(user)
    assert client.get("/api/sources/").status_code == 200
    assert client.post("/api/sources/", PAYLOAD, format="json").status_code == 403
    source = SourceFactory()
    assert client.delete(f"/api/sources/{source.pk}/").status_code == 403
    assert client.post(f"/api/sources/{source.pk}/test-connection/").status_code == 403
    assert Source.objects.filter(pk=source.pk).exists()


def test_reads_need_the_view_permission(django_user_model):
    user = django_user_model.objects.create_user("nobody", password="x")
    client = APIClient()
    client.force_authenticate(user)
    assert client.get("/api/sources/").status_code == 403


def test_token_authentication_works(django_user_model):
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_superuser("robot", "robot@example.com", "x")
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.post("/api/sources/", PAYLOAD, format="json").status_code == 201
    client.credentials(HTTP_AUTHORIZATION="Token not-a-valid-token")
    assert client.get("/api/sources/").status_code == 401
