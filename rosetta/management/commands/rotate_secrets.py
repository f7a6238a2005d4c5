"""Re-encrypt every stored secret under the first key of ROSETTA_ENCRYPTION_KEYS.

Rotation: put the new key first in ROSETTA_ENCRYPTION_KEYS (keep the old ones
after it), restart, run this command, then drop the old keys.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from destinations.models import Destination
from rosetta.audit import record_audit_event
from rosetta.secrets import EncryptedTextField, SecretDecryptionError, rotate
from sources.models import Source


class Command(BaseCommand):
    help = "Re-encrypt all stored secrets with the newest key in ROSETTA_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        total = 0
        try:
            with transaction.atomic():
                for model in (Source, Destination):
                    fields = [
                        f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)
                    ]
                    total += self._rotate_model(model, fields)
        except SecretDecryptionError as error:
            raise CommandError(f"{error} Nothing was changed.") from None
        record_audit_event(None, "rotate_secrets", detail=f"{total} secret(s) re-encrypted")
        self.stdout.write(f"Re-encrypted {total} secret(s) with the newest key.")

    def _rotate_model(self, model, fields) -> int:
        """Works on the raw tokens in SQL, so plaintext never lands in model instances."""
        table = connection.ops.quote_name(model._meta.db_table)
        count = 0
        with connection.cursor() as cursor:
            columns = ", ".join(connection.ops.quote_name(name) for name in fields)
            cursor.execute(f"SELECT id, {columns} FROM {table} FOR UPDATE")
            for row_id, *tokens in cursor.fetchall():
                rotated = [rotate(token) if token else token for token in tokens]
                assignments = ", ".join(f"{connection.ops.quote_name(name)} = %s" for name in fields)
                cursor.execute(f"UPDATE {table} SET {assignments} WHERE id = %s", [*rotated, row_id])
                count += sum(1 for token in tokens if token)
        return count
