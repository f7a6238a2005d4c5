"""Tables beyond plain keyed ones: replicated exactly, or refused before anything is written."""

import json
import uuid
from pathlib import Path

import duckdb
import psycopg
import pytest

from engine.preflight import run_checks
from pipelines import services
from pipelines.models import Pipeline, PipelineRun
from sources.models import Source

pytestmark = pytest.mark.django_db(transaction=True)


def ok(runs):
    runs = runs if isinstance(runs, list) else [runs]
    for run in runs:
        assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    return runs


def published(source_db, publication):
    return sorted(
        f"{s}.{t}"
        for s, t in source_db.execute(
            "SELECT n.nspname, c.relname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
            "JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE p.pubname = %s",
            [publication],
        )
    )


def destination_has(destination, table):
    if destination.kind == "duckdb":
        if not Path(destination.duckdb_path).exists():
            return False
        with duckdb.connect(destination.duckdb_path, read_only=True) as conn:
            return bool(
                conn.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()
            )
    with psycopg.connect(
        host=destination.pg_host, port=destination.pg_port, dbname=destination.pg_database, user="postgres"
    ) as conn:
        return conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [f"{destination.pg_schema}.{table}"]
        ).fetchone()[0]


def checks_for(source_database, source_row, tables):
    checks = run_checks(source_database, source_row.publication_name, tables)
    return {check.name: check for check in checks}


# -- no usable replica identity: refused, never published ----------------------------------


@pytest.mark.parametrize(
    "setup, words",
    [
        ("CREATE TABLE bag (a int, b text)", "no primary key and no replica identity"),
        (
            "CREATE TABLE bag (a int, b text); ALTER TABLE bag REPLICA IDENTITY FULL",
            "REPLICA IDENTITY FULL but no primary key: Rosetta cannot tell identical rows apart",
        ),
        (
            "CREATE TABLE bag (a int PRIMARY KEY, b text); ALTER TABLE bag REPLICA IDENTITY NOTHING",
            "REPLICA IDENTITY NOTHING",
        ),
    ],
)
def test_a_table_without_usable_identity_is_refused_and_never_added_to_the_publication(
    source_db, source_database, source_row, target, make_pipeline, setup, words
):
    source_db.execute(setup)
    # identical rows and NULLs, where the table allows them
    has_key = "PRIMARY KEY" in setup
    source_db.execute(
        "INSERT INTO bag VALUES (1, 'x'), (2, NULL)"
        if has_key
        else "INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (2, NULL), (2, NULL)"
    )
    pipeline = make_pipeline(["public.bag"])

    run = services.run_pipeline(pipeline)

    assert run.outcome == PipelineRun.Outcome.FAILED
    assert "public.bag" in run.error and words in run.error
    assert "ALTER TABLE" in run.error  # the SQL that fixes it
    assert published(source_db, source_row.publication_name) == []
    # The application's own writes keep working.
    source_db.execute("UPDATE bag SET b = 'y' WHERE a = 1")
    source_db.execute("DELETE FROM bag WHERE a = 2")
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.FAILED and words in pipeline.last_error
    assert not destination_has(target.destination, "bag")  # nothing was written there
    # Preflight says the same.
    check = checks_for(source_database, source_row, [("public", "bag")])["table public.bag"]
    assert not check.ok and words in check.message and "ALTER TABLE" in check.message


def test_a_using_index_table_replicates_key_changes_and_preflight_agrees(
    source_db, source_database, source_row, target, make_pipeline
):
    source_db.execute(
        """
        CREATE TABLE coded (id int, code text NOT NULL, note text);
        CREATE UNIQUE INDEX coded_code ON coded (code);
        ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code;
        INSERT INTO coded VALUES (1, 'a', 'one'), (2, 'b', 'two');
        """
    )
    check = checks_for(source_database, source_row, [("public", "coded")])["table public.coded"]
    assert check.ok, check.message
    assert "USING INDEX coded_code" in check.message
    pipeline = make_pipeline(["public.coded"])
    ok(services.run_until_caught_up(pipeline))

    source_db.execute("UPDATE coded SET code = 'c' WHERE code = 'a'")  # a key change
    source_db.execute("UPDATE coded SET note = 'deux' WHERE code = 'b'")
    source_db.execute("INSERT INTO coded VALUES (3, 'd', NULL)")
    source_db.execute("DELETE FROM coded WHERE code = 'd'")
    ok(services.run_until_caught_up(pipeline))

    columns = ["id", "code", "note"]
    assert target.rows("coded", columns, ["code"]) == source_db.rows("coded", columns, ["code"])
    assert target.count("coded") == 2


# -- partitioned tables ------------------------------------------------------------------


PARTITIONED = """
CREATE TABLE events (id int, region text, amount int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
INSERT INTO events VALUES (1, 'eu', 10), (2, 'us', 20);
"""


def change_events(source_db):
    source_db.execute("INSERT INTO events VALUES (3, 'eu', 30), (4, 'us', 40)")
    source_db.execute("UPDATE events SET amount = 11 WHERE id = 1")
    source_db.execute("UPDATE events SET region = 'us' WHERE id = 3")  # moves to another partition
    source_db.execute("DELETE FROM events WHERE id = 2")


def test_a_partitioned_table_replicates_as_its_parent(source_db, source_row, target, make_pipeline):
    source_db.execute(PARTITIONED)
    pipeline = make_pipeline(["public.events"])
    ok(services.run_until_caught_up(pipeline))
    (via_root,) = source_db.execute(
        "SELECT pubviaroot FROM pg_publication WHERE pubname = %s", [source_row.publication_name]
    ).fetchone()
    assert via_root

    change_events(source_db)
    ok(services.run_until_caught_up(pipeline))
    ok(services.run_until_caught_up(pipeline))  # and every run after

    columns = ["id", "region", "amount"]
    assert target.rows("events", columns, ["id"]) == source_db.rows("events", columns, ["id"])
    assert target.rows("events", columns, ["id"]) == [(1, "eu", 11), (3, "us", 30), (4, "us", 40)]


def test_a_partitioned_table_in_someone_elses_publication_gets_its_partitions_changes(
    source_db, source_row, target, make_pipeline
):
    source_db.execute(PARTITIONED)
    source_db.execute(f'CREATE PUBLICATION "{source_row.publication_name}" FOR ALL TABLES')
    pipeline = make_pipeline(["public.events"])
    ok(services.run_until_caught_up(pipeline))

    change_events(source_db)
    ok(services.run_until_caught_up(pipeline))

    columns = ["id", "region", "amount"]
    assert target.rows("events", columns, ["id"]) == [(1, "eu", 11), (3, "us", 30), (4, "us", 40)]


# -- generated columns ---------------------------------------------------------------------


def test_generated_columns_are_never_null_or_stale(source_db, target, make_pipeline):
    source_db.execute(
        """
        CREATE TABLE priced (id int PRIMARY KEY, price int, qty int,
                             total int GENERATED ALWAYS AS (price * qty) STORED, label text);
        INSERT INTO priced (id, price, qty) VALUES (1, 2, 3), (2, 5, 5);
        """
    )
    pipeline = make_pipeline(["public.priced"])
    ok(services.run_until_caught_up(pipeline))

    source_db.execute("INSERT INTO priced (id, price, qty) VALUES (3, 7, 2)")
    source_db.execute("UPDATE priced SET qty = 10 WHERE id = 1")
    source_db.execute("UPDATE priced SET id = 20 WHERE id = 2")
    source_db.execute("UPDATE priced SET label = 'x' WHERE id = 20")
    runs = ok(services.run_until_caught_up(pipeline))

    columns = ["id", "price", "qty", "total", "label"]
    assert target.rows("priced", columns, ["id"]) == [
        (1, 2, 10, 20, None),
        (3, 7, 2, 14, None),
        (20, 5, 5, 25, "x"),
    ]
    assert not any("no longer in" in run.notes for run in runs)  # not mistaken for a dropped column


# -- publications: Rosetta never removes what it did not add --------------------------------


def test_two_sources_sharing_a_publication_keep_each_others_tables(
    source_db, source_database, make_pipeline, destination, target
):
    source_db.execute(
        "CREATE TABLE left_t (id int PRIMARY KEY, v text); CREATE TABLE right_t (id int PRIMARY KEY, v text)"
    )
    publication = f"pub_{uuid.uuid4().hex[:8]}"
    pipelines = []
    for side in ("left", "right"):
        source = Source.objects.create(
            name=f"src-{side}-{uuid.uuid4().hex[:6]}",
            pg_host=source_database["host"],
            pg_port=source_database["port"],
            pg_database=source_database["dbname"],
            pg_username="postgres",
            sslmode="disable",
            publication_name=publication,
            slot_name=f"slot_{side}_{uuid.uuid4().hex[:6]}",
        )
        pipeline = Pipeline.objects.create(
            name=f"p-{side}-{uuid.uuid4().hex[:6]}", source=source, destination=destination
        )
        services.set_pipeline_tables(pipeline, [f"public.{side}_t"])
        services.start_pipeline(pipeline)
        pipelines.append(pipeline)
    left, right = pipelines
    ok(services.run_until_caught_up(left))
    ok(services.run_until_caught_up(right))
    for round_ in range(3):
        source_db.execute("INSERT INTO left_t VALUES (%s, 'l')", [round_])
        source_db.execute("INSERT INTO right_t VALUES (%s, 'r')", [round_])
        ok(services.run_until_caught_up(left))
        assert published(source_db, publication) == ["public.left_t", "public.right_t"]
        ok(services.run_until_caught_up(right))
        assert published(source_db, publication) == ["public.left_t", "public.right_t"]
    assert target.rows("left_t", ["id"], ["id"]) == [(0,), (1,), (2,)]
    assert target.rows("right_t", ["id"], ["id"]) == [(0,), (1,), (2,)]


def test_a_table_rosetta_did_not_add_stays_in_the_publication(source_db, source_row, make_pipeline):
    source_db.execute(
        "CREATE TABLE mine (id int PRIMARY KEY); CREATE TABLE theirs (id int PRIMARY KEY);"
        f'CREATE PUBLICATION "{source_row.publication_name}" FOR TABLE theirs'
    )
    pipeline = make_pipeline(["public.mine"])
    ok(services.run_until_caught_up(pipeline))
    assert published(source_db, source_row.publication_name) == ["public.mine", "public.theirs"]


# -- names: same name in two schemas, names that need quotes ---------------------------------


def test_the_same_table_name_in_two_schemas_goes_into_two_destination_tables(
    source_db, target, make_pipeline
):
    source_db.execute(
        """
        CREATE SCHEMA other;
        CREATE TABLE public.dup (id int PRIMARY KEY, v text);
        CREATE TABLE other.dup (id int PRIMARY KEY, v text);
        INSERT INTO public.dup VALUES (1, 'public');
        INSERT INTO other.dup VALUES (1, 'other');
        """
    )
    pipeline = make_pipeline(["other.dup", "public.dup"])
    assert {(t.schema_name, t.target_table) for t in pipeline.tables.all()} == {
        ("public", "dup"),
        ("other", "other__dup"),
    }
    ok(services.run_until_caught_up(pipeline))
    source_db.execute(
        "INSERT INTO public.dup VALUES (2, 'public'); INSERT INTO other.dup VALUES (2, 'other')"
    )
    ok(services.run_until_caught_up(pipeline))
    assert target.rows("dup", ["id", "v"], ["id"]) == [(1, "public"), (2, "public")]
    assert target.rows("other__dup", ["id", "v"], ["id"]) == [(1, "other"), (2, "other")]


def test_names_with_spaces_quotes_dots_and_case_replicate(source_db, target, make_pipeline):
    name = '"Odd.Schema"."My ""Table"""'
    source_db.execute('CREATE SCHEMA "Odd.Schema"')
    source_db.execute(f'CREATE TABLE {name} (id int PRIMARY KEY, "Some Value" text)')
    source_db.execute(f"INSERT INTO {name} VALUES (1, 'a')")
    pipeline = make_pipeline([name])
    (table,) = pipeline.tables.all()
    assert (table.schema_name, table.table_name) == ("Odd.Schema", 'My "Table"')
    ok(services.run_until_caught_up(pipeline))
    source_db.execute(f"INSERT INTO {name} VALUES (2, 'b')")
    ok(services.run_until_caught_up(pipeline))
    assert target.rows('My "Table"', ["id", "Some Value"], ["id"]) == [(1, "a"), (2, "b")]


def test_a_table_name_with_quotes_refers_to_the_table_without_them(source_db, target, make_pipeline):
    source_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    pipeline = make_pipeline(['"public"."t"'])
    ok(services.run_until_caught_up(pipeline))
    assert target.rows("t", ["id"], ["id"]) == [(1,)]


# -- value sizes -------------------------------------------------------------------------------


def test_a_snapshot_copies_values_larger_than_the_csv_reader_block(source_db, target, make_pipeline):
    source_db.execute(
        """
        CREATE TABLE blobs (id int PRIMARY KEY, body text, raw bytea);
        INSERT INTO blobs SELECT 1, repeat('ab"c,' || chr(10), 3000000), decode(repeat('00ff', 1100000), 'hex');
        INSERT INTO blobs VALUES (2, 'small', '\\x01');
        """
    )
    pipeline = make_pipeline(["public.blobs"])
    ok(services.run_until_caught_up(pipeline))

    def normal(rows):
        return [(i, body, bytes(raw)) for i, body, raw in rows]

    rows = normal(target.rows("blobs", ["id", "body", "raw"], ["id"]))
    assert rows == normal(source_db.rows("blobs", ["id", "body", "raw"], ["id"]))
    assert len(rows[0][1]) == 18_000_000 and len(rows[0][2]) == 2_200_000


def test_a_300_column_table_with_an_identity_key_takes_50_mb_text_and_20_mb_bytea_by_cdc(
    source_db, target, make_pipeline
):
    columns = ", ".join(f"c{n} int" for n in range(300))
    source_db.execute(
        f"CREATE TABLE wide (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {columns}, body text, raw bytea);"
        "INSERT INTO wide (c0, c299, body) VALUES (1, 299, 'snapshot')"
    )
    pipeline = make_pipeline(["public.wide"])
    ok(services.run_until_caught_up(pipeline))
    source_db.execute(
        "INSERT INTO wide (c0, c150, body, raw) SELECT 2, 150, repeat('ab\"c,' || chr(10), 8333334), "
        "decode(repeat('00ff', 10000000), 'hex')"
    )
    source_db.execute("UPDATE wide SET c299 = -1 WHERE id = 1")  # the big columns left alone
    ok(services.run_until_caught_up(pipeline))

    query = "SELECT id, c0, c150, c299, length(body), md5(body), length(raw), md5(raw) FROM {} ORDER BY id"
    expected = [tuple(row) for row in source_db.execute(query.format("wide")).fetchall()]
    assert [row[4] for row in expected] == [8, 50_000_004] and expected[1][6] == 20_000_000
    destination = target.destination
    if destination.kind == "duckdb":
        with duckdb.connect(destination.duckdb_path, read_only=True) as conn:
            stored = conn.execute(query.format("wide").replace("length(raw)", "octet_length(raw)")).fetchall()
    else:
        with psycopg.connect(
            host=destination.pg_host,
            port=destination.pg_port,
            dbname=destination.pg_database,
            user="postgres",
        ) as conn:
            stored = conn.execute(query.format(f"{destination.pg_schema}.wide")).fetchall()
    assert [tuple(row) for row in stored] == expected


# -- values: BC dates and times, infinity; what still cannot be stored is named ----------------


def test_bc_dates_and_times_and_infinity_keep_their_values(source_db, target, make_pipeline):
    source_db.execute(
        """
        SET TimeZone = 'UTC';
        CREATE TABLE ages (id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz);
        INSERT INTO ages VALUES
            (1, '0044-03-15 BC', '0044-03-15 12:00:00 BC', '0044-03-15 12:00:00+00 BC'),
            (2, 'infinity', '-infinity', 'infinity'),
            (3, '2024-02-29', '2024-02-29 23:59:59.5', '2024-02-29 23:59:59.5+00');
        """
    )
    pipeline = make_pipeline(["public.ages"])
    ok(services.run_until_caught_up(pipeline))
    source_db.execute(
        "INSERT INTO ages VALUES (4, '4713-01-01 BC', '0001-12-31 23:00:00 BC', '0100-01-01 00:00:00+00 BC')"
    )
    ok(services.run_until_caught_up(pipeline))
    # Compare as text: Python's datetime has no BC years.
    expected = [
        ("0044-03-15 BC", "0044-03-15 12:00:00 BC", "0044-03-15 12:00:00+00 BC"),
        ("infinity", "-infinity", "infinity"),
        ("2024-02-29", "2024-02-29 23:59:59.5", "2024-02-29 23:59:59.5+00"),
        ("4713-01-01 BC", "0001-12-31 23:00:00 BC", "0100-01-01 00:00:00+00 BC"),
    ]
    assert source_text(source_db, "ages") == expected
    assert destination_text(target.destination, "ages") == expected


def source_text(source_db, table):
    return [
        tuple(row)
        for row in source_db.execute(f"SELECT d::text, ts::text, tstz::text FROM {table} ORDER BY id")
    ]


def destination_text(destination, table):
    """The destination's values, spelled as PostgreSQL spells them."""
    if destination.kind == "postgres":
        with psycopg.connect(
            host=destination.pg_host,
            port=destination.pg_port,
            dbname=destination.pg_database,
            user="postgres",
        ) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            return [
                tuple(row)
                for row in conn.execute(
                    f"SELECT d::text, ts::text, tstz::text FROM {destination.pg_schema}.{table} ORDER BY id"
                )
            ]
    with duckdb.connect(destination.duckdb_path, read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(
            f"SELECT d::VARCHAR, ts::VARCHAR, tstz::VARCHAR FROM {table} ORDER BY id"
        ).fetchall()

    def pg(text):  # DuckDB writes '0044-03-15 (BC) 12:00:00'
        if text is not None and " (BC)" in text:
            return text.replace(" (BC)", "") + " BC"
        return text

    return [tuple(pg(v) for v in row) for row in rows]


# Values past a DuckDB type's range: NaN and infinity in numeric(p,s), timestamps past
# 294246 AD, 2-D arrays. The column takes their exact form (text, arrays as JSON) whether
# they come in the snapshot or later by CDC; PostgreSQL keeps its own types.
ODD = "(id int PRIMARY KEY, n numeric(10,2), ts timestamp, tstz timestamptz, a int[], ta text[])"
FITTING = [
    "(1, 1.5, '2024-02-29 23:59:59.5', '0044-03-15 12:00:00+00 BC', '{1,NULL,3}', '{x,\"a b\"}')",
    "(2, NULL, '0044-03-15 12:00:00 BC', 'infinity', NULL, '{}')",
]
UNFIT = [
    "(3, 'NaN', '294276-12-31 23:59:59', '294276-12-31 23:59:59+00', '{{1,2},{3,4}}', '{{a,NULL},{c,d}}')",
    "(4, 'NaN', '-infinity', '294250-01-01 00:00:00+00', '{{{1}}}', '{{\"\\\\\"}}')",
    "(6, NULL, NULL, NULL, '[0:1]={5,6}', '[2:2]={z}')",  # lower bounds other than 1: kept as text
]


def odd_values(conn, table, kind="postgres"):
    """Each row as PostgreSQL spells it (arrays as array_to_json, or their text where they have
    other lower bounds than 1): the values themselves."""
    if kind == "duckdb":
        columns = "id, CAST(n AS VARCHAR), CAST(ts AS VARCHAR), CAST(tstz AS VARCHAR), CAST(a AS VARCHAR), CAST(ta AS VARCHAR)"
    else:
        arrays = [
            f"(CASE WHEN replace(array_dims({c}), '[1:', '') LIKE '%[%' THEN to_json({c}::text) "
            f"ELSE array_to_json({c}) END)::text"
            for c in ("a", "ta")
        ]
        columns = f"id, n::text, ts::text, tstz::text, {', '.join(arrays)}"
    rows = conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
    return [(*row[:4], *(None if v is None else json.loads(v) for v in row[4:])) for row in rows]


def test_values_past_duckdbs_types_are_kept_exactly_by_snapshot_and_by_cdc(source_db, target, make_pipeline):
    source_db.execute("SET TimeZone = 'UTC'")
    source_db.execute(f"CREATE TABLE early {ODD}; CREATE TABLE late {ODD}")
    source_db.execute(f"INSERT INTO early VALUES {', '.join(FITTING + UNFIT)}")  # in the snapshot
    source_db.execute(f"INSERT INTO late VALUES {', '.join(FITTING)}")
    pipeline = make_pipeline(["public.early", "public.late"])
    ok(services.run_until_caught_up(pipeline))
    source_db.execute(f"INSERT INTO late VALUES {', '.join(UNFIT)}")  # by CDC, into typed columns
    source_db.execute("UPDATE early SET n = 'NaN', a = '{{5}}' WHERE id = 1")
    source_db.execute(
        "INSERT INTO early VALUES (5, 2.25, '2000-01-01', '2000-01-01 00:00:00+00', '{7}', '{y}')"
    )
    source_db.execute(
        "INSERT INTO late VALUES (5, 2.25, '2000-01-01', '2000-01-01 00:00:00+00', '{7}', '{y}')"
    )
    runs = ok(services.run_until_caught_up(pipeline))

    destination = target.destination
    for table in ("early", "late"):
        expected = odd_values(source_db.conn, table)
        assert len(expected) == 6
        if destination.kind == "postgres":
            with psycopg.connect(
                host=destination.pg_host,
                port=destination.pg_port,
                dbname=destination.pg_database,
                user="postgres",
            ) as conn:
                conn.execute("SET TimeZone = 'UTC'")
                assert odd_values(conn, f"{destination.pg_schema}.{table}") == expected
        else:
            with duckdb.connect(destination.duckdb_path, read_only=True) as conn:
                assert odd_values(conn, table, "duckdb") == expected
                kinds = dict(
                    conn.execute(
                        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?", [table]
                    ).fetchall()
                )
            assert (kinds["n"], kinds["ts"], kinds["tstz"], kinds["a"], kinds["ta"]) == (
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "JSON",
                "JSON",
            )
    if destination.kind == "duckdb":  # the CDC path says what it changed
        notes = " ".join(run.notes for run in runs)
        assert "Column n of main.late now holds VARCHAR" in notes and "'NaN'" in notes
