"""The DuckDB destination: an embedded database file on the workers."""

from pathlib import Path

import duckdb

from .base import ConnectionProblem, Writer


class DuckDBWriter(Writer):
    kind = "duckdb"

    def connect(self) -> duckdb.DuckDBPyConnection:
        path = Path(self.settings["path"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return duckdb.connect(str(path))
        except (OSError, duckdb.Error) as error:
            raise ConnectionProblem(f"Cannot open DuckDB file {path}: {error}") from None

    def test_connection(self) -> str:
        with self.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS _rosetta_write_test (x INTEGER)")
            conn.execute("DROP TABLE _rosetta_write_test")
            version = conn.execute("SELECT version()").fetchone()[0]
        return f"Opened DuckDB {version} file {self.settings['path']} and wrote to it."
