"""Production settings refuse to start without what they need, instead of quietly using localhost."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VALID_KEY = "bG9uZy1lbm91Z2gta2V5LWZvci10ZXN0cy0xMjM0NTY="
PRODUCTION = {
    "ROSETTA_ENV": "production",
    "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnop",
    "ALLOWED_HOSTS": "rosetta.example.com",
    "DATABASE_URL": "postgresql://rosetta@db.example.com:5432/rosetta",
    "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
    "ROSETTA_ENCRYPTION_KEYS": VALID_KEY,
}
REQUIRED = ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL", "ROSETTA_ENCRYPTION_KEYS"]


def run(command, env, timeout=60):
    """Run with only the given variables (and PATH/HOME), so nothing leaks in from the test's own
    environment, nor from a .env file (the demo writes one)."""
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    base["ROSETTA_ENV_FILE"] = ""
    return subprocess.run(
        command, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=timeout
    )


def without(name):
    return {key: value for key, value in PRODUCTION.items() if key != name}


def test_production_settings_with_everything_set_pass_check_deploy():
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout


def test_each_missing_setting_is_a_system_check_error_naming_it():
    result = run([sys.executable, "manage.py", "check"], {"ROSETTA_ENV": "production"})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "(rosetta.E" in line]
    assert len(errors) == len(REQUIRED), result.stderr
    for name in REQUIRED:
        assert sum(name in error for error in errors) == 1, (name, errors)


def test_an_encryption_key_that_is_not_a_fernet_key_is_refused():
    result = run(
        [sys.executable, "manage.py", "check"], {**PRODUCTION, "ROSETTA_ENCRYPTION_KEYS": "not-a-key"}
    )
    assert result.returncode != 0
    assert "rosetta.E001" in result.stderr and "not a Fernet key" in result.stderr


def test_the_web_application_refuses_to_load_without_a_database_url():
    result = run([sys.executable, "-c", "import rosetta.wsgi"], without("DATABASE_URL"))
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_a_celery_worker_refuses_to_start_without_a_broker_url():
    result = run(
        [sys.executable, "-m", "celery", "-A", "rosetta", "worker", "--pool=solo", "--without-mingle"],
        without("CELERY_BROKER_URL"),
    )
    assert result.returncode != 0
    assert "CELERY_BROKER_URL is not set" in result.stderr + result.stdout
