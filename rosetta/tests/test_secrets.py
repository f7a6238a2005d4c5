import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction

from rosetta.secrets import SecretDecryptionError
from sources.models import Source
from sources.tests.factories import SourceFactory

pytestmark = pytest.mark.django_db


def stored_token(source) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_password FROM sources_source WHERE id = %s", [source.pk])
        return cursor.fetchone()[0]


def test_a_new_key_first_still_decrypts_old_secrets_and_rotation_moves_them(settings):
    old_key = settings.ROSETTA_ENCRYPTION_KEYS[0]
    source = SourceFactory(pg_password="rotate-me")
    new_key = Fernet.generate_key().decode()

    settings.ROSETTA_ENCRYPTION_KEYS = [new_key, old_key]
    assert Source.objects.get(pk=source.pk).pg_password == "rotate-me"
    token_before = stored_token(source)
    call_command("rotate_secrets")
    assert stored_token(source) != token_before

    settings.ROSETTA_ENCRYPTION_KEYS = [new_key]
    assert Source.objects.get(pk=source.pk).pg_password == "rotate-me"


def test_a_missing_key_fails_loudly_and_stores_nothing(settings):
    settings.ROSETTA_ENCRYPTION_KEYS = []
    with (
        pytest.raises(ImproperlyConfigured, match="ROSETTA_ENCRYPTION_KEYS is not set"),
        transaction.atomic(),
    ):
        SourceFactory(pg_password="never-plaintext")
    settings.ROSETTA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert not Source.objects.exists()


def test_a_wrong_key_fails_loudly_without_echoing_the_secret(settings):
    source = SourceFactory(pg_password="hidden-value")
    token = stored_token(source)
    settings.ROSETTA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SecretDecryptionError) as error:
        Source.objects.get(pk=source.pk)
    assert "hidden-value" not in str(error.value) and token not in str(error.value)


def test_rotation_with_an_unknown_key_changes_nothing(settings):
    source = SourceFactory(pg_password="x")
    token = stored_token(source)
    settings.ROSETTA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(Exception, match="Nothing was changed"):
        call_command("rotate_secrets")
    assert stored_token(source) == token


def test_the_system_check_reports_a_missing_key(settings):
    from rosetta.apps import check_encryption_keys

    settings.ROSETTA_ENCRYPTION_KEYS = []
    problems = check_encryption_keys(None)
    assert [p.id for p in problems] == ["rosetta.E001"]
    settings.ROSETTA_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    assert "not a Fernet key" in check_encryption_keys(None)[0].msg
