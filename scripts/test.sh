#!/usr/bin/env bash
# Runs the checks and the whole test suite. The tests start their own throwaway
# PostgreSQL cluster (wal_level=logical) and use the local Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export ROSETTA_ENCRYPTION_KEYS="${ROSETTA_ENCRYPTION_KEYS:-$(.venv/bin/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')}"
.venv/bin/ruff check .
.venv/bin/python manage.py check
.venv/bin/python manage.py makemigrations --check --dry-run
.venv/bin/pytest "$@"
