"""Test connection and preflight checks against real PostgreSQL servers."""

import logging
import uuid

import psycopg
import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils.html import format_html

from pipelines.tests.factories import PipelineTableFactory

from .factories import SourceFactory

pytestmark = pytest.mark.django_db


def checks_by_name(response):
    return {check["name"]: check for check in response.data["checks"]}


@pytest.fixture
def logical_source(source_database):
    with psycopg.connect(**source_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, total numeric)")
        conn.execute("CREATE TABLE audit_log (at timestamptz, line text)")
        conn.execute("CREATE TABLE events (id bigint NOT NULL, payload jsonb)")
        conn.execute("CREATE UNIQUE INDEX events_id ON events (id)")
        conn.execute("ALTER TABLE events REPLICA IDENTITY USING INDEX events_id")
        conn.execute("CREATE TABLE bag (id bigint, payload jsonb)")
        conn.execute("ALTER TABLE bag REPLICA IDENTITY FULL")
    return SourceFactory(
        pg_host="127.0.0.1",
        pg_port=source_database["port"],
        pg_database=source_database["dbname"],
        pg_username="postgres",
        pg_password="",
        sslmode="disable",
    )


def test_a_ready_source_passes_every_check(admin_api, logical_source):
    pipeline_table = PipelineTableFactory(pipeline__source=logical_source, table_name="orders")
    PipelineTableFactory(pipeline=pipeline_table.pipeline, table_name="events")
    response = admin_api.post(f"/api/sources/{logical_source.pk}/test-connection/")
    assert response.status_code == 200
    checks = checks_by_name(response)
    assert response.data["ok"] is True, checks
    assert "PostgreSQL 15" in checks["connection"]["message"]
    assert checks["wal_level"]["ok"] and checks["replication_privilege"]["ok"]
    assert "can create it" in checks["publication"]["message"]
    assert "primary key" in checks["table public.orders"]["message"]
    assert "REPLICA IDENTITY USING INDEX events_id" in checks["table public.events"]["message"]


def test_a_table_without_primary_key_or_missing_is_reported(admin_api, logical_source):
    pipeline_table = PipelineTableFactory(pipeline__source=logical_source, table_name="audit_log")
    PipelineTableFactory(pipeline=pipeline_table.pipeline, table_name="missing_table")
    PipelineTableFactory(pipeline=pipeline_table.pipeline, table_name="bag")
    response = admin_api.post(f"/api/sources/{logical_source.pk}/test-connection/")
    checks = checks_by_name(response)
    assert response.data["ok"] is False
    assert "no primary key" in checks["table public.audit_log"]["message"]
    assert "ADD PRIMARY KEY" in checks["table public.audit_log"]["message"]
    bag = checks["table public.bag"]
    assert not bag["ok"] and "REPLICA IDENTITY FULL but no primary key" in bag["message"]
    assert "does not exist" in checks["table public.missing_table"]["message"]


def test_a_user_without_replication_is_reported(admin_api, logical_source, pg_cluster):
    role = f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOREPLICATION")
    try:
        logical_source.pg_username = role
        logical_source.save()
        response = admin_api.post(f"/api/sources/{logical_source.pk}/test-connection/")
        checks = checks_by_name(response)
        assert response.data["ok"] is False
        assert checks["connection"]["ok"]
        assert not checks["replication_privilege"]["ok"]
        assert "ALTER ROLE" in checks["replication_privilege"]["message"]
        assert not checks["publication"]["ok"]
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_a_server_without_logical_wal_level_is_reported(admin_api, replica_cluster):
    source = SourceFactory(
        pg_port=replica_cluster.port,
        pg_database="app",
        pg_username="app_user",
        pg_password="right-password-123",
        sslmode="disable",
    )
    response = admin_api.post(f"/api/sources/{source.pk}/test-connection/")
    checks = checks_by_name(response)
    assert checks["connection"]["ok"]
    assert not checks["wal_level"]["ok"]
    assert (
        "'replica'" in checks["wal_level"]["message"]
        and "wal_level = logical" in checks["wal_level"]["message"]
    )


def test_a_wrong_password_is_named_and_never_echoed(admin_api, replica_cluster, caplog):
    source = SourceFactory(
        pg_port=replica_cluster.port,
        pg_database="app",
        pg_username="app_user",
        pg_password="wrong-password-xyz",
        sslmode="disable",
    )
    with caplog.at_level(logging.DEBUG):
        response = admin_api.post(f"/api/sources/{source.pk}/test-connection/")
    assert response.data["ok"] is False
    assert response.data["checks"] == [
        {
            "name": "connection",
            "ok": False,
            "message": "Authentication failed: check the user name and password.",
            "fix": "",
        }
    ]
    assert "wrong-password-xyz" not in response.content.decode()
    assert "wrong-password-xyz" not in caplog.text


def test_a_refused_connection_is_reported_in_plain_words(admin_api):
    from rosetta.pgcluster import free_port

    source = SourceFactory(pg_port=free_port(), sslmode="disable")
    response = admin_api.post(f"/api/sources/{source.pk}/test-connection/")
    assert response.data["ok"] is False
    assert "refused the connection" in response.data["checks"][0]["message"]


def test_the_admin_action_reports_the_checks(admin_browser, logical_source):
    PipelineTableFactory(pipeline__source=logical_source, table_name="audit_log")
    response = admin_browser.post(
        reverse("admin:sources_source_changelist"),
        {"action": "test_connection", "_selected_action": [logical_source.pk]},
        follow=True,
    )
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert len(messages) == 1
    assert messages[0].startswith(
        f"{logical_source.name}: 1 check(s) failed:<br>Table public.audit_log has no primary key"
    )


def test_check_lists_each_failed_check_with_the_sql_that_fixes_it(admin_browser, logical_source, pg_cluster):
    role = f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOREPLICATION")
        conn.execute(f'REVOKE CREATE ON DATABASE "{logical_source.pg_database}" FROM PUBLIC')
    PipelineTableFactory(pipeline__source=logical_source, table_name="audit_log")
    logical_source.pg_username = role
    logical_source.save()
    try:
        response = admin_browser.post(
            reverse("admin:sources_source_changelist"),
            {"action": "test_connection", "_selected_action": [logical_source.pk]},
            follow=True,
        )
        (message,) = [str(m) for m in get_messages(response.wsgi_request)]
        page = response.content.decode()
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
    assert message.startswith(f"{logical_source.name}: 4 check(s) failed:<br>")
    for fix in (
        f'ALTER ROLE "{role}" WITH REPLICATION;',
        f'GRANT pg_monitor TO "{role}";',
        f'GRANT CREATE ON DATABASE "{logical_source.pg_database}" TO "{role}";',
        'ALTER TABLE "public"."audit_log" ADD PRIMARY KEY (...);',
    ):
        shown = format_html('<code class="rosetta-fix">{}</code>', fix)
        assert shown in message and shown in page, fix
