"""The Snowflake destination (key-pair authentication)."""

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from .base import ConnectionProblem, Writer


def load_private_key(pem: str | None, path: str | None, passphrase: str | None) -> bytes:
    """The key as DER bytes for the connector, loaded in memory, never written to disk."""
    try:
        data = pem.encode() if pem else Path(path).read_bytes()
    except OSError as error:
        raise ConnectionProblem(f"Cannot read the private key file {path}: {error.strerror}.") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError:
        raise ConnectionProblem(
            "The private key is encrypted but no passphrase is set, or a passphrase is set "
            "for a key that is not encrypted."
        ) from None
    except ValueError:
        raise ConnectionProblem(
            "The private key cannot be loaded: it is not a PEM private key, or the passphrase is wrong."
        ) from None
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


class SnowflakeWriter(Writer):
    kind = "snowflake"

    def connect(self):
        import snowflake.connector

        s = self.settings
        key = load_private_key(
            s.get("private_key"), s.get("private_key_path"), s.get("private_key_passphrase")
        )
        try:
            return snowflake.connector.connect(
                account=s["account"],
                user=s["user"],
                role=s.get("role") or None,
                warehouse=s["warehouse"],
                database=s["database"],
                schema=s["schema"],
                private_key=key,
                login_timeout=self.connect_timeout,
                network_timeout=self.connect_timeout,
            )
        except snowflake.connector.errors.Error as error:
            raise ConnectionProblem(f"Snowflake refused the connection: {error.msg}") from None

    def test_connection(self) -> str:
        with self.connect() as conn:
            cursor = conn.cursor()
            account, role, warehouse = cursor.execute(
                "SELECT CURRENT_ACCOUNT(), CURRENT_ROLE(), CURRENT_WAREHOUSE()"
            ).fetchone()
        return f"Connected to Snowflake account {account} as role {role} on warehouse {warehouse}."
