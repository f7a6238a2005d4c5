"""The PostgreSQL writer's binary CDC COPY (engine/_fastfold.pyx copy_binary) against its
text COPY: for every kind, edge values applied both ways must store the same rows; values
a parser does not take go as text; a target column whose type is not the source's goes as
text."""

import math
import random
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from engine.batch import UNCHANGED
from engine.fold import _fastfold
from engine.writers import postgres
from engine.writers.postgres import PostgresWriter

from .batches import make_batch, relation_of, table_changes, wait_until_waiting_for_a_lock

pytestmark = pytest.mark.skipif(
    _fastfold is None, reason="engine/_fastfold is not built (scripts/build_fastfold.sh builds it)"
)

# type -> (values binary takes, values it leaves to text, values both paths refuse: the
# server checks the typmod of either; of the forms a parser takes, a few it cannot hold)
# Texts as pgoutput sends them (engine.pgtypes.SESSION_SETTINGS), and other forms the
# text COPY accepts.
EDGES = {
    "smallint": (["0", "-1", "-32768", "32767", "007"], ["+5", " 42"], ["32768"]),
    "int": (["-2147483648", "2147483647", "-0"], ["+7", "42 "], ["2147483648"]),
    "bigint": (
        ["-9223372036854775808", "9223372036854775807", "1"],
        ["+1", "00000000000000000000001"],
        ["9223372036854775808", "99999999999999999999"],
    ),
    "bool": (["t", "f"], ["true", "yes", "1"], ["maybe"]),
    "text": (
        ["", "é, 漢字, 🙂", "tab\there\nnew line", "back\\slash", "\\N", " padded ", "x" * 100_000],
        [],
        [],
    ),
    "varchar(5)": (["abc", "abcde", "abc        ", ""], [], ["abcdef"]),
    "char(3)": (["ab", "abc", "", "é"], [], ["abcd"]),
    "json": (['{"a": 1, "a": 2}', "[]", '"é\\n"', '  {"b" : [1, 2.50]}  ', "null"], [], ["{bad"]),
    "jsonb": (['{"a": 1, "a": 2}', '{"n": 1.000}', "12345678901234567890123", '"\\u00e9"'], [], ["{bad"]),
    "numeric": (
        [
            "0",
            "-0",
            "0.000",
            "-0.001",
            "0.0001",
            "10000",
            "9999.9999",
            "00012.50",
            "100000000",
            "123456789012345678901234567890.123456789012345678901234567890",
            "-98765.4321000",
            "1" + "0" * 999,
            "0." + "0" * 997 + "1",
        ],
        ["NaN", "Infinity", "-Infinity", "1e5", " 1", "1" * 1001, ".5", "5."],
        ["1.2.3"],
    ),
    "numeric(12,2)": (
        ["1234567890.125", "-0.005", "0.004", "9999999999.99", "1.1"],
        ["NaN"],
        ["12345678901.00"],
    ),
    "real": (
        ["0", "-0", "1.5", "0.1", "3.4028235e+38", "1e-45", "1.17549435e-38", "NaN", "Infinity", "-Infinity"],
        ["inf", " 1.5", "1E5"],
        ["1e39", "1e-50"],
    ),
    "double precision": (
        [
            "1e-300",
            "4.9e-324",
            "2.2250738585072014e-308",
            "-1.7976931348623157e+308",
            "0.30000000000000004",
            "123456789012345680000",
            "-0",
            "NaN",
            "-Infinity",
        ],
        ["1E5", "+1.5", "infinity"],
        ["1e400", "1e-400"],
    ),
    "date": (
        ["2024-02-29", "0001-01-01", "1999-12-31", "2000-01-01", "9999-12-31", "10000-01-01", "200000-06-15"],
        ["infinity", "-infinity", "0044-03-15 BC", "200001-01-01", "2024-2-3", "20240203"],
        ["2023-02-29"],
    ),
    "timestamp": (
        [
            "2024-02-29 13:14:15",
            "2024-02-29 13:14:15.1",
            "2024-02-29 13:14:15.12",
            "2024-02-29 13:14:15.123",
            "2024-02-29 13:14:15.1234",
            "2024-02-29 13:14:15.12345",
            "2024-02-29 13:14:15.123456",
            "1999-12-31 23:59:59.999999",
            "0001-01-01 00:00:00",
            "1066-10-14 09:00:00.000001",
            "10000-01-01 00:00:00",
        ],
        [
            "infinity",
            "0044-03-15 12:00:00 BC",
            "2024-01-01T00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 00:00:00.1234567",
            "2024-01-01 00:00:00+02",
        ],
        ["2024-13-01 00:00:00"],
    ),
    "timestamp(3)": (
        ["2024-01-01 00:00:00.123456", "1999-12-31 23:59:59.9995", "1999-12-31 23:59:59.9994"],
        [],
        [],
    ),
    "timestamptz": (
        [
            "2024-02-29 13:14:15.123456+00",
            "2024-02-29 13:14:15+05:30",
            "1999-12-31 23:59:59-08",
            "1900-01-01 00:00:00+00:19:32",
            "2000-01-01 00:00:00+15:59:59",
            "2000-01-01 00:00:00-15",
            "10000-01-01 00:00:00+00",
        ],
        [
            "2024-02-29 13:14:15",
            "infinity",
            "2024-02-29 13:14:15 UTC",
            "2024-01-01 00:00:00+1",
            "0044-03-15 12:00:00+00 BC",
        ],
        ["2024-01-01 00:00:00+16"],
    ),
    "uuid": (
        [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "00000000-0000-0000-0000-000000000000",
        ],
        ["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc999c0b4ef8bb6d6bb9bd380a11"],
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g"],
    ),
}


@pytest.fixture
def pg_writer(pg_writer):
    pg_writer.binary_copy_min_rows = 0  # the tests' parts are small
    return pg_writer


@pytest.fixture
def copies(monkeypatch):
    """Whether each of the writer's CDC COPYs went binary (True) or as text (False)."""
    made = []

    def recorded(*args, **kwargs):
        result = copy_binary(*args, **kwargs)
        made.append(result is not None)
        return result

    copy_binary = postgres._copy_binary
    monkeypatch.setattr(postgres, "_copy_binary", recorded)
    return made


@pytest.fixture
def writers(pg_destination, pg_reader):
    """A writer with binary COPY and one without, into a destination whose sessions use
    another TimeZone and DateStyle than the source's."""
    database = pg_destination["database"]
    pg_reader.execute(f"ALTER DATABASE \"{database}\" SET DateStyle = 'SQL, DMY'")
    pg_reader.execute(f"ALTER DATABASE \"{database}\" SET TimeZone = 'Asia/Kolkata'")
    binary, text = PostgresWriter(pg_destination), PostgresWriter(pg_destination)
    binary.binary_copy_min_rows = 0  # the tests' parts are small
    text.binary_copy = False
    yield binary, text
    binary.close()
    text.close()


def source_relation(source_conn, type_name: str):
    source_conn.execute(f"CREATE TABLE public.edges (id int PRIMARY KEY, v {type_name})")
    return relation_of(source_conn, "public", "edges")


def apply(writer, relation, target, values, lsn, fresh=True, unchanged_every=0, first_id=0):
    upserts = {}
    for n, value in enumerate(values):
        row = {"id": str(first_id + n)}
        if value is not ...:  # ...: the column missing from the row, which is NULL
            row["v"] = UNCHANGED if unchanged_every and n % unchanged_every == 0 else value
        upserts[(str(first_id + n),)] = (row, lsn + n)
    changes = table_changes(
        relation, upserts=upserts, target_table=target, fresh=list(upserts) if fresh else (), text_values=True
    )
    writer.apply_batch(target, make_batch(changes, end_lsn=lsn + len(values)))


def stored(pg_reader, target: str) -> list[str]:
    return [
        row[0]
        for row in pg_reader.execute(
            f"SELECT (id, v, _rosetta_lsn, _rosetta_deleted_at)::text FROM analytics.{target} ORDER BY id"
        ).fetchall()
    ]


@pytest.mark.parametrize("type_name", list(EDGES))
def test_binary_copy_stores_what_text_copy_stores(type_name, writers, pg_reader, source_conn, copies):
    relation = source_relation(source_conn, type_name)
    binary_writer, text_writer = writers
    accepted, left_to_text, refused = EDGES[type_name]
    values = [*accepted, None, ...]
    # fresh rows (a COPY into the table), then updates of them, rotated and some with the
    # value unchanged (a merge from a staging table, in groups by unchanged columns)
    for writer, target in [(binary_writer, "by_binary"), (text_writer, "by_text")]:
        apply(writer, relation, target, values, lsn=1000)
        apply(writer, relation, target, values[1:] + values[:1], lsn=2000, fresh=False, unchanged_every=3)
    assert stored(pg_reader, "by_binary") == stored(pg_reader, "by_text")
    assert copies == [True, True, True, False, False, False]
    # the fresh rows' _rosetta_synced_at is the transaction's time, as the merge writes it
    assert pg_reader.execute(
        "SELECT count(*) FROM analytics.by_binary b JOIN analytics._rosetta_checkpoints c "
        "ON c.pipeline_key = 'by_binary' WHERE b._rosetta_synced_at IS DISTINCT FROM c.updated_at"
    ).fetchone() == (0,)

    copies.clear()
    for number, value in enumerate(left_to_text):  # among values binary takes: all go as text
        for writer, target in [(binary_writer, "by_binary"), (text_writer, "by_text")]:
            apply(writer, relation, target, [*accepted, value], lsn=10_000 * (number + 1), fresh=False)
        assert stored(pg_reader, "by_binary") == stored(pg_reader, "by_text"), value
    assert copies == [False, False] * len(left_to_text)
    kind = postgres.BINARY_COPY_KINDS[relation.columns[1].type_oid]
    for value in accepted:
        assert _fastfold.copy_binary([({"v": value}, 1)], ("v",), (kind,), ()) is not None, value
    for value in left_to_text:
        assert _fastfold.copy_binary([({"v": value}, 1)], ("v",), (kind,), ()) is None, value
    for value in refused:
        for writer, target in [(binary_writer, "by_binary"), (text_writer, "by_text")]:
            with pytest.raises(psycopg.errors.DataError):
                apply(writer, relation, target, [value], lsn=1_000_000)


@pytest.mark.parametrize("new_type", ["bigint", "text", "numeric"])
def test_a_target_column_changed_by_hand_takes_text(new_type, pg_writer, pg_reader, source_conn, copies):
    """The writer checks the target's types in every transaction, not only when it first
    sees the table: 1094861636 as int4 in binary is the bytes of "ABCD"."""
    relation = source_relation(source_conn, "int")
    apply(pg_writer, relation, "edges", ["1"], lsn=1000)
    pg_reader.execute(f"ALTER TABLE analytics.edges ALTER v TYPE {new_type}")
    apply(pg_writer, relation, "edges", ["1094861636", "-7"], lsn=2000, fresh=False)
    assert pg_reader.execute("SELECT v::text FROM analytics.edges ORDER BY id").fetchall() == [
        ("1094861636",),
        ("-7",),
    ]
    assert copies == [True, False]


@pytest.mark.parametrize("known", [True, False], ids=["a table the writer knows", "its first part"])
def test_a_type_changed_after_a_repeatable_read_transaction_began_takes_text(
    pg_destination, pg_reader, source_conn, copies, monkeypatch, known
):
    """Under REPEATABLE READ, pg_attribute reads as of the transaction's snapshot: a type
    change committed after it began, before the writer's lock, must still be seen. A
    table the writer knows is locked in the part's first round trip: the change comes
    while that round trip waits for the checkpoint's row. A table new to the writer is
    locked after its checks: the change comes just before. (New keys: an update of a row
    the change rewrote fails to serialize, and is retried.)"""
    pg_reader.execute(
        f"ALTER DATABASE \"{pg_destination['database']}\" SET default_transaction_isolation = 'repeatable read'"
    )
    relation = source_relation(source_conn, "int")
    first = PostgresWriter(pg_destination)
    first.binary_copy_min_rows = 0
    apply(first, relation, "edges", ["1"], lsn=1000)
    pg_reader.execute("SET lock_timeout = '10s'")  # an error, not a hang, if the writer held a lock
    if known:
        writer = first
        pid = writer._connection().info.backend_pid
        pool = ThreadPoolExecutor(1)
        with psycopg.connect(pg_reader.info.dsn) as holder:  # a transaction holding the checkpoint
            holder.execute("SELECT 1 FROM analytics._rosetta_checkpoints FOR UPDATE")
            applied = pool.submit(apply, writer, relation, "edges", ["1094861636"], lsn=2000, first_id=1)
            try:
                wait_until_waiting_for_a_lock(pg_reader, pid, "the writer")
                pg_reader.execute("ALTER TABLE analytics.edges ALTER v TYPE text")
            finally:
                holder.rollback()
        applied.result(timeout=30)  # raises what the writer raised
        pool.shutdown()
    else:
        first.close()
        writer = PostgresWriter(pg_destination)
        writer.binary_copy_min_rows = 0
        check_types = postgres.PostgresWriter._binary_kinds

        def change_type_first(self, conn, *args):
            # its snapshot is taken
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            pg_reader.execute("ALTER TABLE analytics.edges ALTER v TYPE text")
            return check_types(self, conn, *args)

        monkeypatch.setattr(postgres.PostgresWriter, "_binary_kinds", change_type_first)
        apply(writer, relation, "edges", ["1094861636"], lsn=2000, first_id=1)
    writer.close()
    assert pg_reader.execute("SELECT v FROM analytics.edges ORDER BY id").fetchall() == [
        ("1",),
        ("1094861636",),
    ]
    assert copies == [True, False]


def test_a_table_whose_schema_the_writer_changed_takes_text(pg_writer, pg_reader, source_conn, copies):
    relation = source_relation(source_conn, "int")
    apply(pg_writer, relation, "edges", ["1"], lsn=1000)
    source_conn.execute("ALTER TABLE public.edges ADD COLUMN w int")
    relation = relation_of(source_conn, "public", "edges")
    apply(pg_writer, relation, "edges", ["2", "3"], lsn=2000, fresh=False)
    assert copies == [True, False]
    assert pg_reader.execute("SELECT v FROM analytics.edges ORDER BY id").fetchall() == [(2,), (3,)]


def random_texts(kind: str, rnd: random.Random, count: int) -> list[str]:
    """Text forms of `kind` that its parser takes, drawn at random across its range."""

    def digits(low, high):
        return "".join(rnd.choice("0123456789") for _ in range(rnd.randint(low, high)))

    def date():
        year = rnd.choice([rnd.randint(1, 3000), rnd.randint(1, 200_000)])
        month = rnd.randint(1, 12)
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return f"{year:04d}-{month:02d}-{rnd.randint(1, days):02d}"

    def timestamp():
        fraction = digits(0, 6)
        text = f"{date()} {rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}"
        return f"{text}.{fraction}" if fraction else text

    def zone():
        text = f"{rnd.choice('+-')}{rnd.randint(0, 15):02d}"
        for _ in range(rnd.randint(0, 2)):
            text += f":{rnd.randint(0, 59):02d}"
        return text

    def floating(bits: int):
        if bits == 64:
            value = struct.unpack("!d", rnd.randbytes(8))[0]
            if value != value or value in (math.inf, -math.inf):
                return "0"
            return repr(value).replace("e-0", "e-").replace(".0e", "e").removesuffix(".0")
        mantissa = f"{rnd.randint(1, 9)}.{digits(1, 9)}"
        return f"{rnd.choice(['', '-'])}{mantissa}e{rnd.choice('+-')}{rnd.randint(0, 37):02d}"

    make = {
        "int2": lambda: str(rnd.randint(-(2**15), 2**15 - 1)),
        "int4": lambda: str(rnd.randint(-(2**31), 2**31 - 1)),
        "int8": lambda: str(rnd.randint(-(2**63), 2**63 - 1)),
        "numeric": lambda: (
            rnd.choice(["", "-"]) + (digits(1, 40) or "0") + rnd.choice(["", "." + (digits(1, 40) or "0")])
        ),
        "float4": lambda: floating(32),
        "float8": lambda: floating(64),
        "date": date,
        "timestamp": timestamp,
        "timestamptz": lambda: timestamp() + zone(),
        "uuid": lambda: rnd.choice([str.upper, str.lower])(str(uuid.UUID(bytes=rnd.randbytes(16)))),
        "text": lambda: "".join(
            chr(rnd.choice([rnd.randint(1, 127), rnd.randint(128, 0xD7FF)])) for _ in range(8)
        ),
    }[kind]
    return [make() for _ in range(count)]


@pytest.mark.parametrize(
    "kind, type_name",
    [
        ("int2", "int2"),
        ("int4", "int4"),
        ("int8", "int8"),
        ("numeric", "numeric"),
        ("float4", "float4"),
        ("float8", "float8"),
        ("date", "date"),
        ("timestamp", "timestamp"),
        ("timestamptz", "timestamptz"),
        ("uuid", "uuid"),
        ("text", "text"),
    ],
)
def test_random_values_load_the_same_by_binary_and_by_text_copy(kind, type_name, pg_reader):
    """copy_binary against copy_text straight into PostgreSQL, for values across each
    kind's range (a session in another time zone: no timestamptz may depend on it)."""
    rnd = random.Random(f"{kind}-7")
    rows = [({"v": text}, n) for n, text in enumerate(random_texts(kind, rnd, 3000))]
    pg_reader.execute("SET TimeZone = 'America/St_Johns'")
    pg_reader.execute(f"CREATE TABLE by_binary (v {type_name}, n bigint)")
    pg_reader.execute("CREATE TABLE by_text (LIKE by_binary)")
    binary = _fastfold.copy_binary(rows, ("v",), (kind,), ())
    assert binary is not None
    with pg_reader.cursor().copy("COPY by_binary (v, n) FROM STDIN (FORMAT binary)") as copy:
        copy.write(binary)
    with pg_reader.cursor().copy("COPY by_text (v, n) FROM STDIN") as copy:
        copy.write(_fastfold.copy_text(rows, ("v",), ""))
    differing = pg_reader.execute(
        "SELECT b.n, b.v::text, t.v::text FROM by_binary b JOIN by_text t USING (n) "
        "WHERE b.v::text IS DISTINCT FROM t.v::text OR b.v IS DISTINCT FROM t.v LIMIT 5"
    ).fetchall()
    assert differing == [], [(rows[n][0]["v"], b, t) for n, b, t in differing]
    assert pg_reader.execute("SELECT count(*) FROM by_binary").fetchone() == (len(rows),)


def test_a_few_rows_go_as_text_without_checking_the_target(pg_destination, pg_reader, source_conn, copies):
    writer = PostgresWriter(pg_destination)
    try:
        relation = source_relation(source_conn, "int")
        apply(writer, relation, "edges", [str(n) for n in range(writer.binary_copy_min_rows - 1)], lsn=1000)
        apply(
            writer,
            relation,
            "edges",
            [str(n) for n in range(writer.binary_copy_min_rows)],
            lsn=2000,
            fresh=False,
        )
    finally:
        writer.close()
    assert copies == [False, True]
    assert pg_reader.execute("SELECT count(*), sum(v) FROM analytics.edges").fetchone() == (
        writer.binary_copy_min_rows,
        sum(range(writer.binary_copy_min_rows)),
    )


# -- payloads made ahead, in the run's reading thread (PostgresWriter.prepare_batch) --------


def mixed_part(relation, first_new: int, count: int, lsn: int, value):
    """Keys up to first_new are updates of rows already applied; from there, fresh inserts."""
    upserts = {(str(n),): ({"id": str(n), "v": value(n)}, lsn + n) for n in range(count)}
    fresh = [key for key in upserts if int(key[0]) >= first_new]
    changes = table_changes(relation, upserts=upserts, target_table="edges", fresh=fresh, text_values=True)
    return make_batch(changes, end_lsn=lsn + count)


@pytest.mark.parametrize(
    "first_new, made",
    [(50, [True, True]), (80, [True])],
    ids=["fresh and updated rows", "updated rows only"],
)
def test_a_part_prepared_ahead_stores_what_it_stores_unprepared(
    writers, pg_reader, source_conn, copies, first_new, made
):
    """The applier then makes no COPY itself; the fresh rows' _rosetta_synced_at is still
    the transaction's time, set into the payload made before the transaction began. A part
    of updates alone (no key new to it) is made ahead as well."""
    relation = source_relation(source_conn, "numeric")
    prepared_writer, plain_writer = writers
    plain_writer.binary_copy = True
    plain_writer.binary_copy_min_rows = 0
    for target, writer in [("ahead", prepared_writer), ("plain", plain_writer)]:
        first = mixed_part(relation, first_new=0, count=50, lsn=1000, value=lambda n: f"{n}.5")
        part = mixed_part(relation, first_new=first_new, count=80, lsn=2000, value=lambda n: f"-{n}.25")
        for changes in [*first.tables.values(), *part.tables.values()]:
            changes.target_table = target  # first's rows are there: part's updates update them
        writer.apply_batch(target, first)
        if writer is prepared_writer:
            copies.clear()
            writer.prepare_batch(part)
            assert copies == made  # the fresh rows (if any) and the updated ones
            assert all(isinstance(c.prepared, postgres._Prepared) for c in part.tables.values())
            copies.clear()
        writer.apply_batch(target, part)
        if writer is prepared_writer:
            assert copies == []  # nothing made in the transaction
    assert stored(pg_reader, "ahead") == stored(pg_reader, "plain")
    assert len(stored(pg_reader, "ahead")) == 80
    assert stored(pg_reader, "ahead")[:2] == ["(0,-0.25,2000,)", "(1,-1.25,2001,)"]
    assert pg_reader.execute(
        "SELECT count(*) FROM analytics.ahead a JOIN analytics._rosetta_checkpoints c "
        "ON c.pipeline_key = 'ahead' WHERE a._rosetta_synced_at IS DISTINCT FROM c.updated_at"
    ).fetchone() == (0,)


def test_a_type_changed_between_prepare_and_apply_takes_text(pg_writer, pg_reader, source_conn, copies):
    """A payload made for int4 is not sent into a column changed to text meanwhile: its
    1094861636 would be stored as "ABCD"."""
    relation = source_relation(source_conn, "int")
    pg_writer.apply_batch("edges", mixed_part(relation, 0, 2, lsn=1000, value=str))
    part = mixed_part(relation, first_new=1, count=3, lsn=2000, value=lambda n: str(1094861636 + n))
    pg_writer.prepare_batch(part)
    pg_reader.execute("ALTER TABLE analytics.edges ALTER v TYPE text")
    copies.clear()
    pg_writer.apply_batch("edges", part)
    assert pg_reader.execute("SELECT id, v FROM analytics.edges ORDER BY id").fetchall() == [
        (0, "1094861636"),
        (1, "1094861637"),
        (2, "1094861638"),
    ]
    assert copies == [False, False]  # both made anew in the transaction, as text


def test_fresh_rows_found_in_the_target_are_merged_with_the_prepared_part(
    pg_writer, pg_reader, source_conn, copies
):
    relation = source_relation(source_conn, "int")
    pg_writer.apply_batch("edges", mixed_part(relation, 0, 2, lsn=1000, value=str))
    pg_reader.execute("INSERT INTO analytics.edges (id, v) VALUES (3, -1)")  # by hand
    part = mixed_part(relation, first_new=2, count=5, lsn=2000, value=lambda n: str(n * 10))
    pg_writer.prepare_batch(part)
    pg_writer.apply_batch("edges", part)
    assert pg_reader.execute("SELECT id, v, _rosetta_lsn FROM analytics.edges ORDER BY id").fetchall() == [
        (n, n * 10, 2000 + n) for n in range(5)
    ]


def test_set_last_fields_refuses_what_copy_binary_did_not_make():
    payload = bytearray(
        _fastfold.copy_binary([({"v": "1"}, 7), ({"v": None}, 8)], ("v",), ("int4",), (bytes(8),))
    )
    _fastfold.set_last_fields(payload, struct.pack("!q", 42))
    assert payload.count(struct.pack("!q", 42)) == 2
    extended = payload[:15] + struct.pack("!i", 4) + b"\0" * 4 + payload[19:]  # a header extension
    negative = bytearray(payload)
    negative[21:25] = struct.pack("!i", -2)  # the first field's length
    for bad, value in [
        (bytearray(b"not a copy at all, long enough"), bytes(8)),
        (payload[:-2], bytes(8)),  # no trailer
        (payload[:30], bytes(8)),  # cut in a row
        (payload, bytes(4)),  # another width
        (payload + b"\0", bytes(8)),  # bytes after the trailer
        (extended, bytes(8)),
        (negative, bytes(8)),
    ]:
        with pytest.raises(ValueError):
            _fastfold.set_last_fields(bad, value)
    with pytest.raises(TypeError):
        _fastfold.set_last_fields(payload, None)


def test_copy_binary_reads_rows_whatever_the_order_of_their_keys():
    """copy_binary walks a row made from its relation's template in column order; a row whose
    keys are in another order, lack a column or hold another key first is read by name."""
    columns, kinds = ("id", "note", "amount"), ("int8", "text", "numeric")
    in_order = [({"id": str(n), "note": f"n{n}", "amount": f"{n}.5"}, n) for n in range(3)]
    expected = _fastfold.copy_binary(in_order, columns, kinds, ())
    assert isinstance(expected, bytearray)
    shuffled = [
        ({"amount": "0.5", "id": "0", "note": "n0"}, 0),
        ({"id": "1", "extra": "x", "note": "n1", "amount": "1.5"}, 1),
        ({"id": "2", "amount": "2.5", "note": "n2"}, 2),
    ]
    assert _fastfold.copy_binary(shuffled, columns, kinds, ()) == expected
    # the run's column names are equal strings, not the rows' own key objects
    names = tuple("".join(list(name)) for name in columns)
    assert all(a is not b for a, b in zip(names, columns, strict=True))
    assert _fastfold.copy_binary(in_order, names, kinds, ()) == expected
    assert _fastfold.copy_binary(shuffled, names, kinds, ()) == expected
    missing = _fastfold.copy_binary([({"id": "0", "amount": "0.5"}, 0)], columns, kinds, ())
    with_null = _fastfold.copy_binary([({"id": "0", "note": None, "amount": "0.5"}, 0)], columns, kinds, ())
    assert missing == with_null
