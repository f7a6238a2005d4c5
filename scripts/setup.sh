#!/usr/bin/env bash
# Installs what Rosetta needs on a fresh Debian machine: the PostgreSQL server binaries,
# Redis, docker-compose (only to validate docker-compose.yml), a virtualenv with
# requirements.txt. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need_apt=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get"
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Only the compose-file test needs docker-compose; without it that test is skipped.
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "setup: installing docker-compose with apt-get (to validate docker-compose.yml)"
  { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; } \
    || echo "setup: docker-compose could not be installed; the compose-file test will be skipped"
fi

# The browser tests drive Debian's chromium through Playwright (Playwright's own browser
# download is not used).
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium with apt-get (for the browser tests)"
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

# Redis: start one on 127.0.0.1:6379 if nothing answers there.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "setup: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/rosetta-redis.log
  sleep 0.5
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt; then
  echo "setup: pip install -r requirements.txt failed" >&2
  exit 1
fi

# The fold's compiled fast path and the stream's message loop (engine/_fastfold.pyx) with this
# machine's C compiler; if it cannot be built, the engine runs the pure-Python paths (same
# batches, slower).
if command -v "${CC:-cc}" >/dev/null 2>&1; then
  scripts/build_fastfold.sh || echo "setup: engine/_fastfold could not be built; CDC uses the pure-Python fold"
else
  echo "setup: no C compiler (cc): CDC uses the pure-Python fold (apt-get install gcc to build it)"
fi
