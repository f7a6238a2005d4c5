import pytest
from django.urls import reverse

from rosetta.testing import admin_form_data

from .factories import SourceFactory

pytestmark = pytest.mark.django_db


def test_the_source_page_never_renders_the_password(admin_browser):
    source = SourceFactory(pg_password="do-not-show-me")
    page = admin_browser.get(reverse("admin:sources_source_change", args=[source.pk])).content.decode()
    assert "do-not-show-me" not in page
    assert "A value is stored" in page


def test_blank_password_keeps_the_stored_one(admin_browser):
    source = SourceFactory(pg_password="keep-me")
    data = admin_form_data(source, ["pg_password"], pg_host="other.example.com")
    response = admin_browser.post(reverse("admin:sources_source_change", args=[source.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    source.refresh_from_db()
    assert (source.pg_host, source.pg_password) == ("other.example.com", "keep-me")
