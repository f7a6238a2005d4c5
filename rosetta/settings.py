"""Rosetta settings, read from the environment (see .env.example)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The variables below may also come from this file (the environment wins); empty reads none,
# as the tests do when they check what happens without a setting.
ENV_FILE = env.str("ROSETTA_ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE:
    environ.Env.read_env(ENV_FILE, overwrite=False)

# "development" or "production"; production turns on the hardening below and
# refuses to start (a system check error each, see rosetta/apps.py) without these
# variables and a valid ROSETTA_ENCRYPTION_KEYS, instead of quietly using localhost.
ROSETTA_ENV = env.str("ROSETTA_ENV", default="development")
PRODUCTION = ROSETTA_ENV == "production"
REQUIRED_IN_PRODUCTION = ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL"]
MISSING_PRODUCTION_SETTINGS = [
    name for name in REQUIRED_IN_PRODUCTION if PRODUCTION and not env.str(name, default="").strip()
]

SECRET_KEY = env.str("SECRET_KEY", default="" if PRODUCTION else "dev-only-insecure-key-change-me")
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "rosetta.apps.RosettaAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "rosetta",
    "sources",
    "destinations",
    "pipelines",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "rosetta.middleware.ApiErrorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rosetta.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "rosetta.wsgi.application"

# The metadata database: PostgreSQL through psycopg 3.
DATABASES = {
    "default": env.db("DATABASE_URL", default="postgresql://postgres@127.0.0.1:5432/rosetta"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
# The admin's and Swagger UI's assets are served by the app itself (WhiteNoise): no CDN.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if not PRODUCTION:
    STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Secrets (passwords, Snowflake keys) are encrypted with these Fernet keys.
# Comma-separated; the first encrypts, all decrypt, so a new key goes first
# and old keys stay until `manage.py rotate_secrets` has re-encrypted.
ROSETTA_ENCRYPTION_KEYS = env.list("ROSETTA_ENCRYPTION_KEYS", default=[])

# If set, DuckDB destination files must lie under this directory (paths are always absolute).
ROSETTA_DATA_DIR = env.str("ROSETTA_DATA_DIR", default="")

# How long a "Test connection" or a probe waits for a server, in seconds.
ROSETTA_CONNECT_TIMEOUT = env.int("ROSETTA_CONNECT_TIMEOUT", default=5)
ROSETTA_STATEMENT_TIMEOUT_MS = env.int("ROSETTA_STATEMENT_TIMEOUT_MS", default=10_000)

# Pipeline runs: the longest one peek of the replication slot may take, and how long one
# run task keeps its stream open, applying changes as they arrive, before it leaves the
# worker to other pipelines (a run still busy then is queued again at once).
ROSETTA_PEEK_TIMEOUT_SECONDS = env.int("ROSETTA_PEEK_TIMEOUT_SECONDS", default=30 * 60)
ROSETTA_RUN_BUDGET_SECONDS = env.int("ROSETTA_RUN_BUDGET_SECONDS", default=50)
# A queued run whose pipeline lock nobody holds after this long was lost with its
# worker: the dispatcher queues it again (a live run holds the lock, whatever its age).
ROSETTA_RUN_LEASE_SECONDS = env.int("ROSETTA_RUN_LEASE_SECONDS", default=60)
# A run task may snapshot a large table: its time limit is this (not Celery's default
# task limit), so a long snapshot finishes instead of restarting from zero forever.
ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS = env.int("ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS", default=24 * 60 * 60)
# Run history: the prune task (hourly, Beat) deletes runs older than this many days, failed
# and interrupted runs after the second number; each pipeline's newest run stays.
ROSETTA_RUN_HISTORY_DAYS = env.int("ROSETTA_RUN_HISTORY_DAYS", default=14)
ROSETTA_FAILED_RUN_HISTORY_DAYS = env.int("ROSETTA_FAILED_RUN_HISTORY_DAYS", default=90)
# CSV and HTTP JSON sources: records per destination transaction (each with its checkpoint).
ROSETTA_BATCH_PART_ROWS = env.int("ROSETTA_BATCH_PART_ROWS", default=50_000)
# CSV sources may read only files under these directories (comma-separated); empty: anywhere
# the workers can read. Set it in production: whoever may add a source may otherwise load
# (and preview) any file the workers can open.
ROSETTA_CSV_ALLOWED_DIRS = env.list("ROSETTA_CSV_ALLOWED_DIRS", default=[])

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an unauthenticated request gets 401 with WWW-Authenticate.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rosetta.permissions.ModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rosetta.filters.SearchFilter",
    ],
    "EXCEPTION_HANDLER": "rosetta.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rosetta.pagination.PageSizePagination",
    "PAGE_SIZE": env.int("API_PAGE_SIZE", default=50),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Rosetta API",
    "DESCRIPTION": "PostgreSQL change-data-capture pipelines into warehouses.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Alert events carry two fields with the same choices (previous_level, level).
    "ENUM_NAME_OVERRIDES": {"AlertLevelEnum": "monitoring.models.Level"},
}

# The cache (Redis): counts failed logins across processes. Defaults to the broker's Redis.
CACHE_URL = env.str("CACHE_URL", default="")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_URL or env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": "rosetta",
    }
}
# After this many failed logins from one address, the admin login and the token endpoint
# refuse it (429) until this many seconds after the first failure.
ROSETTA_LOGIN_FAILURE_LIMIT = env.int("ROSETTA_LOGIN_FAILURE_LIMIT", default=5)
ROSETTA_LOGIN_LOCKOUT_SECONDS = env.int("ROSETTA_LOGIN_LOCKOUT_SECONDS", default=15 * 60)

# Celery: Redis as broker, JSON only, Beat schedules from the database.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=55 * 60)
CELERY_TASK_ACKS_LATE = True
# A message not acknowledged within the visibility timeout is delivered again: it must
# outlast the longest task (the run task, see ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS), or a
# long run would get a twin. A run lost with its worker does not wait for it: the
# dispatcher re-queues it after ROSETTA_RUN_LEASE_SECONDS.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": max(CELERY_TASK_TIME_LIMIT, ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS + 60) + 300
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Workers log through LOGGING below (LOG_FORMAT, pipeline and run on each line), not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Mail for alerts (the WAL monitor); console by default so nothing leaves the box.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="rosetta@localhost")

# WAL monitoring: probes, alerts and metric history (the monitoring app).
ROSETTA_PROBE_MAX_PARALLEL = env.int("ROSETTA_PROBE_MAX_PARALLEL", default=16)
# Consecutive failed probes of a source that raise a critical alert.
ROSETTA_PROBE_FAILURES_ALERT = env.int("ROSETTA_PROBE_FAILURES_ALERT", default=3)
# A source whose last probe is older than this shows health "unknown".
ROSETTA_PROBE_STALE_SECONDS = env.int("ROSETTA_PROBE_STALE_SECONDS", default=600)
# /api/health/ reports a worker or Beat down when its last heartbeat is older than this
# (a worker records one every 30 s, Beat one per task it sends).
ROSETTA_HEARTBEAT_STALE_SECONDS = env.int("ROSETTA_HEARTBEAT_STALE_SECONDS", default=180)
# GET /metrics (Prometheus text) answers a request carrying "Authorization: Bearer <token>"
# or coming from one of these addresses; everything else gets 403.
ROSETTA_METRICS_TOKEN = env.str("ROSETTA_METRICS_TOKEN", default="")
ROSETTA_METRICS_ALLOWED_IPS = env.list("ROSETTA_METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
# Who is told about alert changes: emails (comma-separated) and a Slack-compatible webhook.
ROSETTA_ALERT_EMAILS = env.list("ROSETTA_ALERT_EMAILS", default=[])
ROSETTA_ALERT_WEBHOOK_URL = env.str("ROSETTA_ALERT_WEBHOOK_URL", default="")
ROSETTA_ALERT_WEBHOOK_TIMEOUT = env.int("ROSETTA_ALERT_WEBHOOK_TIMEOUT", default=5)
# Notify again while an alert stays bad, every this many minutes (0: never).
ROSETTA_ALERT_REPEAT_MINUTES = env.int("ROSETTA_ALERT_REPEAT_MINUTES", default=60)
# A failed notification is retried after this many seconds, doubling, up to the attempts.
ROSETTA_ALERT_RETRY_SECONDS = env.int("ROSETTA_ALERT_RETRY_SECONDS", default=60)
ROSETTA_ALERT_MAX_ATTEMPTS = env.int("ROSETTA_ALERT_MAX_ATTEMPTS", default=8)
# Metrics are kept per probe for this many days, then as hourly maxima for the second
# number of days (0: keep hourly rows forever).
ROSETTA_METRICS_FULL_RESOLUTION_DAYS = env.int("ROSETTA_METRICS_FULL_RESOLUTION_DAYS", default=7)
ROSETTA_METRICS_HOURLY_RETENTION_DAYS = env.int("ROSETTA_METRICS_HOURLY_RETENTION_DAYS", default=365)

# LOG_FORMAT=json: one JSON object per line; either way a run's lines name its pipeline and run.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "rosetta.logs.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"},
        "json": {"()": "rosetta.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
