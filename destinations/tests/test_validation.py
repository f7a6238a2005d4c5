"""Settings are checked when a destination is saved, through the API and the admin alike."""

import pytest
from django.urls import reverse

from destinations.models import Destination

from .factories import SNOWFLAKE_KEY_PASSPHRASE, SNOWFLAKE_KEY_PEM
from .fakesnow_support import private_key_pem

pytestmark = pytest.mark.django_db

SNOWFLAKE = {
    "name": "snow",
    "kind": "snowflake",
    "snowflake_account": "xy12345",
    "snowflake_user": "ROSETTA",
    "snowflake_warehouse": "LOADING",
    "snowflake_database": "ANALYTICS",
    "snowflake_schema": "RAW",
}
POSTGRES = {
    "name": "pg",
    "kind": "postgres",
    "pg_host": "warehouse.example.com",
    "pg_port": 5432,
    "pg_database": "dw",
    "pg_username": "loader",
    "pg_schema": "raw",
}


@pytest.mark.parametrize(
    "path, problem",
    [
        ("warehouse.duckdb", "absolute path"),
        ("data/warehouse.duckdb", "absolute path"),
        ("../warehouse.duckdb", "absolute path"),
        ("/var/lib/rosetta/../../etc/warehouse.duckdb", '".."'),
    ],
)
def test_a_duckdb_path_must_be_absolute_without_dot_dot(admin_api, path, problem):
    response = admin_api.post(
        "/api/destinations/", {"name": "d", "kind": "duckdb", "duckdb_path": path}, format="json"
    )
    assert response.status_code == 400
    assert problem in response.json()["duckdb_path"][0]
    assert not Destination.objects.exists()


def test_a_duckdb_path_must_lie_under_the_configured_data_directory(admin_api, settings):
    settings.ROSETTA_DATA_DIR = "/var/lib/rosetta"
    outside = admin_api.post(
        "/api/destinations/", {"name": "d", "kind": "duckdb", "duckdb_path": "/tmp/w.duckdb"}, format="json"
    )
    assert outside.status_code == 400
    assert "/var/lib/rosetta" in outside.json()["duckdb_path"][0]
    inside = admin_api.post(
        "/api/destinations/",
        {"name": "d", "kind": "duckdb", "duckdb_path": "/var/lib/rosetta/w.duckdb"},
        format="json",
    )
    assert inside.status_code == 201, inside.json()


@pytest.mark.parametrize("schema", ["public; drop table x", "raw data", '"raw"', "1raw"])
def test_a_postgres_schema_must_be_an_identifier(admin_api, schema):
    response = admin_api.post("/api/destinations/", {**POSTGRES, "pg_schema": schema}, format="json")
    assert response.status_code == 400
    assert "identifier" in response.json()["pg_schema"][0]


def test_a_postgres_schema_with_capitals_and_underscores_is_accepted(admin_api):
    response = admin_api.post("/api/destinations/", {**POSTGRES, "pg_schema": "Raw_Data2"}, format="json")
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    "key, passphrase, problem",
    [
        ("not a key at all", "", "not a PEM private key"),
        (SNOWFLAKE_KEY_PEM, "wrong-passphrase", "Wrong passphrase"),
        (SNOWFLAKE_KEY_PEM, "", "set its passphrase"),
    ],
    ids=["not-a-pem", "wrong-passphrase", "missing-passphrase"],
)
def test_a_snowflake_key_is_read_on_save_and_the_problem_named(admin_api, key, passphrase, problem):
    body = {**SNOWFLAKE, "snowflake_private_key": key, "snowflake_private_key_passphrase": passphrase}
    response = admin_api.post("/api/destinations/", body, format="json")
    assert response.status_code == 400
    assert problem in response.json()["snowflake_private_key"][0]
    assert not Destination.objects.exists()


def test_a_snowflake_key_with_its_passphrase_is_accepted(admin_api):
    body = {
        **SNOWFLAKE,
        "snowflake_private_key": SNOWFLAKE_KEY_PEM,
        "snowflake_private_key_passphrase": SNOWFLAKE_KEY_PASSPHRASE,
    }
    response = admin_api.post("/api/destinations/", body, format="json")
    assert response.status_code == 201, response.json()


def test_changing_only_the_passphrase_is_checked_against_the_stored_key(admin_api):
    body = {
        **SNOWFLAKE,
        "snowflake_private_key": private_key_pem("one"),
        "snowflake_private_key_passphrase": "one",
    }
    created = admin_api.post("/api/destinations/", body, format="json").json()
    response = admin_api.patch(
        f"/api/destinations/{created['id']}/", {"snowflake_private_key_passphrase": "two"}, format="json"
    )
    assert response.status_code == 400
    assert "Wrong passphrase" in response.json()["snowflake_private_key"][0]
    assert Destination.objects.get().snowflake_private_key_passphrase == "one"


def test_the_admin_names_the_same_problems(admin_browser):
    url = reverse("admin:destinations_destination_add")
    response = admin_browser.post(
        url,
        {
            "name": "d",
            "kind": "duckdb",
            "duckdb_path": "../w.duckdb",
            "pg_port": "5432",
            "pg_schema": "public",
        },
    )
    assert response.status_code == 200
    assert "Give an absolute path" in response.content.decode()
    assert not Destination.objects.exists()
