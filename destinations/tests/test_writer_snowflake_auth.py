"""Snowflake key-pair authentication with real generated RSA keys, the connection
test (through fakesnow), and the connector's errors in plain words."""

import logging

import pytest
import snowflake.connector.errors as sf_errors
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.writers.base import ConnectionProblem
from engine.writers.snowflake import SnowflakeWriter, describe_snowflake_error, load_private_key

from .factories import SnowflakeDestinationFactory
from .fakesnow_support import PASSPHRASE, fake_snowflake, private_key_pem, snowflake_settings


def public_numbers_of_pem(pem: str, passphrase: str | None):
    key = serialization.load_pem_private_key(pem.encode(), passphrase.encode() if passphrase else None)
    return key.public_key().public_numbers()


@pytest.mark.parametrize("passphrase", [PASSPHRASE, None], ids=["encrypted", "unencrypted"])
def test_a_real_key_is_loaded_in_memory_for_the_connector(passphrase):
    pem = private_key_pem(passphrase)
    der = load_private_key(pem, None, passphrase)
    loaded = serialization.load_der_private_key(der, password=None)
    assert loaded.public_key().public_numbers() == public_numbers_of_pem(pem, passphrase)


def test_a_key_file_on_the_workers_is_read(tmp_path):
    path = tmp_path / "rsa_key.p8"
    pem = private_key_pem(PASSPHRASE)
    path.write_text(pem)
    der = load_private_key(None, str(path), PASSPHRASE)
    assert serialization.load_der_private_key(
        der, None
    ).public_key().public_numbers() == public_numbers_of_pem(pem, PASSPHRASE)


@pytest.mark.parametrize(
    ("pem", "passphrase", "message"),
    [
        (private_key_pem(PASSPHRASE), "not the passphrase", "Wrong passphrase"),
        (private_key_pem(PASSPHRASE), "", "The private key is encrypted: set its passphrase."),
        (private_key_pem(None), PASSPHRASE, "not encrypted, but a passphrase is set"),
        ("-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n", "", "Bad key"),
        ("ssh-rsa AAAAB3NzaC1yc2E", "", "Bad key"),
    ],
    ids=["wrong passphrase", "missing passphrase", "needless passphrase", "garbage", "public key"],
)
def test_a_key_that_cannot_be_used_is_named_as_such(pem, passphrase, message):
    with pytest.raises(ConnectionProblem, match=message) as raised:
        load_private_key(pem, None, passphrase)
    if passphrase:
        assert passphrase not in str(raised.value)


def test_a_key_that_is_not_rsa_is_refused():
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    with pytest.raises(ConnectionProblem, match="Bad key: .* needs an RSA private key"):
        load_private_key(pem, None, None)


SETTINGS = {"account": "xy12345", "user": "ROSETTA", "role": "ROSETTA_LOADER", "warehouse": "LOADING"}


@pytest.mark.parametrize(
    ("error", "starts_with", "also"),
    [
        (
            sf_errors.DatabaseError(msg="JWT token is invalid. [0f81]", errno=390144, sqlstate="08004"),
            "Bad key",
            "RSA_PUBLIC_KEY",
        ),
        (
            sf_errors.ProgrammingError(
                msg="Warehouse 'LOADING' cannot be resumed because resource monitor 'RM' has exceeded its quota.",
                errno=None,
            ),
            "Warehouse suspended",
            "ALTER WAREHOUSE LOADING RESUME",
        ),
        (
            sf_errors.ProgrammingError(
                msg="Warehouse 'LOADING' is suspended. Use 'alter warehouse LOADING resume;'", errno=608
            ),
            "Warehouse suspended",
            "AUTO_RESUME",
        ),
        (
            sf_errors.ProgrammingError(
                msg="SQL access control error:\nInsufficient privileges to operate on schema 'RAW'",
                errno=3001,
                sqlstate="42501",
            ),
            "Missing privilege",
            "schema 'RAW'",
        ),
        (
            sf_errors.DatabaseError(
                msg="Role 'ROSETTA_LOADER' specified in the connect string is not granted to this user.",
                errno=390189,
            ),
            "Missing privilege",
            "GRANT ROLE ROSETTA_LOADER TO USER ROSETTA",
        ),
        (
            sf_errors.ProgrammingError(
                msg="No active warehouse selected in the current session.", errno=606, sqlstate="57P03"
            ),
            "Warehouse LOADING cannot be used",
            "GRANT USAGE ON WAREHOUSE LOADING TO ROLE ROSETTA_LOADER",
        ),
        (
            sf_errors.DatabaseError(msg="Incorrect username or password was specified.", errno=390100),
            "Snowflake rejected the login of user ROSETTA",
            "RSA",
        ),
        (
            sf_errors.OperationalError(msg="Failed to connect to DB: xy12345.example:443", errno=250001),
            "Cannot reach Snowflake account xy12345",
            "network",
        ),
    ],
    ids=[
        "bad key",
        "resource monitor",
        "suspended",
        "privilege",
        "role",
        "no warehouse",
        "no user",
        "unreachable",
    ],
)
def test_connector_errors_are_said_in_plain_words(error, starts_with, also):
    message = describe_snowflake_error(error, SETTINGS)
    assert message.startswith(starts_with), message
    assert also in message


# -- Test connection, through fakesnow -----------------------------------------------


def test_the_connection_test_reports_account_role_warehouse_and_a_writable_schema():
    settings = snowflake_settings()
    with fake_snowflake(settings):
        message = SnowflakeWriter(settings).test_connection()
    assert message == (
        "Connected to Snowflake account XY12345 as role ROSETTA_LOADER on warehouse LOADING; "
        "Rosetta can create and write tables in schema ANALYTICS.RAW."
    )


def test_the_connection_test_says_when_the_warehouse_cannot_be_used():
    settings = snowflake_settings()
    with fake_snowflake(settings, warehouse_usable=False), pytest.raises(ConnectionProblem) as raised:
        SnowflakeWriter(settings).test_connection()
    assert str(raised.value) == (
        "Connected to Snowflake account XY12345 as role ROSETTA_LOADER, but warehouse LOADING cannot be "
        "used: it does not exist or role ROSETTA_LOADER has no USAGE on it "
        "(GRANT USAGE ON WAREHOUSE LOADING TO ROLE ROSETTA_LOADER)."
    )


@pytest.mark.django_db
def test_the_api_test_connection_works_for_a_snowflake_destination_without_showing_the_key(admin_api, caplog):
    pem = private_key_pem(PASSPHRASE)
    destination = SnowflakeDestinationFactory(
        snowflake_private_key=pem, snowflake_private_key_passphrase=PASSPHRASE
    )
    with fake_snowflake(destination.writer_settings()), caplog.at_level(logging.DEBUG):
        response = admin_api.post(f"/api/destinations/{destination.pk}/test-connection/")
    assert response.data["ok"] is True, response.data
    assert "account XY12345 as role ROSETTA_LOADER on warehouse LOADING" in response.data["message"]
    body = response.content.decode() + caplog.text
    assert pem.splitlines()[1] not in body and PASSPHRASE not in body
