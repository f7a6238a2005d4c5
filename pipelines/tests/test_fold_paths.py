"""The fold's fast paths (pure Python and compiled, engine/_fastfold.pyx) against the
general path, on pgoutput bytes a real server produced in this test run: the same bytes
and the same fold cases must give the same batch, whichever path read them."""

import gc
import types
import weakref

import psycopg
import pytest

from engine import fold, pgoutput
from engine.batch import UNCHANGED, Column
from engine.fold import BatchBuilder, TableSpec
from pipelines.tests.test_pgoutput import peek

# "wire": the compiled path keeping rows as pgoutput's bytes (BatchBuilder.wire_rows), made
# into dicts (TableChanges.materialize) before they are compared
PATHS = ["none", "python", "compiled", "wire"]
SPECS = {
    ("public", "k"): TableSpec("public", "k", "k"),
    ("public", "c"): TableSpec("public", "c", "c"),
    ("public", "fl"): TableSpec("public", "fl", "fl"),
    ("public", "g"): TableSpec("public", "g", "g", generated=[Column("y", 23)]),
}
BIG = "".join(chr(65 + (i * 7) % 26) for i in range(30000))  # TOASTed, stored uncompressed


@pytest.fixture(scope="module")
def cases(pg_cluster):
    """Transactions that exercise each fold rule, captured as pgoutput bytes."""
    dbname = "fold_paths"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {dbname}")
    conn = psycopg.connect(pg_cluster.dsn(dbname), autocommit=True)
    conn.execute("SET synchronous_commit = on")
    conn.execute("CREATE TABLE k (id int PRIMARY KEY, v text, big text)")
    conn.execute("ALTER TABLE k ALTER COLUMN big SET STORAGE EXTERNAL")
    conn.execute("CREATE TABLE c (a int, b text, v text, PRIMARY KEY (a, b))")
    conn.execute("CREATE TABLE fl (id int, v text)")
    conn.execute("ALTER TABLE fl REPLICA IDENTITY FULL")
    conn.execute("CREATE TABLE g (id int PRIMARY KEY, x int, y int GENERATED ALWAYS AS (x * 2) STORED)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY)")  # published, not copied
    conn.execute("CREATE PUBLICATION p FOR TABLE k, c, fl, g, other")
    conn.execute("SELECT pg_create_logical_replication_slot('fold_paths', 'pgoutput')")
    cases = {}
    conn.execute(
        "INSERT INTO k SELECT g, 'v' || g, CASE WHEN g = 5 THEN %s END FROM generate_series(1, 6) g", [BIG]
    )
    with conn.transaction():
        conn.execute("UPDATE k SET v = 'two' WHERE id = 2")
        conn.execute("DELETE FROM k WHERE id = 3")
        conn.execute("INSERT INTO k VALUES (3, 'three again', NULL)")
        conn.execute("UPDATE k SET id = 10 WHERE id = 4")  # a key change: old key sent
        conn.execute("UPDATE k SET v = 'five' WHERE id = 5")  # big stays UNCHANGED
        conn.execute("UPDATE k SET id = 50 WHERE id = 5")  # a key change with big unchanged
        conn.execute("INSERT INTO k VALUES (7, NULL, 'tab\there, newline\nthere, back\\slash, é')")
        conn.execute("DELETE FROM k WHERE id = 7")
        conn.execute("INSERT INTO other VALUES (1)")
    with conn.transaction():
        conn.execute("INSERT INTO c VALUES (1, 'x', 'one'), (2, 'y', 'two')")
        conn.execute("UPDATE c SET b = 'z' WHERE a = 1")
        conn.execute("DELETE FROM c WHERE a = 2")
        conn.execute("INSERT INTO fl VALUES (1, 'one'), (2, 'two')")
        conn.execute("UPDATE fl SET v = 'uno' WHERE id = 1")
        conn.execute("DELETE FROM fl WHERE id = 2")
        conn.execute("INSERT INTO g VALUES (1, 5)")
        conn.execute("UPDATE g SET x = 6")
    cases["changes"] = peek(conn, slot="fold_paths")
    conn.execute("INSERT INTO k VALUES (100, 'before truncate', NULL)")
    conn.execute("TRUNCATE k")
    conn.execute("INSERT INTO k VALUES (101, 'after truncate', NULL)")
    cases["truncate"] = peek(conn, slot="fold_paths")
    conn.execute("INSERT INTO k VALUES (200, 'moved', %s)", [BIG])
    with conn.transaction():
        conn.execute("INSERT INTO k VALUES (201, 'inserted', NULL)")
        conn.execute("DELETE FROM k WHERE id = 201")
        conn.execute("UPDATE k SET id = 201 WHERE id = 200")  # big stays UNCHANGED
    cases["moved"] = peek(conn, slot="fold_paths")
    with conn.transaction():  # a column added between two inserts: two shapes of k in one batch
        conn.execute("INSERT INTO k VALUES (300, 'before', NULL)")
        conn.execute("ALTER TABLE k ADD COLUMN w text")
        conn.execute("INSERT INTO k VALUES (301, 'after', NULL, 'w')")
    cases["altered"] = peek(conn, slot="fold_paths")
    conn.close()
    yield cases
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute("SELECT pg_drop_replication_slot('fold_paths')")
        admin.execute(f"DROP DATABASE {dbname} WITH (FORCE)")


def builder_for(path: str, checkpoint: int = 0, specs=SPECS) -> BatchBuilder:
    if path == "wire":
        return BatchBuilder(checkpoint, specs, text_values=True, wire_rows=True)
    return BatchBuilder(checkpoint, specs, text_values=True, fast_path=path)


def folded(raw, path: str, checkpoint: int = 0, specs=SPECS):
    """Everything a fold produces that a run uses, comparable across paths."""
    builder = builder_for(path, checkpoint, specs)
    for data in raw:
        builder.feed(data)
    batch = builder.finish()
    for changes in batch.tables.values():
        changes.materialize()
    tables = {
        key: (
            changes.relation,
            changes.truncated,
            list(changes.upserts.items()),  # the order too: the writers stage rows in it
            list(changes.deletes.items()),
            (changes.inserted, changes.updated, changes.deleted),
            changes.reshaped,
            sorted(changes.fresh),
        )
        for key, changes in batch.tables.items()
    }
    counts = (batch.start_lsn, batch.end_lsn, batch.transactions, batch.changes, batch.bytes_read)
    progress = (
        builder.messages,
        builder.skipped_transactions,
        builder.skipped_end_lsn,
        builder.read_position,
    )
    return tables, counts, progress, builder.moved_keys


def test_compiled_module_is_built_and_used():
    if fold._fastfold is None:
        pytest.skip("engine/_fastfold is not built (scripts/setup.sh or scripts/build_fastfold.sh builds it)")
    builder = BatchBuilder(0, SPECS, text_values=True)
    assert builder.feed.__func__ is fold._fastfold.feed
    typed = BatchBuilder(0, SPECS)  # typed values (Snowflake) always take the general path
    assert typed.feed.__func__ is BatchBuilder.feed


def test_a_compiled_module_built_from_another_source_is_not_used():
    """A pull without scripts/setup.sh leaves the old module, which lacks what this code calls."""
    assert fold.usable_fastfold(types.SimpleNamespace(INTERFACE=fold.FASTFOLD_INTERFACE))
    assert not fold.usable_fastfold(types.SimpleNamespace(INTERFACE=fold.FASTFOLD_INTERFACE - 1))
    assert not fold.usable_fastfold(types.SimpleNamespace(feed=None))  # built before it had INTERFACE


def test_a_builder_is_freed_without_the_garbage_collector(cases):
    """The runner folds with gc off: a builder (and the part it holds) must go when dropped."""
    gc.disable()
    try:
        for path in PATHS:
            builder = builder_for(path)
            for data in cases["changes"]:
                builder.feed(data)
            gone = weakref.ref(builder.finish())
            del builder
            assert gone() is None, path
    finally:
        gc.enable()


def test_fold_cases_give_the_same_batch_on_every_path(cases):
    if fold._fastfold is None:
        pytest.skip("engine/_fastfold is not built")
    reference = folded(cases["changes"], "none")
    for path in PATHS[1:]:
        assert folded(cases["changes"], path) == reference, path
    tables = reference[0]
    k_upserts = dict(tables[("public", "k")][2])
    assert sorted(k_upserts) == [("1",), ("10",), ("2",), ("3",), ("50",), ("6",)]
    assert k_upserts[("2",)][0]["v"] == "two"
    assert k_upserts[("3",)][0]["v"] == "three again"
    assert k_upserts[("50",)][0] == {"id": "50", "v": "five", "big": BIG}  # filled from the insert
    assert sorted(dict(tables[("public", "k")][3])) == [("4",), ("5",), ("7",)]
    assert dict(tables[("public", "c")][2]).keys() == {("1", "z")}
    assert dict(tables[("public", "c")][3]).keys() == {("1", "x"), ("2", "y")}
    assert dict(tables[("public", "fl")][2])[("1", "uno")][0] == {"id": "1", "v": "uno"}
    assert dict(tables[("public", "g")][2])[("1",)][0] == {"id": "1", "x": "6", "y": UNCHANGED}
    assert ("public", "other") not in tables
    assert reference[3] == {("public", "g"): {("1",)}}  # its generated column is read from the source


def test_checkpoint_skip_and_truncate_are_the_same_on_every_path(cases):
    if fold._fastfold is None:
        pytest.skip("engine/_fastfold is not built")
    first = folded(cases["changes"], "none")
    second_commit = first[1][1]  # end of the last transaction: skip everything before it
    for path in PATHS:
        skipped = folded(cases["changes"], path, checkpoint=second_commit)
        assert skipped[0] == {} and skipped[2][1] == 3, path
    reference = folded(cases["truncate"], "none")
    assert reference[0][("public", "k")][1] is True
    assert list(dict(reference[0][("public", "k")][2])) == [("101",)]
    for path in PATHS[1:]:
        assert folded(cases["truncate"], path) == reference, path


def test_a_truncated_message_fails_alike_on_every_path(cases):
    if fold._fastfold is None:
        pytest.skip("engine/_fastfold is not built")
    raw = list(cases["changes"])
    position = next(i for i, data in enumerate(raw) if data[:1] == b"I")
    raw[position] = raw[position][:-3]
    errors = set()
    for path in PATHS:
        with pytest.raises(Exception) as caught:
            folded(raw, path)
        errors.add((type(caught.value), str(caught.value)))
    assert len(errors) == 1, errors


def shortened(message: bytes, count: int) -> bytes:
    """An Insert's or a key Delete's message with only the first `count` columns of its tuple."""
    pos = 8  # after kind, relation OID, 'N'/'K' and the column count
    for _ in range(count):
        kind = message[pos : pos + 1]
        pos += 5 + int.from_bytes(message[pos + 1 : pos + 5], "big") if kind == b"t" else 1
    return message[:6] + count.to_bytes(2, "big") + message[8:pos]


def test_a_tuple_of_fewer_columns_than_its_relation_folds_alike_on_every_path(cases):
    """Not what a server sends; the compiled path once read the key past the end of the
    value list (a crash, or a wrong key), where the others raised."""
    if fold._fastfold is None:
        pytest.skip("engine/_fastfold is not built")
    raw = list(cases["changes"])
    tried = 0
    for position, data in enumerate(raw):
        if data[:1] not in (b"D", b"I") or data[5:6] not in (b"K", b"N"):
            continue
        for count in range(int.from_bytes(data[6:8], "big")):
            changed = [*raw[:position], shortened(data, count), *raw[position + 1 :]]
            outcomes = set()
            for path in PATHS:
                try:
                    outcomes.add(repr(folded(changed, path)))
                except Exception as error:  # noqa: BLE001 - the error is the outcome compared
                    outcomes.add((type(error), str(error)))
            assert len(outcomes) == 1, (data[:1], count, outcomes)
            tried += 1
    assert tried >= 10


def fresh_keys(tables, table: str) -> list:
    """The keys a writer may insert without a conflict check: first inserted in the
    batch, and still to be upserted."""
    _, _, upserts, _, _, _, fresh = tables[("public", table)]
    return sorted(set(fresh) & dict(upserts).keys())


def test_fresh_keys_are_the_keys_first_inserted_in_the_batch_on_every_path(cases):
    """A key whose first change in the batch is an INSERT had no row at the checkpoint;
    one updated, deleted or moved there first did (TableChanges.fresh)."""
    commits = [
        message.end_lsn
        for message in (pgoutput.decode(data, True) for data in cases["changes"])
        if isinstance(message, pgoutput.Commit)
    ]
    for path in PATHS:
        tables = folded(cases["changes"], path)[0]
        # 3 was deleted and inserted again after its first insert; 10 and 50 are keys moved to
        assert fresh_keys(tables, "k") == [("1",), ("2",), ("3",), ("6",)], path
        # g's generated column is read from the source later: its rows are merged as before
        assert fresh_keys(tables, "c") == [] and fresh_keys(tables, "g") == [], path
        # the inserts of 1..6 already applied: 2 was updated, 3 deleted and inserted again
        after_first = folded(cases["changes"], path, checkpoint=commits[0])[0]
        assert fresh_keys(after_first, "k") == [], path
        assert fresh_keys(after_first, "g") == [], path
        assert fresh_keys(folded(cases["truncate"], path)[0], "k") == [("101",)], path


def test_a_key_whose_row_needs_the_destinations_value_is_not_fresh(cases):
    """201 was inserted (fresh) and deleted, then 200 moved to it with its TOASTed value
    unchanged: that value is in the destination under 200, so 201 must be merged."""
    commits = [
        message.end_lsn
        for message in (pgoutput.decode(data, True) for data in cases["moved"])
        if isinstance(message, pgoutput.Commit)
    ]
    reference = folded(cases["moved"], "none", checkpoint=commits[0])
    for path in PATHS:
        tables = folded(cases["moved"], path, checkpoint=commits[0])[0]
        assert tables == reference[0], path
        assert dict(tables[("public", "k")][2])[("201",)][0]["big"] is UNCHANGED, path
        assert fresh_keys(tables, "k") == [], path


def test_rows_kept_as_pgoutputs_bytes_copy_as_their_dicts_do(cases):
    """The compiled fold keeps a writer's rows as pgoutput's bytes (wire_rows): copy_binary
    reads them where they are, to the same payload as from their dicts; a reader that
    needs a dict refuses them instead of reading every column as missing."""
    if fold._fastfold is None:
        pytest.skip("engine/_fastfold is not built")
    builder = builder_for("wire")
    for data in cases["changes"]:
        builder.feed(data)
    changes = builder.finish().tables[("public", "k")]
    rows = list(changes.upserts.values())
    wire = [row for row, _ in rows if type(row) is fold._fastfold.WireRow]
    assert changes.wire_rows and len(wire) >= 3  # the inserts and updates of whole rows
    columns, kinds = ("id", "v", "big"), ("int4", "text", "text")
    tail = (b"\x00" * 8,)
    payload = fold._fastfold.copy_binary(rows, columns, kinds, tail)
    for order in (("big", "id", "v"), ("v", "missing", "id")):  # other orders, a column not there
        reordered = fold._fastfold.copy_binary(rows, order, ("text",) * len(order), tail)
        expected = fold._fastfold.copy_binary(
            [(row if type(row) is dict else row.as_dict(), lsn) for row, lsn in rows],
            order,
            ("text",) * len(order),
            tail,
        )
        assert reordered == expected
    with pytest.raises(TypeError, match="materialize"):
        fold._fastfold.copy_text(rows, columns, "")
    assert fold._fastfold.copy_binary(rows, columns, ("int4", "int4", "text"), tail) is None  # 'v' is no int

    changes.materialize()
    assert not changes.wire_rows
    assert all(type(row) is dict for row, _ in changes.upserts.values())
    assert fold._fastfold.copy_binary(list(changes.upserts.values()), columns, kinds, tail) == payload
    assert fold._fastfold.copy_text(list(changes.upserts.values()), columns, "") is not None


def test_rows_of_two_shapes_of_a_table_copy_as_their_dicts_do(cases):
    if fold._fastfold is None:
        pytest.skip("engine/_fastfold is not built")
    assert folded(cases["altered"], "wire") == folded(cases["altered"], "none")
    builder = builder_for("wire")
    for data in cases["altered"]:
        builder.feed(data)
    changes = builder.finish().tables[("public", "k")]
    rows = list(changes.upserts.values())
    assert [type(row) for row, _ in rows] == [fold._fastfold.WireRow] * 2
    assert rows[0][0].template.keys() != rows[1][0].template.keys()
    columns, kinds = ("id", "v", "big", "w"), ("int4", "text", "text", "text")
    dicts = [(row.as_dict(), lsn) for row, lsn in rows]
    assert [row for row, _ in dicts] == [
        {"id": "300", "v": "before", "big": None},
        {"id": "301", "v": "after", "big": None, "w": "w"},
    ]
    payload = fold._fastfold.copy_binary(rows, columns, kinds, ())
    assert payload is not None and payload == fold._fastfold.copy_binary(dicts, columns, kinds, ())
