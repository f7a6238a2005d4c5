import pytest
from django.urls import reverse

from destinations.models import Destination
from rosetta.testing import admin_form_data

from .factories import SNOWFLAKE_KEY_LINE, PostgresDestinationFactory, SnowflakeDestinationFactory

pytestmark = pytest.mark.django_db


def form_data(destination, **changes):
    return admin_form_data(destination, Destination.SECRET_FIELDS, **changes)


def test_the_change_page_never_renders_secrets(admin_browser):
    destination = SnowflakeDestinationFactory()
    page = admin_browser.get(
        reverse("admin:destinations_destination_change", args=[destination.pk])
    ).content.decode()
    assert SNOWFLAKE_KEY_LINE not in page
    assert "key-passphrase-secret" not in page
    assert "A value is stored" in page


def test_saving_with_blank_secrets_keeps_the_stored_ones(admin_browser):
    destination = PostgresDestinationFactory()
    url = reverse("admin:destinations_destination_change", args=[destination.pk])
    response = admin_browser.post(url, form_data(destination, pg_schema="renamed"))
    assert response.status_code == 302, response.content.decode()[:3000]
    destination.refresh_from_db()
    assert destination.pg_schema == "renamed"
    assert destination.pg_password == "destination-secret-password"


def test_typing_a_new_secret_replaces_it(admin_browser):
    destination = PostgresDestinationFactory()
    url = reverse("admin:destinations_destination_change", args=[destination.pk])
    admin_browser.post(url, form_data(destination, pg_password="new-password"))
    destination.refresh_from_db()
    assert destination.pg_password == "new-password"


@pytest.mark.parametrize(
    "kind, missing",
    [("postgres", "pg_host"), ("duckdb", "duckdb_path"), ("snowflake", "snowflake_account")],
)
def test_the_admin_form_names_the_field_a_kind_needs(admin_browser, kind, missing):
    response = admin_browser.post(
        reverse("admin:destinations_destination_add"),
        {"name": "x", "kind": kind, "pg_port": "5432", "pg_schema": "public"},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert missing in errors
    assert not Destination.objects.exists()
