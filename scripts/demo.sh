#!/usr/bin/env bash
# The demo: installs what is missing, then runs Rosetta (web, Celery worker, Celery Beat)
# against the local PostgreSQL and Redis, with a sample shop database as the source and a
# DuckDB file as the destination. `bash scripts/demo.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=.demo
mkdir -p "$DEMO"
# The source cluster runs as the postgres OS user (as root), which must reach its data
# directory: in .demo when it can, else under /tmp, named after this checkout (a checkout in
# a directory closed to other users: /root, or one made by mktemp -d).
PGDIR="$PWD/$DEMO/pg"
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD/$DEMO"; then
  PGDIR="/tmp/rosetta-demo-pg-$(printf %s "$PWD" | md5sum | cut -c1-12)"
fi

stop_demo() {
  if [ -f "$DEMO/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$DEMO/pids"
    # Wait for them to exit (a worker finishes its task), so a restart finds port 8000 free.
    for _ in $(seq 1 40); do
      alive=0
      while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$DEMO/pids"
      [ "$alive" = 0 ] && break
      sleep 0.5
    done
    rm -f "$DEMO/pids"
  fi
  if [ -f "$PGDIR/data/postmaster.pid" ]; then
    (cd / && runuser -u postgres -- /usr/lib/postgresql/*/bin/pg_ctl -D "$PGDIR/data" -m fast stop >/dev/null) || true
  fi
}
if [ "${1:-}" = "stop" ]; then stop_demo; echo "demo stopped"; exit 0; fi
stop_demo

bash scripts/setup.sh
PY=.venv/bin/python

# Settings for the demo live in .demo/env, made once, so the encryption key survives restarts.
NEW_KEY=0
if [ ! -f "$DEMO/env" ]; then
  NEW_KEY=1
  # a new .demo starts its own source cluster, as one inside .demo would
  [ "$PGDIR" = "$PWD/$DEMO/pg" ] || rm -rf "$PGDIR"
  cat > "$DEMO/env" <<ENV
ROSETTA_ENCRYPTION_KEYS=$($PY -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
SECRET_KEY=$($PY -c 'import secrets; print(secrets.token_urlsafe(40))')
DATABASE_URL=postgresql://postgres@127.0.0.1:5432/rosetta_demo
CELERY_BROKER_URL=redis://127.0.0.1:6379/1
ENV
fi
set -a; . "$DEMO/env"; set +a

# The README's manage.py commands read .env: point it at the demo, unless a .env that the
# demo did not write is there (then say how to load the demo's settings instead). Only what
# the commands need: no SECRET_KEY, which docker-compose would also take from .env and
# which the tests' "refuses to start without SECRET_KEY" checks must not find.
MARK="# Written by scripts/demo.sh: the demo's settings. Delete it to use your own."
if [ ! -f .env ] || head -1 .env | grep -qF "$MARK"; then
  { echo "$MARK"; grep -v '^SECRET_KEY=' "$DEMO/env"; } > .env
  ENV_NOTE="manage.py commands read .env, which points at the demo."
else
  ENV_NOTE="Your own .env is kept; load the demo's first: set -a; . $DEMO/env; set +a"
fi

# Metadata database on the local PostgreSQL server.
if ! psql -h 127.0.0.1 -U postgres -Atc "SELECT 1" postgres >/dev/null 2>&1; then
  echo "demo: no PostgreSQL answers on 127.0.0.1:5432 (start it: pg_ctlcluster 15 main start)" >&2
  exit 1
fi
# A demo database left by an earlier demo whose .demo/ was deleted holds secrets under a key
# that is gone: it is the demo's own, so it starts again empty.
if [ "$NEW_KEY" = 1 ]; then
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS rosetta_demo WITH (FORCE)" postgres
fi
psql -h 127.0.0.1 -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname='rosetta_demo'" postgres | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE rosetta_demo" postgres

# The sample source needs wal_level=logical. If the local server does not have it, the demo
# starts its own cluster from the server binaries on port 25432 instead of reconfiguring it
# (below the ephemeral port range, 32768 and up: 55432 was once held by an outgoing connection).
SOURCE_PORT=5432
if [ "$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW wal_level' postgres)" != "logical" ]; then
  SOURCE_PORT=25432
  $PY - <<PYEOF
from rosetta.pgcluster import Cluster
Cluster(data_dir="$PGDIR", port=$SOURCE_PORT).start()
PYEOF
  echo "demo: started a PostgreSQL cluster with wal_level=logical on port $SOURCE_PORT for the sample source"
fi

$PY manage.py migrate --noinput >/dev/null
ADMIN_PASSWORD=$($PY manage.py demo --source-port "$SOURCE_PORT" --duckdb-path "$PWD/$DEMO/warehouse.duckdb" \
  --exports-dir "$PWD/$DEMO/exports" --files-duckdb-path "$PWD/$DEMO/files.duckdb" | sed -n 's/^admin password: //p')

start() { # name, command...
  local name=$1; shift
  nohup "$@" > "$DEMO/$name.log" 2>&1 &
  echo $! >> "$DEMO/pids"
}
# gunicorn, not runserver: a fixed set of worker processes, each one database connection
# (runserver's thread per request with CONN_MAX_AGE kept idle connections growing).
start web .venv/bin/gunicorn rosetta.wsgi --bind 127.0.0.1:8000 --workers 2 --timeout 60
start worker $PY -m celery -A rosetta worker --loglevel=INFO --concurrency=2
start beat $PY -m celery -A rosetta beat --loglevel=INFO
start generator $PY manage.py demo --generate --source-port "$SOURCE_PORT" --exports-dir "$PWD/$DEMO/exports"
start reviews-api $PY manage.py demo --serve-api

# Ready when /api/health/ says every component is up: the worker and Beat count once their
# first heartbeat is in (a few seconds after they start).
HEALTH=""
for _ in $(seq 1 120); do
  if HEALTH=$(curl -fs http://127.0.0.1:8000/api/health/ 2>/dev/null); then HEALTH=ok; break; fi
  sleep 0.5
done
if [ "$HEALTH" != ok ]; then
  echo "demo: not healthy after 60 s: $(curl -s http://127.0.0.1:8000/api/health/ 2>/dev/null || echo 'the web process does not answer')" >&2
  echo "demo: see the logs in $DEMO/ (web.log, worker.log, beat.log); stop it with: bash scripts/demo.sh stop" >&2
  exit 1
fi

cat <<MSG

Rosetta demo is running.
  Admin:    http://127.0.0.1:8000/admin/     user: admin   password: $ADMIN_PASSWORD
  API:      http://127.0.0.1:8000/api/       docs: http://127.0.0.1:8000/api/docs/
  Source:   postgresql://postgres@127.0.0.1:$SOURCE_PORT/rosetta_demo_shop (a sample shop, changing every second)
  DuckDB:   $PWD/$DEMO/warehouse.duckdb (the pipeline "shop-to-duckdb" replicates into it)
  Batch:    CSV exports in $DEMO/exports (a new one every minute) and a reviews API on
            http://127.0.0.1:8765/reviews, loaded every minute into $PWD/$DEMO/files.duckdb
            by "products-to-duckdb" and "reviews-to-duckdb"
  Commands: $ENV_NOTE
            e.g. .venv/bin/python manage.py pipeline_stats shop-to-duckdb
  Logs:     $DEMO/web.log, worker.log, beat.log, generator.log, reviews-api.log
  Stop:     bash scripts/demo.sh stop
MSG
