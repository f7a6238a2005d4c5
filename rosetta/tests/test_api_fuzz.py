"""Schemathesis against the project's own /api/schema/: every operation, authenticated, a bounded
number of generated requests each. No request may get a 500, and every response must match the
schema (body and content type)."""

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from rosetta.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# The coverage phase sends hundreds of requests per operation; generated (fuzzing) examples
# and the schema's own examples stay within the suite's time budget.
schema.config.phases.coverage.enabled = False

# Ten generated requests per operation (about 370 in all) keep the run near a minute.
EXAMPLES_PER_OPERATION = 10


@pytest.fixture(autouse=True)
def every_component_alive():
    """/api/health/ answers 503 by design when a worker or Beat is not seen; fuzzing
    looks for server errors in the API itself, so the components are seen alive."""
    from rosetta import heartbeat

    heartbeat.record("worker")
    heartbeat.record("beat")


@pytest.fixture
def token(admin_user):
    return Token.objects.create(user=admin_user).key


@pytest.fixture(autouse=True)
def keep_the_test_transactions_connection():
    """The WSGI app closes the database connection after each request; Django's own test
    client avoids that the same way (the test's transaction lives on that connection)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    cache.clear()  # generated logins fail: leave no lockout behind for later tests


@pytest.mark.django_db
@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_generated_request_gets_a_server_error_or_an_answer_outside_the_schema(case, token, settings):
    settings.ROSETTA_CONNECT_TIMEOUT = 1
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
