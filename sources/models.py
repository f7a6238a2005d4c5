import json
import os

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from rosetta.secrets import EncryptedTextField
from rosetta.validators import postgres_identifier

GIB = 1024**3


class Source(models.Model):
    """Where a pipeline reads from: a PostgreSQL database (CDC through a replication
    slot), CSV files, or an HTTP JSON API (both batch sources, see engine/batch_sources)."""

    class Kind(models.TextChoices):
        POSTGRES = "postgres", "PostgreSQL (CDC)"
        CSV = "csv", "CSV files"
        HTTP_JSON = "http_json", "HTTP JSON API"

    BATCH_KINDS = (Kind.CSV, Kind.HTTP_JSON)
    POSTGRES_REQUIRED = ["pg_host", "pg_database", "pg_username"]

    class SSLMode(models.TextChoices):
        DISABLE = "disable"
        ALLOW = "allow"
        PREFER = "prefer"
        REQUIRE = "require"
        VERIFY_CA = "verify-ca"
        VERIFY_FULL = "verify-full"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.POSTGRES)
    settings = models.JSONField(
        "settings",
        default=dict,
        blank=True,
        help_text="For CSV and HTTP JSON sources: the kind's settings as a JSON object (see the README). "
        "Not used by PostgreSQL sources.",
    )
    secret_headers = EncryptedTextField(
        "secret HTTP headers",
        blank=True,
        default="",
        help_text="HTTP JSON sources: headers holding credentials, as a JSON object such as "
        '{"Authorization": "Bearer ..."}; stored encrypted, never shown again.',
    )
    pg_host = models.CharField("host", max_length=255, blank=True, default="")
    pg_port = models.PositiveIntegerField(
        "port", default=5432, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    pg_database = models.CharField("database", max_length=63, blank=True, default="")
    pg_username = models.CharField("user", max_length=63, blank=True, default="")
    pg_password = EncryptedTextField("password", blank=True, default="")
    sslmode = models.CharField(max_length=11, choices=SSLMode.choices, default=SSLMode.PREFER)
    publication_name = models.CharField(
        max_length=63, default="rosetta_pub", validators=[postgres_identifier]
    )
    slot_name = models.CharField(max_length=63, default="rosetta_slot", validators=[postgres_identifier])
    wal_warn_bytes = models.BigIntegerField(
        "retained WAL warning threshold (bytes)", default=1 * GIB, validators=[MinValueValidator(1)]
    )
    wal_critical_bytes = models.BigIntegerField(
        "retained WAL critical threshold (bytes)", default=5 * GIB, validators=[MinValueValidator(1)]
    )
    slot_inactive_alert_minutes = models.PositiveIntegerField(
        "inactive slot alert after (minutes)",
        default=30,
        validators=[MinValueValidator(1)],
        help_text="Alert when a replication slot is neither active nor advancing for this long.",
    )
    heartbeat_enabled = models.BooleanField(
        "emit WAL heartbeats",
        default=False,
        help_text="On every WAL probe, write a tiny logical message (pg_logical_emit_message) into this "
        "database, so that its slot can advance while the database is idle and the server is busy.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["pg_host", "pg_port", "pg_database", "slot_name"],
                condition=models.Q(kind="postgres"),
                name="source_unique_slot_per_database",
                violation_error_message="Another source already uses this replication slot on this database.",
            ),
        ]

    def __str__(self):
        return self.name

    # Where the pipelines of this source read from: frozen while one of them has started.
    REPLICATION_FIELDS = ("pg_host", "pg_port", "pg_database", "slot_name", "publication_name")

    def replication_field_errors(self) -> dict[str, str]:
        """Errors for replication fields changed (against the stored row) while a pipeline
        on this source has started: it would silently read another slot or database."""
        if self.pk is None:
            return {}
        stored = Source.objects.filter(pk=self.pk).values(*self.REPLICATION_FIELDS).first()
        changed = [name for name in self.REPLICATION_FIELDS if stored and stored[name] != getattr(self, name)]
        if not changed:
            return {}
        started = self.pipelines.exclude(status="created").first()
        if started is None:
            return {}
        errors = dict.fromkeys(
            changed,
            f"Cannot change while pipeline {started.name} is {started.status}: its replication slot "
            "and checkpoint belong to the current value. Pause and delete the pipeline first, or create "
            "another source.",
        )
        if "slot_name" in errors:
            errors["slot_name"] = (
                f"Cannot change while pipeline {started.name} is {started.status}; use the change-slot action "
                f"(the admin's /admin/sources/source/{self.pk}/change-slot/ page, or POST "
                f"/api/sources/{self.pk}/change-slot/), which asks whether to drop the old slot and re-copies "
                "every table."
            )
        return errors

    @property
    def is_batch(self) -> bool:
        return self.kind in self.BATCH_KINDS

    def clean(self):
        errors = self.replication_field_errors()
        if self.pk:
            stored = Source.objects.filter(pk=self.pk).values_list("kind", flat=True).first()
            if stored and stored != self.kind and self.pipelines.exists():
                raise ValidationError(
                    {
                        "kind": f"Pipelines read this source as {stored}: delete them (or make another source) first."
                    }
                )
        if self.kind == self.Kind.POSTGRES:
            for name in self.POSTGRES_REQUIRED:
                if not getattr(self, name):
                    label = self._meta.get_field(name).verbose_name
                    errors[name] = f"A PostgreSQL source needs its {label}."
        else:
            try:
                self.batch_settings()
            except ValueError as error:
                errors[_settings_field(error)] = str(error)
        if errors:
            raise ValidationError(errors)
        if (
            self.wal_warn_bytes is not None
            and self.wal_critical_bytes is not None
            and self.wal_warn_bytes >= self.wal_critical_bytes
        ):
            raise ValidationError(
                {"wal_warn_bytes": "The warning threshold must be below the critical threshold."}
            )

    def header_secrets(self) -> dict:
        """The secret headers as {name: value}; {} when none."""
        if not self.secret_headers:
            return {}
        try:
            value = json.loads(self.secret_headers)
        except ValueError:
            raise ValueError("secret_headers: must be a JSON object of header names to values") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("secret_headers: must be a JSON object of header names to text values")
        return value

    def batch_settings(self):
        """The kind's settings checked and completed (engine dataclasses); raises
        SettingsError (a ValueError naming the setting) when one cannot work."""
        from engine.batch_sources import SettingsError
        from engine.batch_sources.csv import CsvSettings
        from engine.batch_sources.http_json import HttpJsonSettings

        if not isinstance(self.settings, dict):
            raise SettingsError("settings", "must be a JSON object")
        if self.kind == self.Kind.CSV:
            if self.secret_headers:
                raise SettingsError("secret_headers", "only HTTP JSON sources send headers")
            values = CsvSettings.from_settings(self.settings)
            allowed = [os.path.realpath(d) for d in django_settings.ROSETTA_CSV_ALLOWED_DIRS if d]
            if values.path and allowed:
                where = os.path.realpath(values.path.split("*")[0].split("?")[0].split("[")[0] or "/")
                if not any(where == d or where.startswith(d.rstrip("/") + "/") for d in allowed):
                    raise SettingsError(
                        "path", f"must be under {', '.join(allowed)} (ROSETTA_CSV_ALLOWED_DIRS)"
                    )
            return values
        if self.kind == self.Kind.HTTP_JSON:
            self.header_secrets()
            return HttpJsonSettings.from_settings(self.settings)
        raise SettingsError("kind", "PostgreSQL sources have no batch settings")

    def connection_kwargs(self, connect_timeout: int | None = None) -> dict:
        """Keyword arguments for psycopg.connect(); the password stays out of any DSN string."""
        kwargs = {
            "host": self.pg_host,
            "port": self.pg_port,
            "dbname": self.pg_database,
            "user": self.pg_username,
            "password": self.pg_password or None,
            "sslmode": self.sslmode,
            "application_name": "rosetta",
        }
        if connect_timeout is not None:
            kwargs["connect_timeout"] = connect_timeout
        return kwargs


def _settings_field(error: ValueError) -> str:
    """The model field a settings error belongs to."""
    return "secret_headers" if str(error).startswith("secret_headers") else "settings"
