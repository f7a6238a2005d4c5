import psycopg
import pytest

from rosetta.pgcluster import Cluster


@pytest.fixture(scope="session")
def replica_cluster():
    """A server with wal_level=replica and password authentication over TCP."""
    cluster = Cluster(settings={"wal_level": "replica"}, host_auth="scram-sha-256").start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE app_user LOGIN PASSWORD 'right-password-123'")
        conn.execute("CREATE DATABASE app OWNER app_user")
    yield cluster
    cluster.stop()
