import pytest

from sources.models import Source

pytestmark = pytest.mark.django_db

PAYLOAD = {
    "name": "production-postgres",
    "pg_host": "db.example.com",
    "pg_port": 5432,
    "pg_database": "app",
    "pg_username": "replicator",
    "pg_password": "s3cret-Pa55",
    "publication_name": "rosetta_pub",
    "slot_name": "rosetta_slot",
}


def test_creating_a_source_with_the_documented_payload_works(admin_api):
    response = admin_api.post("/api/sources/", PAYLOAD, format="json")
    assert response.status_code == 201, response.data
    source = Source.objects.get(name="production-postgres")
    assert source.pg_password == "s3cret-Pa55"
    assert "pg_password" not in response.data
    assert response.data["pg_password_set"] is True
