"""fakesnow (the real Snowflake connector API, run against DuckDB) with the gaps
our writer runs into filled in, each named; and a real RSA key pair for settings.

The gaps, in fakesnow 0.12.1:
1. Every CREATE with a property (TEMPORARY, OR REPLACE ...) records a table
   comment, even an absent one, in fakesnow's own metadata database. DuckDB lets
   one transaction write only one database, so fakesnow's MERGE (emulated with a
   CREATE TEMPORARY TABLE) fails inside an explicit transaction that already
   wrote a table. We skip recording an absent comment.
2. `ALTER TABLE a SWAP WITH b` is not supported: emulated with three renames
   (Snowflake's is atomic; the test's single session cannot tell the difference).
3. CURRENT_ACCOUNT(), CURRENT_ROLE() and CURRENT_WAREHOUSE() do not exist:
   defined as macros returning what the settings name.
Statements fakesnow accepts too leniently are checked separately with sqlglot's
Snowflake dialect (test_writer_snowflake.py).
"""

import json
import re
from contextlib import contextmanager

import fakesnow
import fakesnow.info_schema
import pytest
import snowflake.connector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fakesnow.cursor import FakeSnowflakeCursor

SWAP = re.compile(r'^\s*ALTER TABLE ("(?:[^"]|"")+") SWAP WITH ("(?:[^"]|"")+")\s*$', re.IGNORECASE)
PASSPHRASE = "correct horse battery staple"


def private_key_pem(passphrase: str | None = PASSPHRASE) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def snowflake_settings(**overrides) -> dict:
    settings = {
        "account": "xy12345",
        "user": "ROSETTA",
        "role": "ROSETTA_LOADER",
        "warehouse": "LOADING",
        "database": "ANALYTICS",
        "schema": "RAW",
        "private_key": private_key_pem(),
        "private_key_path": "",
        "private_key_passphrase": PASSPHRASE,
    }
    settings.update(overrides)
    return settings


@contextmanager
def fake_snowflake(settings: dict, warehouse_usable: bool = True):
    """Patch the connector with fakesnow; yields an analyst's connection to the
    destination schema, for reading what the writer wrote."""
    original_comment_sql = fakesnow.info_schema.insert_table_comment_sql
    original_execute = FakeSnowflakeCursor.execute

    def comment_sql(catalog, schema, table, comment):  # gap 1
        return "SELECT 1" if comment is None else original_comment_sql(catalog, schema, table, comment)

    def execute(self, command, *args, **kwargs):  # gap 2
        swap = SWAP.match(command) if isinstance(command, str) else None
        if not swap:
            return original_execute(self, command, *args, **kwargs)
        first, second = swap.groups()
        original_execute(self, f'ALTER TABLE {first} RENAME TO "_fakesnow_swap"')
        original_execute(self, f"ALTER TABLE {second} RENAME TO {first}")
        return original_execute(self, f'ALTER TABLE "_fakesnow_swap" RENAME TO {second}')

    with pytest.MonkeyPatch.context() as patch, fakesnow.patch():
        patch.setattr(fakesnow.info_schema, "insert_table_comment_sql", comment_sql)
        patch.setattr(FakeSnowflakeCursor, "execute", execute)
        conn = snowflake.connector.connect(database=settings["database"], schema=settings["schema"])
        where = f"{settings['database'].upper()}.{settings['schema'].upper()}"
        current = {
            "current_account": settings["account"].upper(),
            "current_role": settings["role"],
            "current_warehouse": settings["warehouse"] if warehouse_usable else None,
        }
        for name, value in current.items():  # gap 3
            literal = "NULL" if value is None else "'" + value.replace("'", "''") + "'"
            conn._duck_conn.execute(f"CREATE OR REPLACE MACRO {where}.{name}() AS {literal}")
        try:
            yield conn
        finally:
            conn.close()


def read_table(conn, table: str, order_by: str, variant_columns=()) -> list[dict]:
    """A Snowflake table's rows as dicts, VARIANT values parsed from their JSON text."""
    cursor = conn.cursor().execute(f'SELECT * FROM "{table}" ORDER BY {order_by}')
    names = [d.name for d in cursor.description]
    rows = []
    for values in cursor.fetchall():
        row = dict(zip(names, values, strict=True))
        for name in variant_columns:
            if row.get(name) is not None:
                row[name] = json.loads(row[name])
        rows.append(row)
    return rows
