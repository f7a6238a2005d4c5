"""Test connection for destinations, against a real PostgreSQL and a real DuckDB file."""

import logging
import uuid

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.messages import get_messages
from django.urls import reverse

from .factories import DestinationFactory, PostgresDestinationFactory, SnowflakeDestinationFactory

pytestmark = pytest.mark.django_db


def test_a_postgres_destination_that_works_is_reported(admin_api, make_database, pg_cluster):
    database = make_database("dw")
    destination = PostgresDestinationFactory(
        pg_port=pg_cluster.port, pg_database=database, pg_username="postgres", pg_password=""
    )
    response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
    assert response.data == {
        "ok": True,
        "message": "Connected to PostgreSQL 15" + response.data["message"].split("15", 1)[1],
    }
    assert "schema analytics (Rosetta will create it)" in response.data["message"]


def test_a_postgres_user_who_cannot_write_is_told_so(admin_api, make_database, pg_cluster):
    database = make_database("dw")
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.dsn(database), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("CREATE SCHEMA analytics")
        conn.execute(f"REVOKE CREATE ON DATABASE {database} FROM PUBLIC")
    try:
        destination = PostgresDestinationFactory(
            pg_port=pg_cluster.port, pg_database=database, pg_username=role, pg_password=""
        )
        response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
        assert response.data["ok"] is False
        assert "may not create tables in schema analytics" in response.data["message"]
    finally:
        with psycopg.connect(pg_cluster.dsn(database), autocommit=True) as conn:
            conn.execute("DROP SCHEMA analytics")
            conn.execute(f"DROP ROLE {role}")


def test_an_unreachable_postgres_destination_is_reported_without_its_password(admin_api, caplog):
    from rosetta.pgcluster import free_port

    destination = PostgresDestinationFactory(pg_port=free_port())
    with caplog.at_level(logging.DEBUG):
        response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
    assert response.data["ok"] is False
    assert "refused the connection" in response.data["message"]
    assert "destination-secret-password" not in response.content.decode() + caplog.text


def test_a_duckdb_destination_is_opened_and_written(admin_api, tmp_path):
    path = tmp_path / "sub" / "warehouse.duckdb"
    destination = DestinationFactory(duckdb_path=str(path))
    response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
    assert response.data["ok"] is True, response.data
    assert path.exists()


def test_a_duckdb_path_that_cannot_be_written_is_reported(admin_api, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    destination = DestinationFactory(duckdb_path=str(blocker / "warehouse.duckdb"))
    response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
    assert response.data["ok"] is False
    assert "Cannot open DuckDB file" in response.data["message"]


def test_a_snowflake_key_that_is_not_a_key_is_named_as_such(admin_api, caplog):
    # Stored before keys were checked on save (the factory skips the model's clean()).
    destination = SnowflakeDestinationFactory(
        snowflake_private_key="-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n",
        snowflake_private_key_passphrase="",
    )
    with caplog.at_level(logging.DEBUG):
        response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
    assert response.data["ok"] is False
    assert "private key" in response.data["message"]
    assert "not-a-real-key" not in response.content.decode() + caplog.text


def test_a_wrong_snowflake_passphrase_is_named_as_such(admin_api):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right-passphrase"),
    ).decode()
    destination = SnowflakeDestinationFactory(
        snowflake_private_key=pem, snowflake_private_key_passphrase="wrong-passphrase"
    )
    response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
    assert response.data["ok"] is False
    assert "passphrase" in response.data["message"]
    assert "wrong-passphrase" not in response.content.decode()


def test_the_admin_action_reports_in_plain_words(admin_browser, tmp_path):
    destination = DestinationFactory(name="duck", duckdb_path=str(tmp_path / "w.duckdb"))
    response = admin_browser.post(
        reverse("admin:destinations_destination_changelist"),
        {"action": "test_connection", "_selected_action": [destination.pk]},
        follow=True,
    )
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message.startswith("duck: Opened DuckDB")
