"""The project's wiring: health, OpenAPI schema, production settings, Celery, compose file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_health_reports_every_component_without_authentication():
    from rosetta import heartbeat

    heartbeat.record("worker")
    heartbeat.record("beat")
    response = APIClient().get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "worker": "ok",
        "beat": "ok",
        "probes": "ok",
    }


@pytest.mark.django_db
def test_health_says_degraded_when_the_broker_is_down(settings, monkeypatch):
    from rosetta.celery import app

    # Celery reads the environment's CELERY_BROKER_URL before its settings.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = APIClient().get("/api/health/")
    finally:
        app.conf.broker_url = settings.CELERY_BROKER_URL
    assert response.status_code == 503
    assert response.json()["broker"].startswith("unavailable")
    assert response.json()["database"] == "ok"


def test_the_openapi_schema_generates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    schema = (tmp_path / "schema.yml").read_text()
    assert "/api/pipelines/{id}/start/" in schema
    assert "/api/sources/{id}/test-connection/" in schema


@pytest.mark.django_db
def test_swagger_ui_uses_local_assets(admin_browser):
    page = admin_browser.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn" not in page.lower()


def run_manage(*args, **env):
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    full_env.pop("SECRET_KEY", None)
    full_env["ROSETTA_ENV_FILE"] = ""  # not the demo's .env either
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = run_manage("check", ROSETTA_ENV="production", ALLOWED_HOSTS="x")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_celery_uses_json_redis_and_the_database_scheduler():
    from rosetta.celery import app

    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.broker_url.startswith("redis://")
    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    assert app.conf.task_time_limit > app.conf.task_soft_time_limit > 0


@pytest.mark.skipif(
    not shutil.which("docker-compose"), reason="docker-compose (Debian package) not installed"
)
def test_the_compose_file_is_valid():
    result = subprocess.run(
        ["docker-compose", "config"],
        cwd=ROOT,
        env={**os.environ, "ROSETTA_ENCRYPTION_KEYS": "k", "SECRET_KEY": "s", "ALLOWED_HOSTS": "h"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for service in ("metadata-db", "redis", "web", "worker", "beat", "source-db"):
        assert f"  {service}:" in result.stdout
    assert "wal_level=logical" in result.stdout
    assert "ROSETTA_ENV: production" in result.stdout


@pytest.mark.skipif(
    not shutil.which("docker-compose"), reason="docker-compose (Debian package) not installed"
)
def test_the_compose_file_refuses_to_run_without_a_secret_key():
    env = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "ALLOWED_HOSTS")}
    result = subprocess.run(
        ["docker-compose", "config"],
        cwd=ROOT,
        env={**env, "ROSETTA_ENCRYPTION_KEYS": "k", "ALLOWED_HOSTS": "h"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_env_example_documents_every_variable_the_settings_read():
    import re

    settings_source = (ROOT / "rosetta" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z_]+)"', settings_source))
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert read, "no env reads found: the pattern is out of date"
    assert read - documented == set()


def test_tasks_go_to_the_tests_broker_even_when_a_demo_env_file_names_another():
    """After `bash scripts/demo.sh`, .env names the demo's Redis database; a task the tests
    enqueue must still reach the tests' worker, not the demo's."""
    from conftest import TEST_BROKER_URL
    from rosetta.celery import app

    assert app.connection_for_write().as_uri(include_password=True) == TEST_BROKER_URL
