class ConnectionProblem(Exception):
    """The destination cannot be reached or used; the message says why in plain words
    and never contains a secret."""


class Writer:
    """What every destination kind implements.

    `settings` is the kind's settings without their prefix (for PostgreSQL:
    host, port, database, username, password, schema).
    """

    kind = ""

    def __init__(self, settings: dict, connect_timeout: int = 10):
        self.settings = settings
        self.connect_timeout = connect_timeout

    def test_connection(self) -> str:
        """Connect, check that Rosetta can write, and say what was found.
        Raises ConnectionProblem otherwise."""
        raise NotImplementedError
