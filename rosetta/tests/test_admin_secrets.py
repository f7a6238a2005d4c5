"""No admin page renders a stored secret, for a view-only user or a superuser."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Permission
from django.urls import reverse

from destinations.tests.factories import PostgresDestinationFactory, SnowflakeDestinationFactory
from engine.writers.snowflake import load_private_key, public_key_fingerprint
from sources.tests.factories import SourceFactory

pytestmark = pytest.mark.django_db

PASSPHRASE = "passphrase-that-must-stay-hidden"


@pytest.fixture
def snowflake_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    ).decode()


@pytest.fixture
def objects_with_secrets(snowflake_pem):
    return {
        "source": SourceFactory(pg_password="source-password-that-must-stay-hidden"),
        "postgres": PostgresDestinationFactory(pg_password="destination-password-that-must-stay-hidden"),
        "snowflake": SnowflakeDestinationFactory(
            snowflake_private_key=snowflake_pem, snowflake_private_key_passphrase=PASSPHRASE
        ),
    }


@pytest.fixture
def view_only_browser(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="viewer-pass", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_source", "view_destination"]))
    client.force_login(user)
    return client


def secret_fragments(objects, pem):
    # A fragment of the PEM's body is enough: the page must not hold any part of the key.
    pem_body_line = pem.splitlines()[3]
    return [
        objects["source"].pg_password,
        objects["postgres"].pg_password,
        PASSPHRASE,
        pem_body_line,
    ]


def admin_pages(objects):
    source, postgres, snowflake = objects["source"], objects["postgres"], objects["snowflake"]
    pages = [reverse("admin:sources_source_changelist"), reverse("admin:destinations_destination_changelist")]
    for obj, model in [
        (source, "sources_source"),
        (postgres, "destinations_destination"),
        (snowflake, "destinations_destination"),
    ]:
        pages.append(reverse(f"admin:{model}_change", args=[obj.pk]))
        pages.append(reverse(f"admin:{model}_history", args=[obj.pk]))
        pages.append(reverse(f"admin:{model}_delete", args=[obj.pk]))
    return pages


@pytest.mark.parametrize("browser_fixture", ["view_only_browser", "admin_browser"])
def test_no_admin_page_renders_a_stored_secret(request, browser_fixture, objects_with_secrets, snowflake_pem):
    browser = request.getfixturevalue(browser_fixture)
    fragments = secret_fragments(objects_with_secrets, snowflake_pem)
    pages_seen = 0
    for url in admin_pages(objects_with_secrets):
        response = browser.get(url)
        assert response.status_code in (200, 403), url
        pages_seen += response.status_code == 200
        page = response.content.decode()
        for fragment in fragments:
            assert fragment not in page, f"{url} shows a secret"
    assert pages_seen >= 8


def test_a_view_only_user_sees_whether_secrets_are_set_and_the_key_fingerprint(
    view_only_browser, objects_with_secrets, snowflake_pem
):
    snowflake = objects_with_secrets["snowflake"]
    page = view_only_browser.get(
        reverse("admin:destinations_destination_change", args=[snowflake.pk])
    ).content.decode()
    fingerprint = public_key_fingerprint(load_private_key(snowflake_pem, None, PASSPHRASE))
    assert fingerprint in page
    assert "not set" in page  # the PostgreSQL password of a Snowflake destination

    source_page = view_only_browser.get(
        reverse("admin:sources_source_change", args=[objects_with_secrets["source"].pk])
    ).content.decode()
    assert '<div class="readonly">set</div>' in source_page


def test_a_key_typed_into_a_form_with_errors_is_not_rendered_back(admin_browser, snowflake_pem):
    response = admin_browser.post(
        reverse("admin:destinations_destination_add"),
        {"name": "", "kind": "snowflake", "snowflake_private_key": snowflake_pem},
    )
    assert response.status_code == 200  # the form came back with errors
    assert snowflake_pem.splitlines()[3] not in response.content.decode()
