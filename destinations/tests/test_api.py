import pytest
from django.db import connection

from destinations.models import Destination

from .factories import DestinationFactory, PostgresDestinationFactory, SnowflakeDestinationFactory
from .fakesnow_support import private_key_pem

pytestmark = pytest.mark.django_db

SNOWFLAKE_PEM = private_key_pem("pass-phrase-secret")
KEY_LINE = SNOWFLAKE_PEM.splitlines()[5]
SNOWFLAKE = {
    "name": "snow",
    "kind": "snowflake",
    "snowflake_account": "xy12345",
    "snowflake_user": "ROSETTA",
    "snowflake_role": "ROSETTA_LOADER",
    "snowflake_warehouse": "LOADING",
    "snowflake_database": "ANALYTICS",
    "snowflake_schema": "RAW",
    "snowflake_private_key": SNOWFLAKE_PEM,
    "snowflake_private_key_passphrase": "pass-phrase-secret",
}
POSTGRES = {
    "name": "pg",
    "kind": "postgres",
    "pg_host": "warehouse.example.com",
    "pg_port": 5432,
    "pg_database": "dw",
    "pg_username": "loader",
    "pg_password": "pg-secret-password",
    "pg_schema": "raw",
}
DUCKDB = {"name": "duck", "kind": "duckdb", "duckdb_path": "/var/lib/rosetta/warehouse.duckdb"}


@pytest.mark.parametrize("payload", [SNOWFLAKE, POSTGRES, DUCKDB], ids=["snowflake", "postgres", "duckdb"])
def test_each_kind_can_be_created_and_read_back_without_its_secrets(admin_api, payload):
    response = admin_api.post("/api/destinations/", payload, format="json")
    assert response.status_code == 201, response.data
    detail = admin_api.get(f"/api/destinations/{response.data['id']}/").content.decode()
    for secret in (KEY_LINE, "pass-phrase-secret", "pg-secret-password"):
        assert secret not in response.content.decode()
        assert secret not in detail
    destination = Destination.objects.get(pk=response.data["id"])
    assert destination.kind == payload["kind"]


def test_secrets_are_ciphertext_in_the_database(admin_api):
    response = admin_api.post("/api/destinations/", SNOWFLAKE, format="json")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT snowflake_private_key, snowflake_private_key_passphrase FROM destinations_destination "
            "WHERE id = %s",
            [response.data["id"]],
        )
        key, passphrase = cursor.fetchone()
    assert KEY_LINE not in key and "pass-phrase-secret" not in passphrase
    assert (
        Destination.objects.get(pk=response.data["id"]).snowflake_private_key
        == SNOWFLAKE["snowflake_private_key"]
    )
    assert response.data["secrets_set"] == ["snowflake_private_key", "snowflake_private_key_passphrase"]


@pytest.mark.parametrize(
    "payload, missing",
    [
        (SNOWFLAKE, "snowflake_account"),
        (SNOWFLAKE, "snowflake_user"),
        (SNOWFLAKE, "snowflake_warehouse"),
        (SNOWFLAKE, "snowflake_database"),
        (SNOWFLAKE, "snowflake_schema"),
        (SNOWFLAKE, "snowflake_private_key"),
        (POSTGRES, "pg_host"),
        (POSTGRES, "pg_database"),
        (POSTGRES, "pg_username"),
        (POSTGRES, "pg_schema"),
        (DUCKDB, "duckdb_path"),
    ],
)
def test_a_payload_missing_a_field_its_kind_needs_gets_an_error_naming_it(admin_api, payload, missing):
    body = {**payload, missing: ""}
    response = admin_api.post("/api/destinations/", body, format="json")
    assert response.status_code == 400
    assert missing in response.data, response.data
    assert not Destination.objects.exists()


def test_a_snowflake_key_path_replaces_the_pem(admin_api):
    body = {key: value for key, value in SNOWFLAKE.items() if key != "snowflake_private_key"}
    body["snowflake_private_key_path"] = "/etc/rosetta/snowflake.p8"
    assert admin_api.post("/api/destinations/", body, format="json").status_code == 201
    both = {**SNOWFLAKE, "name": "both", "snowflake_private_key_path": "/etc/rosetta/snowflake.p8"}
    response = admin_api.post("/api/destinations/", both, format="json")
    assert response.status_code == 400 and "snowflake_private_key_path" in response.data


def test_an_unknown_kind_is_refused(admin_api):
    response = admin_api.post("/api/destinations/", {**DUCKDB, "kind": "bigquery"}, format="json")
    assert response.status_code == 400 and "kind" in response.data


def test_updating_other_fields_keeps_the_stored_secrets(admin_api):
    destination = PostgresDestinationFactory()
    response = admin_api.patch(f"/api/destinations/{destination.pk}/", {"pg_schema": "other"}, format="json")
    assert response.status_code == 200, response.data
    destination.refresh_from_db()
    assert destination.pg_schema == "other"
    assert destination.pg_password == "destination-secret-password"


def test_destinations_filter_by_kind_and_delete(admin_api):
    DestinationFactory(name="a")
    SnowflakeDestinationFactory(name="b")
    listed = admin_api.get("/api/destinations/?kind=snowflake")
    assert [row["name"] for row in listed.data["results"]] == ["b"]
    duck = Destination.objects.get(name="a")
    assert admin_api.delete(f"/api/destinations/{duck.pk}/").status_code == 204
    assert list(Destination.objects.values_list("name", flat=True)) == ["b"]
