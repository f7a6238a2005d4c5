"""What every destination writer shares: the Writer interface, its errors in words, the
names of Rosetta's own tables and columns, and the small pieces each writer would
otherwise word or compute on its own."""

import json

from psycopg import sql

from engine.batch import UNCHANGED
from engine.fold import _fastfold

from . import types


class ConnectionProblem(Exception):
    """The destination cannot be reached or used; the message says why in plain words
    and never contains a secret."""


class IncompatibleSchemaChange(Exception):
    """A source schema change the writer cannot apply to the destination table; the
    message names the table, the column, both types and what the operator should do."""


class UnstorableValue(Exception):
    """A source value the destination cannot hold in its column; the message names the
    table, the column and the value, and what the operator can do."""


def unchanged_columns_stored_as_null(count: int, source_table: str, columns: str, target: str) -> str:
    """The run note for updates whose unchanged TOAST columns had no destination value to keep."""
    return (
        f"{count} row(s) of {source_table} arrived as updates that left {columns} unchanged (TOASTed) "
        f"for keys the destination did not have: those columns are NULL in {target} until they change "
        "(refresh the table to fill them now)."
    )


CHECKPOINTS = "_rosetta_checkpoints"
REJECTS = "_rosetta_rejects"
# The columns every writer adds to a target table: the commit LSN of the row's last
# change, when Rosetta's transaction wrote it, and when it was deleted (soft delete).
LSN, SYNCED_AT, DELETED_AT = "_rosetta_lsn", "_rosetta_synced_at", "_rosetta_deleted_at"


def truncated_note(relation, target: str, soft_delete: bool) -> str:
    """The run note for a TRUNCATE on the source; `target` names the emptied table."""
    kept = " (rows kept as soft-deleted)." if soft_delete else "."
    return f"{relation.schema}.{relation.name} was truncated on the source: {target} emptied{kept}"


def group_by_unchanged(upserts: dict) -> dict[frozenset, list]:
    """The compiled one (engine/_fastfold.pyx) where it is built, else python_group_by_unchanged."""
    if _fastfold is None:
        return python_group_by_unchanged(upserts)
    return _fastfold.group_by_unchanged(upserts)


def python_group_by_unchanged(upserts: dict) -> dict[frozenset, list]:
    """The folded upserts ({key: (row, lsn)}) grouped by the set of columns left unchanged
    (TOASTed, UNCHANGED): one merge per group updates only the columns it has values for."""
    groups: dict[frozenset, list] = {}
    no_unchanged = frozenset()
    for row, lsn in upserts.values():
        if UNCHANGED in row.values():
            unchanged = frozenset(name for name, value in row.items() if value is UNCHANGED)
        else:
            unchanged = no_unchanged
        groups.setdefault(unchanged, []).append((row, lsn))
    return groups


def dump_state(state: dict | None) -> str | None:
    return None if state is None else json.dumps(state, separators=(",", ":"), default=str)


def load_state(text: str | None) -> dict | None:
    return None if not text else json.loads(text)


def like_pattern(search: str) -> str:
    """An ILIKE pattern matching `search` anywhere, its own % and _ taken literally."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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

    # The CDC contract (see engine/batch.py). `pipeline_key` names the
    # pipeline's row in the destination's _rosetta_checkpoints table.

    # "csv" or "binary": the COPY format the writer wants snapshot chunks in.
    # CSV chunks come from a session with TimeZone=UTC and DateStyle=ISO.
    snapshot_format = "csv"

    def snapshot_columns(self, relation) -> list[sql.Composable]:
        """The select list for the source's `COPY (SELECT ...) TO STDOUT`: one SQL
        expression per relation column, in relation order, giving what load_snapshot
        reads. By default a column as is, and a user-defined type (enum, domain,
        extension type) cast to text, because that is how writers store those."""
        return [
            sql.Identifier(column.name)
            if types.is_builtin(column.type_oid)
            else sql.SQL("{}::text").format(sql.Identifier(column.name))
            for column in relation.columns
        ]

    # True: apply_batch also takes batches whose values are PostgreSQL's text form
    # (TableChanges.text_values), which the source then need not convert: most
    # of the decoding time. Writers that need typed Python values leave it False.
    accepts_text_values = False

    # True: apply_batch and prepare_batch also take rows the fold kept as pgoutput's bytes
    # (TableChanges.wire_rows), and make them into dicts (TableChanges.materialize) before
    # reading them any other way than the compiled binary COPY does.
    reads_wire_rows = False

    # Fault injection for crash-safety tests (set by tests, None in production):
    # apply_batch calls it inside its transaction, after the batch's rows are
    # written, just before the commit (PostgreSQL's writes the checkpoint in
    # the commit's round trip; the others before the hook). If it raises,
    # nothing of the batch must be visible in the destination.
    before_commit_hook = None

    def read_checkpoint(self, pipeline_key: str) -> int:
        """End LSN of the last batch this destination committed for the pipeline; 0 if none."""
        raise NotImplementedError

    def read_checkpoint_state(self, pipeline_key: str) -> tuple[int, dict | None]:
        """(sequence, state) a batch source stored with its last part (see
        Batch.checkpoint_state); (0, None) before its first part."""
        raise NotImplementedError

    def reset_checkpoint(self, pipeline_key: str) -> bool:
        """Forget the pipeline's checkpoint (the next run starts over); True if there was one."""
        raise NotImplementedError

    # Reading what landed, for the pipeline's statistics and preview. `table` is
    # a target table of the pipeline (the caller checks), quoted by the writer.

    def count_rows(self, table: str) -> int | None:
        """Rows in the target table; None if it does not exist (yet)."""
        raise NotImplementedError

    def preview_rows(self, table: str, offset: int, limit: int, search: str = "") -> tuple[list, list, int]:
        """(column names, rows, rows matching) of a page of the table, in a stable order;
        `search` keeps the rows whose text contains it (case-insensitive)."""
        raise NotImplementedError

    def prepare_batch(self, batch) -> None:
        """Work on a Batch that needs no connection, done ahead by the run's reading thread
        while the batch before is applied (it may set TableChanges.prepared). apply_batch
        must give the same result whether this ran or not."""

    def apply_batch(self, pipeline_key: str, batch, soft_delete: bool = False):
        """Apply a Batch in ONE transaction: create or widen target tables, truncate,
        upsert, delete (or soft-delete), write batch.end_lsn as the checkpoint.
        Returns an ApplyResult. Replaying a batch at or below the checkpoint changes nothing."""
        raise NotImplementedError

    def align_table(self, relation, target_table: str, fills=None, not_sent=frozenset()):
        """Bring an existing target table in line with the source table's shape now
        (`relation`, from the source catalog; `fills`: {column: ColumnFill} for columns
        added with a value for existing rows), in its own transaction, as the
        schema-change planner says (schema_changes.py). A table not there yet is left
        to its snapshot. Returns a SchemaAlignment; raises IncompatibleSchemaChange."""
        raise NotImplementedError

    def load_snapshot(self, relation, target_table: str, chunks, snapshot_lsn: int) -> int:
        """Replace the target table's contents with a COPY stream (`chunks`: bytes in
        `snapshot_format`, columns in relation order). The old contents stay visible
        until the new copy is complete. Returns the number of rows loaded.

        `snapshot_lsn` is a lower bound: every change that the snapshot does not
        contain has a commit LSN above it (changes the snapshot already contains
        may also be replayed later; the merge must converge). Store it as the
        rows' _rosetta_lsn if you like; never use it to skip a later change."""
        raise NotImplementedError

    def close(self) -> None:
        pass
