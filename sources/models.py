from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from rosetta.secrets import EncryptedTextField
from rosetta.validators import postgres_identifier

GIB = 1024**3


class Source(models.Model):
    """A PostgreSQL database that Rosetta reads changes from."""

    class SSLMode(models.TextChoices):
        DISABLE = "disable"
        ALLOW = "allow"
        PREFER = "prefer"
        REQUIRE = "require"
        VERIFY_CA = "verify-ca"
        VERIFY_FULL = "verify-full"

    name = models.SlugField(max_length=100, unique=True)
    pg_host = models.CharField("host", max_length=255)
    pg_port = models.PositiveIntegerField(
        "port", default=5432, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    pg_database = models.CharField("database", max_length=63)
    pg_username = models.CharField("user", max_length=63)
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
        errors = dict.fromkeys(changed, f"Cannot change while pipeline {started.name} is {started.status}: its replication slot " "and checkpoint belong to the current value. Pause and delete the pipeline first, or create " "another source.")
        if "slot_name" in errors:
            errors["slot_name"] = (
                f"Cannot change while pipeline {started.name} is {started.status}; use the change-slot action "
                f"(the admin's /admin/sources/source/{self.pk}/change-slot/ page, or POST "
                f"/api/sources/{self.pk}/change-slot/), which asks whether to drop the old slot and re-copies "
                "every table."
            )
        return errors

    def clean(self):
        errors = self.replication_field_errors()
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
