from django.conf import settings

from engine.writers import ConnectionProblem, writer_for

from .models import Destination


def test_destination_connection(destination: Destination) -> tuple[bool, str]:
    """(ok, what happened in plain words). The message never holds a secret."""
    writer = writer_for(
        destination.kind, destination.writer_settings(), connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT
    )
    try:
        return True, writer.test_connection()
    except ConnectionProblem as problem:
        return False, str(problem)
