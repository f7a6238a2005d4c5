"""Source kinds: postgres (CDC, the default), csv and http_json, validated per kind, with
secret HTTP headers stored encrypted and never shown."""

import pytest
from django.db import connection

from sources.models import Source

pytestmark = pytest.mark.django_db

CSV = {
    "name": "orders-export",
    "kind": "csv",
    "settings": {"path": "/data/orders/*.csv", "primary_key": ["id"]},
}
HTTP = {
    "name": "crm-api",
    "kind": "http_json",
    "settings": {
        "url": "https://crm.example.com/api/contacts",
        "records_path": "data",
        "pagination": {"style": "cursor", "cursor_path": "meta.next"},
        "incremental": {"field": "updated_at", "param": "updated_since"},
    },
    "secret_headers": {"Authorization": "Bearer tok-XYZ-very-secret"},
}


def test_a_source_without_a_kind_is_a_postgres_source_as_before(admin_api):
    response = admin_api.post(
        "/api/sources/",
        {"name": "pg", "pg_host": "db", "pg_database": "app", "pg_username": "u", "pg_password": "p"},
        format="json",
    )
    assert response.status_code == 201, response.data
    assert response.data["kind"] == "postgres"


def test_a_postgres_source_still_needs_host_database_and_user(admin_api):
    response = admin_api.post("/api/sources/", {"name": "pg", "kind": "postgres"}, format="json")
    assert response.status_code == 400
    assert set(response.data) >= {"pg_host", "pg_database", "pg_username"}


def test_csv_and_http_sources_are_created_without_any_postgres_settings(admin_api):
    for payload in (CSV, HTTP):
        response = admin_api.post("/api/sources/", payload, format="json")
        assert response.status_code == 201, response.data
    assert Source.objects.filter(kind__in=["csv", "http_json"], pg_host="").count() == 2


def test_two_csv_sources_do_not_clash_on_the_replication_slot_constraint(admin_api):
    for name in ("a", "b"):
        response = admin_api.post("/api/sources/", {**CSV, "name": name}, format="json")
        assert response.status_code == 201, response.data


@pytest.mark.parametrize(
    "payload, message",
    [
        ({**CSV, "settings": {"primary_key": ["id"]}}, "give either a path"),
        (
            {**CSV, "settings": {"path": "/x.csv", "delimiter": ";;"}},
            "delimiter: must be exactly one character",
        ),
        ({**CSV, "settings": {"path": "/x.csv", "encoding": "klingon"}}, "unknown encoding"),
        ({**CSV, "settings": {"path": "/x.csv", "delimter": ";"}}, "delimter: not a CSV setting"),
        ({**CSV, "settings": {"path": "/x.csv", "primary_key": "id"}}, "primary_key: must be a list"),
        ({**HTTP, "settings": {"url": "ftp://x"}}, "url: an http:// or https:// URL is required"),
        ({**HTTP, "settings": {**HTTP["settings"], "pagination": {"style": "pages"}}}, "pagination.style"),
        (
            {**HTTP, "settings": {**HTTP["settings"], "pagination": {"style": "page", "limit": 5}}},
            "pagination.limit: not a setting of the 'page' style",
        ),
        ({**HTTP, "settings": {**HTTP["settings"], "incremental": {"field": "x"}}}, 'needs "field"'),
        ({**HTTP, "settings": {**HTTP["settings"], "timeout_seconds": -1}}, "timeout_seconds"),
    ],
)
def test_kind_settings_that_cannot_work_are_refused_naming_the_setting(admin_api, payload, message):
    response = admin_api.post("/api/sources/", payload, format="json")
    assert response.status_code == 400
    assert message in str(response.data["settings"])
    assert not Source.objects.exists()


def test_secret_headers_are_write_only_named_but_never_shown_and_ciphertext_at_rest(admin_api, admin_browser):
    created = admin_api.post("/api/sources/", HTTP, format="json")
    assert created.status_code == 201, created.data
    detail = admin_api.get(f"/api/sources/{created.data['id']}/")
    listed = admin_api.get("/api/sources/")
    page = admin_browser.get(f"/admin/sources/source/{created.data['id']}/change/")
    for response in (created, detail, listed, page):
        assert "tok-XYZ-very-secret" not in response.content.decode()
    assert detail.data["secret_header_names"] == ["Authorization"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_headers FROM sources_source WHERE id = %s", [created.data["id"]])
        assert cursor.fetchone()[0].startswith("gAAAA")

    # Leaving them out keeps them; {} removes them.
    admin_api.patch(f"/api/sources/{created.data['id']}/", {"settings": HTTP["settings"]}, format="json")
    assert Source.objects.get().header_secrets() == {"Authorization": "Bearer tok-XYZ-very-secret"}
    admin_api.patch(f"/api/sources/{created.data['id']}/", {"secret_headers": {}}, format="json")
    assert Source.objects.get().header_secrets() == {}


def test_a_csv_source_refuses_secret_headers(admin_api):
    response = admin_api.post("/api/sources/", {**CSV, "secret_headers": {"X": "y"}}, format="json")
    assert response.status_code == 400
    assert "only HTTP JSON sources send headers" in str(response.data)


def test_the_wal_probe_skips_csv_and_http_sources(admin_api):
    from monitoring.models import WalMetric
    from monitoring.services import probe_sources

    admin_api.post("/api/sources/", CSV, format="json")
    assert probe_sources() == []
    assert not WalMetric.objects.exists()


def test_the_kind_of_a_source_that_pipelines_use_cannot_change(admin_api):
    from pipelines.tests.factories import PipelineFactory

    created = admin_api.post("/api/sources/", CSV, format="json")
    PipelineFactory(source=Source.objects.get(pk=created.data["id"]))
    response = admin_api.patch(f"/api/sources/{created.data['id']}/", HTTP, format="json")
    assert response.status_code == 400 and "kind" in response.data
    assert Source.objects.get().kind == "csv"


def test_csv_paths_outside_the_allowed_directories_are_refused(admin_api, settings, tmp_path):
    settings.ROSETTA_CSV_ALLOWED_DIRS = [str(tmp_path / "exports")]
    for path in (
        "/etc/passwd",
        str(tmp_path / "exports/../secrets/*.csv"),
        str(tmp_path / "exports-evil/a.csv"),
    ):
        response = admin_api.post("/api/sources/", {**CSV, "settings": {"path": path}}, format="json")
        assert response.status_code == 400, path
        assert "ROSETTA_CSV_ALLOWED_DIRS" in str(response.data["settings"])
    ok = admin_api.post(
        "/api/sources/", {**CSV, "settings": {"path": str(tmp_path / "exports/*.csv")}}, format="json"
    )
    assert ok.status_code == 201, ok.data
