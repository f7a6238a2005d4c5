import factory

from destinations.models import Destination
from destinations.tests.fakesnow_support import private_key_pem

# One real encrypted key for every factory-made Snowflake destination: keys are parsed on save.
SNOWFLAKE_KEY_PASSPHRASE = "key-passphrase-secret"
SNOWFLAKE_KEY_PEM = private_key_pem(SNOWFLAKE_KEY_PASSPHRASE)
# A line from the middle of the PEM, to look for where the key must never appear.
SNOWFLAKE_KEY_LINE = SNOWFLAKE_KEY_PEM.splitlines()[5]


class DestinationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Destination

    name = factory.Sequence(lambda n: f"warehouse-{n}")
    kind = Destination.Kind.DUCKDB
    duckdb_path = factory.Sequence(lambda n: f"/tmp/rosetta-test-{n}.duckdb")


class PostgresDestinationFactory(DestinationFactory):
    kind = Destination.Kind.POSTGRES
    duckdb_path = ""
    pg_host = "127.0.0.1"
    pg_port = 5432
    pg_database = "warehouse"
    pg_username = "loader"
    pg_password = "destination-secret-password"
    pg_schema = "analytics"


class SnowflakeDestinationFactory(DestinationFactory):
    kind = Destination.Kind.SNOWFLAKE
    duckdb_path = ""
    snowflake_account = "xy12345"
    snowflake_user = "ROSETTA"
    snowflake_role = "ROSETTA_LOADER"
    snowflake_warehouse = "LOADING"
    snowflake_database = "ANALYTICS"
    snowflake_schema = "RAW"
    snowflake_private_key = SNOWFLAKE_KEY_PEM
    snowflake_private_key_passphrase = SNOWFLAKE_KEY_PASSPHRASE
