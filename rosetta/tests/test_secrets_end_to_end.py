"""A pipeline run end to end with known secrets, through the API and a real Celery worker:
no API response, admin page, log record, Celery task message or worker log holds them."""

import logging
import uuid

import psycopg
import pytest
from celery.signals import before_task_publish
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from psycopg import sql
from rest_framework.test import APIClient

from destinations.models import Destination
from pipelines import tasks
from pipelines.models import Pipeline, PipelineRun
from pipelines.tests.test_scheduling import wait_for
from rosetta.models import AuditEvent
from sources.models import Source

SOURCE_PASSWORD = f"src-pw-{uuid.uuid4().hex}"
DESTINATION_PASSWORD = f"dst-pw-{uuid.uuid4().hex}"
SECRETS = (SOURCE_PASSWORD, DESTINATION_PASSWORD)


@pytest.fixture
def password_roles(pg_cluster):
    """Two roles that must log in with their passwords (scram over TCP, ahead of the cluster's
    trust rule), so the pipeline only works if the stored secrets reach the connections."""
    suffix = uuid.uuid4().hex[:8]
    roles = {f"e2e_src_{suffix}": SOURCE_PASSWORD, f"e2e_dst_{suffix}": DESTINATION_PASSWORD}
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for role, password in roles.items():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
        (hba_file,) = conn.execute("SHOW hba_file").fetchone()
        with open(hba_file) as handle:
            original = handle.read()
        rules = "".join(f"host all {role} 127.0.0.1/32 scram-sha-256\n" for role in roles)
        with open(hba_file, "w") as handle:
            handle.write(rules + original)
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield list(roles)
    finally:
        with open(hba_file, "w") as handle:
            handle.write(original)
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


@pytest.fixture
def published_tasks():
    messages = []

    def capture(sender=None, body=None, headers=None, **kwargs):
        messages.append(repr((sender, body, headers)))

    before_task_publish.connect(capture, weak=False)
    yield messages
    before_task_publish.disconnect(capture)


def assert_no_secret(text: str, where: str):
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}"


def test_no_secret_appears_anywhere_during_a_real_pipeline_run(
    celery_worker,
    pg_cluster,
    make_database,
    source_database,
    password_roles,
    published_tasks,
    admin_user,
    django_user_model,
    caplog,
):
    source_role, destination_role = password_roles
    with psycopg.connect(**source_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT i, 'n' || i FROM generate_series(1, 20) i")
    # The roles really need their passwords: a wrong one is refused.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=pg_cluster.port, dbname="postgres", user=source_role, password="x"
        )
    warehouse = make_database("dst")

    api = APIClient()
    api.force_authenticate(admin_user)
    responses = []

    def call(method, url, body=None):
        response = getattr(api, method)(url, body, format="json")
        responses.append((url, response.content.decode()))
        assert response.status_code < 400, (url, response.content[:500])
        return response

    caplog.set_level(logging.DEBUG)
    source = call(
        "post",
        "/api/sources/",
        {
            "name": "e2e-source",
            "pg_host": "127.0.0.1",
            "pg_port": pg_cluster.port,
            "pg_database": source_database["dbname"],
            "pg_username": source_role,
            "pg_password": SOURCE_PASSWORD,
            "sslmode": "disable",
            "publication_name": "e2e_pub",
            "slot_name": f"e2e_slot_{uuid.uuid4().hex[:8]}",
        },
    ).json()
    destination = call(
        "post",
        "/api/destinations/",
        {
            "name": "e2e-warehouse",
            "kind": "postgres",
            "pg_host": "127.0.0.1",
            "pg_port": pg_cluster.port,
            "pg_database": warehouse,
            "pg_username": destination_role,
            "pg_password": DESTINATION_PASSWORD,
            "pg_schema": "analytics",
        },
    ).json()
    assert call("post", f"/api/destinations/{destination['id']}/test-connection/").json()["ok"] is True
    assert call("post", f"/api/sources/{source['id']}/test-connection/").json()["ok"] is True
    pipeline = call(
        "post",
        "/api/pipelines/",
        {
            "name": "e2e",
            "source": source["id"],
            "destination": destination["id"],
            "tables": ["public.orders"],
        },
    ).json()
    call("post", f"/api/pipelines/{pipeline['id']}/start/")

    tasks.dispatch_pipeline_runs.delay()  # what Beat sends; the worker runs the pipeline
    wait_for(
        lambda: PipelineRun.objects.filter(pipeline_id=pipeline["id"], outcome="succeeded").exists(),
        timeout=60,
        what="a successful run on the worker",
    )
    with psycopg.connect(pg_cluster.dsn(warehouse), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.orders").fetchone() == (20,)

    # Every API read an operator or a program makes.
    for url in [
        "/api/sources/",
        f"/api/sources/{source['id']}/",
        f"/api/sources/{source['id']}/wal/",
        "/api/destinations/",
        f"/api/destinations/{destination['id']}/",
        "/api/pipelines/",
        f"/api/pipelines/{pipeline['id']}/",
        "/api/pipeline-runs/",
        "/api/audit-events/",
        "/api/schema/",
    ]:
        call("get", url)
    call("post", f"/api/sources/{source['id']}/probe/")

    # Every admin page of the objects holding or using a secret, for a superuser and a view-only user.
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    browser_pages = []
    for user in (admin_user, viewer):
        browser = Client()
        browser.force_login(user)
        for model, pk in [
            (Source, source["id"]),
            (Destination, destination["id"]),
            (Pipeline, pipeline["id"]),
            (AuditEvent, AuditEvent.objects.first().pk),
        ]:
            prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
            urls = [reverse(f"{prefix}_changelist"), reverse(f"{prefix}_change", args=[pk])]
            if model is not AuditEvent:
                urls.append(reverse(f"{prefix}_history", args=[pk]))
            if user is admin_user and model is not AuditEvent:
                urls.append(reverse(f"{prefix}_delete", args=[pk]))
            for url in urls:
                page = browser.get(url)
                assert page.status_code == 200, (user.username, url)
                browser_pages.append((url, page.content.decode()))
        browser_pages.append(("/admin/", browser.get("/admin/").content.decode()))

    for url, body in responses + browser_pages:
        assert_no_secret(body, url)
    for record in caplog.records:
        assert_no_secret(
            record.getMessage() + repr(record.args) + str(record.exc_text), f"log record {record.name}"
        )
    assert published_tasks, "no Celery task was published"
    for message in published_tasks:
        assert_no_secret(message, "a Celery task message")
    worker_log = celery_worker.log_path.read_text()
    assert "succeeded" in worker_log
    assert_no_secret(worker_log, "the worker's log")
