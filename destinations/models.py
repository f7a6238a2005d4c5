import re
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from rosetta.secrets import EncryptedTextField

# Schemas Rosetta creates tables in: quoted all the same, but "public; drop table x" is surely a typo.
PG_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


class Destination(models.Model):
    """A warehouse Rosetta writes to. Which settings apply depends on `kind`."""

    class Kind(models.TextChoices):
        SNOWFLAKE = "snowflake", "Snowflake"
        POSTGRES = "postgres", "PostgreSQL"
        DUCKDB = "duckdb", "DuckDB"

    # The settings each kind cannot work without. Snowflake also needs a key:
    # either the PEM itself or a path to it on the workers (checked in clean()).
    REQUIRED_FIELDS = {
        Kind.SNOWFLAKE: [
            "snowflake_account",
            "snowflake_user",
            "snowflake_warehouse",
            "snowflake_database",
            "snowflake_schema",
        ],
        Kind.POSTGRES: ["pg_host", "pg_port", "pg_database", "pg_username", "pg_schema"],
        Kind.DUCKDB: ["duckdb_path"],
    }
    SECRET_FIELDS = ["pg_password", "snowflake_private_key", "snowflake_private_key_passphrase"]

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)

    snowflake_account = models.CharField("account", max_length=255, blank=True, default="")
    snowflake_user = models.CharField("user", max_length=255, blank=True, default="")
    snowflake_role = models.CharField("role", max_length=255, blank=True, default="")
    snowflake_warehouse = models.CharField("warehouse", max_length=255, blank=True, default="")
    snowflake_database = models.CharField("database", max_length=255, blank=True, default="")
    snowflake_schema = models.CharField("schema", max_length=255, blank=True, default="")
    snowflake_private_key = EncryptedTextField("private key (PEM)", blank=True, default="")
    snowflake_private_key_path = models.CharField(
        "private key file on the workers", max_length=1024, blank=True, default=""
    )
    snowflake_private_key_passphrase = EncryptedTextField("private key passphrase", blank=True, default="")

    pg_host = models.CharField("host", max_length=255, blank=True, default="")
    pg_port = models.PositiveIntegerField(
        "port",
        null=True,
        blank=True,
        default=5432,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
    )
    pg_database = models.CharField("database", max_length=63, blank=True, default="")
    pg_username = models.CharField("user", max_length=63, blank=True, default="")
    pg_password = EncryptedTextField("password", blank=True, default="")
    pg_schema = models.CharField("schema", max_length=63, blank=True, default="public")

    duckdb_path = models.CharField("DuckDB file", max_length=1024, blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["kind"])]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self):
        errors = {}
        for field in self.REQUIRED_FIELDS.get(self.kind, []):
            if getattr(self, field) in ("", None):
                label = self._meta.get_field(field).verbose_name
                errors[field] = f"A {self.get_kind_display()} destination needs its {label}."
        if self.kind == self.Kind.SNOWFLAKE:
            if not self.snowflake_private_key and not self.snowflake_private_key_path:
                errors["snowflake_private_key"] = (
                    "A Snowflake destination needs a private key: paste the PEM here "
                    "or give snowflake_private_key_path."
                )
            elif self.snowflake_private_key and self.snowflake_private_key_path:
                errors["snowflake_private_key_path"] = "Give either the private key or its path, not both."
        for field, problem in (
            ("duckdb_path", self.duckdb_path_problem()),
            ("pg_schema", self.pg_schema_problem()),
            ("snowflake_private_key", self.private_key_problem()),
        ):
            if problem and field not in errors:
                errors[field] = problem
        if errors:
            raise ValidationError(errors)

    def duckdb_path_problem(self) -> str | None:
        """A relative path would be resolved against whichever process opens it (web, worker)."""
        if self.kind != self.Kind.DUCKDB or not self.duckdb_path:
            return None
        path = PurePosixPath(self.duckdb_path)
        if not path.is_absolute():
            return "Give an absolute path (it is opened by the workers, whatever their working directory)."
        if ".." in path.parts:
            return 'The path may not contain "..".'
        data_dir = settings.ROSETTA_DATA_DIR
        if data_dir and not path.is_relative_to(PurePosixPath(data_dir)):
            return f"The DuckDB file must be under the data directory {data_dir}."
        return None

    def pg_schema_problem(self) -> str | None:
        if self.kind != self.Kind.POSTGRES or not self.pg_schema:
            return None
        if not PG_IDENTIFIER.fullmatch(self.pg_schema):
            return (
                "Use a plain PostgreSQL identifier: letters, digits, underscores and $, starting "
                "with a letter or underscore, at most 63 characters."
            )
        return None

    def private_key_problem(self) -> str | None:
        """The pasted key is read (and decrypted with its passphrase) on save, not at the first run."""
        if self.kind != self.Kind.SNOWFLAKE or not self.snowflake_private_key:
            return None
        from engine.writers.base import ConnectionProblem
        from engine.writers.snowflake import load_private_key

        try:
            load_private_key(self.snowflake_private_key, None, self.snowflake_private_key_passphrase)
        except ConnectionProblem as problem:
            return str(problem)
        return None

    def secret_state(self, field_name: str) -> str:
        """What an admin page may say of a stored secret: "set" / "not set", and a key's fingerprint."""
        if not getattr(self, field_name):
            return "not set"
        if field_name == "snowflake_private_key":
            from engine.writers.snowflake import load_private_key, public_key_fingerprint

            try:
                der = load_private_key(
                    self.snowflake_private_key, None, self.snowflake_private_key_passphrase
                )
            except Exception:
                return "set (cannot be read with the stored passphrase)"
            return f"set, public key fingerprint {public_key_fingerprint(der)}"
        return "set"

    def writer_settings(self) -> dict:
        """This kind's settings as plain values, for the writer modules (which know no Django)."""
        prefix = {"snowflake": "snowflake_", "postgres": "pg_", "duckdb": "duckdb_"}[self.kind]
        return {
            field.name.removeprefix(prefix): getattr(self, field.name)
            for field in self._meta.concrete_fields
            if field.name.startswith(prefix)
        }
