"""Shared test fixtures: a real PostgreSQL cluster (wal_level=logical), users, API clients.

The whole suite runs against one throwaway cluster started here: it holds the
metadata database (Django's test database) and, as separate databases, the
sources and destinations that the tests replicate between.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from rosetta.pgcluster import Cluster

TEST_ENCRYPTION_KEY = Fernet.generate_key().decode()
TEST_BROKER_URL = os.environ.get("ROSETTA_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")


def pytest_configure(config):
    settings.ROSETTA_ENCRYPTION_KEYS = [TEST_ENCRYPTION_KEY]
    settings.CELERY_BROKER_URL = TEST_BROKER_URL
    # Celery prefers the environment's CELERY_BROKER_URL to the settings, and the settings
    # load .env into the environment: with the demo's .env present, tasks would go to the
    # demo's worker. The tests' broker wins.
    os.environ["CELERY_BROKER_URL"] = TEST_BROKER_URL
    settings.CACHES["default"]["LOCATION"] = TEST_BROKER_URL
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(pg_cluster):
    db = settings.DATABASES["default"]
    db.update(HOST="127.0.0.1", PORT=str(pg_cluster.port), NAME="rosetta", USER="postgres", PASSWORD="")
    db["CONN_MAX_AGE"] = 0


@pytest.fixture
def make_database(pg_cluster):
    """Create fresh databases on the test cluster; drop them (and their slots) afterwards."""
    created = []

    def make(prefix: str = "db") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return name

    yield make
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for name in created:
            # A slot still streaming (a worker's run that outlived its test: DROP DATABASE
            # refuses a database with an active slot, even WITH (FORCE)) is ended first.
            deadline = time.monotonic() + 10
            while True:
                conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE database = %s AND active",
                    [name],
                )
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE database = %s AND NOT active",
                    [name],
                )
                (left,) = conn.execute(
                    "SELECT count(*) FROM pg_replication_slots WHERE database = %s", [name]
                ).fetchone()
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def source_database(make_database, pg_cluster):
    """A fresh source database; yields psycopg connect kwargs for it."""
    name = make_database("src")
    return {"host": "127.0.0.1", "port": pg_cluster.port, "dbname": name, "user": "postgres"}


@pytest.fixture
def admin_user(db, django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-pass")


@pytest.fixture
def admin_api(admin_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def admin_browser(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def start_celery_worker(transactional_db, pg_cluster):
    """Start real Celery worker processes on the local Redis, using the test database;
    extra environment variables and the pool are per worker. All are ended afterwards."""
    import redis

    redis.Redis.from_url(TEST_BROKER_URL).flushdb()
    db = settings.DATABASES["default"]
    started = []

    def start(pool: str = "solo", **extra_env):
        env = {
            **os.environ,
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/{db['NAME']}",
            "CELERY_BROKER_URL": TEST_BROKER_URL,
            "ROSETTA_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "CONN_MAX_AGE": "0",
            **extra_env,
        }
        log_path = Path(f"/tmp/rosetta-test-worker-{uuid.uuid4().hex[:8]}.log")
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "rosetta",
                    "worker",
                    f"--pool={pool}",
                    "--concurrency=1",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=Path(__file__).parent,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        deadline = time.monotonic() + 30
        while "ready." not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"Celery worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        process.log_path = log_path
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def celery_worker(start_celery_worker):
    """A real Celery worker process on the local Redis, using the test database."""
    return start_celery_worker()
