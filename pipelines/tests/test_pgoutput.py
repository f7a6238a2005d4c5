"""The pgoutput decoder, on bytes a real PostgreSQL server produced in this test run."""

import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import psycopg
import pytest

from engine import pgoutput
from engine.batch import UNCHANGED
from engine.fold import BatchBuilder, TableSpec, _fastfold

BIG = "x" * 5000 + "".join(chr(65 + i % 26) for i in range(20000))  # compresses badly: TOASTed


def peek(conn, slot="s", publication="p"):
    rows = conn.execute(
        "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
        "'publication_names', %s, 'messages', 'true')",
        [slot, publication],
    ).fetchall()
    return [bytes(data) for (data,) in rows]


@pytest.fixture(scope="module")
def captured(pg_cluster):
    """Run one statement of each kind against a real slot and keep pgoutput's bytes."""
    dbname = "pgoutput_capture"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {dbname}")
    conn = psycopg.connect(pg_cluster.dsn(dbname), autocommit=True)
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET synchronous_commit = on")  # the test cluster's default (off) delays the flush
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    conn.execute(
        """
        CREATE TABLE t (
            id int, region text, amount numeric(12,2), ok bool, tags int[], doc jsonb,
            at timestamptz, plain_at timestamp, day date, uid uuid, raw bytea, big text,
            feeling mood, names text[], PRIMARY KEY (id, region)
        )
        """
    )
    conn.execute("ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL")
    conn.execute("CREATE TABLE f (id int, note text)")
    conn.execute("ALTER TABLE f REPLICA IDENTITY FULL")
    conn.execute("CREATE PUBLICATION p FOR TABLE t, f")
    conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
    messages = {}
    conn.execute(
        """
        INSERT INTO t VALUES (1, 'eu', 12.50, true, '{1,NULL,3}', '{"a": [1, 2.5], "b": null}',
            '2024-03-01 10:00:00.123+02', '2024-03-01 10:00:00', '2024-03-01',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x01ff', %s, 'happy', '{"a b",NULL,"c\\"d"}')
        """,
        [BIG],
    )
    messages["insert"] = peek(conn)
    conn.execute("UPDATE t SET amount = 13 WHERE id = 1")
    messages["update_toast_unchanged"] = peek(conn)
    conn.execute("UPDATE t SET id = 2 WHERE id = 1")
    messages["update_key_changed"] = peek(conn)
    conn.execute("INSERT INTO f VALUES (1, 'one')")
    conn.execute("UPDATE f SET note = 'uno'")
    conn.execute("DELETE FROM f")
    messages["full_identity"] = peek(conn)
    conn.execute("DELETE FROM t")
    messages["delete"] = peek(conn)
    conn.execute("TRUNCATE t, f RESTART IDENTITY")
    messages["truncate"] = peek(conn)
    conn.execute("SELECT pg_logical_emit_message(false, 'rosetta', 'hello')")
    conn.execute("BEGIN")
    conn.execute("SELECT pg_logical_emit_message(true, 'app', 'in a transaction')")
    conn.execute("COMMIT")
    messages["message"] = peek(conn)
    conn.execute("SELECT pg_replication_origin_create('upstream')")
    conn.execute("SELECT pg_replication_origin_session_setup('upstream')")
    conn.execute("BEGIN")
    conn.execute("SELECT pg_replication_origin_xact_setup('0/ABCDEF', now())")
    conn.execute("INSERT INTO f VALUES (7, 'from upstream')")
    conn.execute("COMMIT")
    conn.execute("SELECT pg_replication_origin_session_reset()")
    messages["origin"] = peek(conn)
    conn.close()
    yield messages
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute("SELECT pg_drop_replication_slot('s')")
        admin.execute(f"DROP DATABASE {dbname} WITH (FORCE)")


def decoded(raw):
    return [pgoutput.decode(data) for data in raw]


def of_type(messages, kind):
    return [m for m in messages if isinstance(m, kind)]


def test_begin_and_commit_carry_the_commit_lsn_and_time(captured):
    begin, *_, commit = decoded(captured["insert"])
    assert isinstance(begin, pgoutput.Begin) and isinstance(commit, pgoutput.Commit)
    assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
    assert begin.commit_time == commit.commit_time
    assert abs((datetime.now(UTC) - commit.commit_time).total_seconds()) < 600
    assert begin.xid > 0


def test_relation_message_describes_columns_types_and_key(captured):
    (relation,) = [m.relation for m in of_type(decoded(captured["insert"]), pgoutput.RelationMessage)]
    assert (relation.schema, relation.name, relation.replica_identity) == ("public", "t", "d")
    assert relation.column_names[:4] == ["id", "region", "amount", "ok"]
    assert relation.key_columns == ["id", "region"]
    amount = relation.columns[2]
    assert amount.type_oid == 1700 and amount.type_modifier == ((12 << 16) | 2) + 4


def test_type_message_names_a_user_defined_type(captured):
    (type_message,) = of_type(decoded(captured["insert"]), pgoutput.TypeMessage)
    assert (type_message.schema, type_message.name) == ("public", "mood")


def test_insert_values_convert_by_type(captured):
    builder = BatchBuilder(0, {("public", "t"): TableSpec("public", "t", "t")})
    for data in captured["insert"]:
        builder.feed(data)
    batch = builder.finish()
    ((row, lsn),) = batch.tables[("public", "t")].upserts.values()
    assert lsn == batch.start_lsn
    assert row == {
        "id": 1,
        "region": "eu",
        "amount": Decimal("12.50"),
        "ok": True,
        "tags": [1, None, 3],
        "doc": {"a": [1, 2.5], "b": None},
        "at": datetime(2024, 3, 1, 8, 0, 0, 123000, tzinfo=UTC),
        "plain_at": datetime(2024, 3, 1, 10, 0, 0),
        "day": date(2024, 3, 1),
        "uid": UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        "raw": b"\x01\xff",
        "big": BIG,
        "feeling": "happy",  # a user-defined type stays text
        "names": ["a b", None, 'c"d'],
    }


def test_update_marks_an_unchanged_toasted_value(captured):
    (update,) = of_type(decoded(captured["update_toast_unchanged"]), pgoutput.Update)
    assert update.old is None  # the key did not change
    assert update.new[11] is UNCHANGED
    assert bytes(update.new[2]) == b"13.00"


def test_update_that_changes_the_key_sends_the_old_key(captured):
    (update,) = of_type(decoded(captured["update_key_changed"]), pgoutput.Update)
    assert update.old_kind == "K"
    assert bytes(update.old[0]) == b"1" and bytes(update.old[1]) == b"eu"
    assert update.old[2] is None  # not part of the identity
    assert bytes(update.new[0]) == b"2"


def test_replica_identity_full_sends_whole_old_rows(captured):
    messages = decoded(captured["full_identity"])
    (update,) = of_type(messages, pgoutput.Update)
    (delete,) = of_type(messages, pgoutput.Delete)
    assert update.old_kind == "O" and [bytes(v) for v in update.old] == [b"1", b"one"]
    assert delete.old_kind == "O" and [bytes(v) for v in delete.old] == [b"1", b"uno"]


def test_delete_sends_the_key(captured):
    (delete,) = of_type(decoded(captured["delete"]), pgoutput.Delete)
    assert delete.old_kind == "K"
    assert bytes(delete.old[0]) == b"2" and bytes(delete.old[1]) == b"eu"


def test_truncate_lists_relations_and_options(captured):
    messages = decoded(captured["truncate"])
    (truncate,) = of_type(messages, pgoutput.Truncate)
    relations = {m.relation.oid: m.relation.name for m in of_type(messages, pgoutput.RelationMessage)}
    assert sorted(relations[oid] for oid in truncate.relation_oids) == ["f", "t"]
    assert truncate.restart_identity and not truncate.cascade


def test_logical_messages_transactional_or_not(captured):
    messages = of_type(decoded(captured["message"]), pgoutput.Message)
    assert [(m.transactional, m.prefix, m.content) for m in messages] == [
        (False, "rosetta", b"hello"),
        (True, "app", b"in a transaction"),
    ]
    assert all(m.lsn > 0 for m in messages)


def test_origin_names_the_upstream(captured):
    (origin,) = of_type(decoded(captured["origin"]), pgoutput.Origin)
    assert origin.name == "upstream" and origin.commit_lsn == 0xABCDEF


def test_unknown_message_types_are_skipped_with_a_log_line(captured, caplog):
    builder = BatchBuilder(0, {("public", "t"): TableSpec("public", "t", "t")})
    raw = list(captured["insert"])
    raw.insert(1, b"Zfuture message")
    with caplog.at_level(logging.WARNING):
        for data in raw:
            builder.feed(data)
    batch = builder.finish()
    assert len(batch.tables[("public", "t")].upserts) == 1
    assert "unknown type 'Z'" in caplog.text


def test_the_fold_paths_give_the_same_batch_on_these_bytes(captured):
    """Every column type, TOAST, key changes, FULL identity, origins: the fast paths
    (pipelines/tests/test_fold_paths.py) fold them as the general path does."""
    from pipelines.tests.test_fold_paths import folded

    if _fastfold is None:
        pytest.skip("engine/_fastfold is not built")
    specs = {("public", "t"): TableSpec("public", "t", "t"), ("public", "f"): TableSpec("public", "f", "f")}
    for name, raw in captured.items():
        reference = folded(raw, "none", specs=specs)
        for path in ("python", "compiled"):
            assert folded(raw, path, specs=specs) == reference, (name, path)
