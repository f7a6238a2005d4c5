"""Snapshot then CDC into PostgreSQL and DuckDB: the destination equals the source."""

from decimal import Decimal

import pytest

from pipelines import services
from pipelines.models import Pipeline, PipelineRun

# Not inside a test transaction: creating a slot waits for every open transaction
# on the server, and the metadata database lives on the same test cluster.
pytestmark = pytest.mark.django_db(transaction=True)

BIG = "".join(chr(65 + (i * 7) % 26) for i in range(30_000))  # > 2 kB, stored out of line (TOAST)

ORDERS = ["region", "id", "amount", "tags", "scores", "doc", "placed_at", "note", "big"]
CUSTOMERS = ["id", "name", "active", "born", "uid", "raw"]


def create_tables(source_db):
    source_db.execute(
        """
        CREATE TABLE orders (
            region text, id int, amount numeric(12,2), tags text[], scores int[], doc jsonb,
            placed_at timestamptz, note text, big text, PRIMARY KEY (region, id)
        );
        ALTER TABLE orders ALTER COLUMN big SET STORAGE EXTERNAL;
        CREATE TABLE customers (
            id bigint PRIMARY KEY, name text, active bool, born date, uid uuid, raw bytea
        );
        """
    )


def insert_orders(source_db, ids, region="eu"):
    source_db.execute(
        """
        INSERT INTO orders
        SELECT %s, i, i * 1.25, ARRAY['t' || i, NULL], ARRAY[i, i + 1], jsonb_build_object('i', i, 'n', NULL),
               '2024-01-01 12:00:00+02'::timestamptz + i * interval '1 minute',
               CASE WHEN i %% 3 = 0 THEN NULL ELSE 'note ' || i END,
               CASE WHEN i %% 2 = 0 THEN %s || i END
        FROM unnest(%s::int[]) AS i
        """,
        [region, BIG, list(ids)],
    )


def insert_customers(source_db, ids):
    source_db.execute(
        """
        INSERT INTO customers
        SELECT i, 'customer ' || i, i %% 2 = 0, date '1990-01-01' + i::int, gen_random_uuid(),
               CASE WHEN i %% 4 = 0 THEN NULL ELSE decode(lpad(to_hex(i), 4, '0'), 'hex') END
        FROM unnest(%s::bigint[]) AS i
        """,
        [list(ids)],
    )


def assert_equal(source_db, target):
    assert target.rows("orders", ORDERS, ["region", "id"], json_columns=["doc"]) == source_db.rows(
        "orders", ORDERS, ["region", "id"]
    )
    assert target.rows("customers", CUSTOMERS, ["id"]) == source_db.rows("customers", CUSTOMERS, ["id"])


def test_snapshot_then_changes_leave_the_destination_equal_to_the_source(source_db, target, make_pipeline):
    create_tables(source_db)
    insert_orders(source_db, range(1, 41))
    insert_customers(source_db, range(1, 21))
    pipeline = make_pipeline(["public.orders", "public.customers"])

    (first,) = services.run_until_caught_up(pipeline)
    assert first.outcome == PipelineRun.Outcome.SUCCEEDED, first.error
    assert first.snapshot_rows == 60
    assert_equal(source_db, target)

    # A mixed workload, in several transactions.
    insert_orders(source_db, range(41, 61))
    insert_orders(source_db, range(1, 11), region="us")
    source_db.execute("UPDATE orders SET amount = amount + 1 WHERE id <= 20")  # big stays TOASTed: 'u'
    source_db.execute("UPDATE orders SET big = 'short now' WHERE region = 'eu' AND id = 4")
    source_db.execute("UPDATE orders SET id = id + 1000 WHERE region = 'eu' AND id IN (2, 6)")  # key change
    source_db.execute("UPDATE orders SET note = NULL, tags = NULL, doc = '[1, {\"x\": 2.5}]' WHERE id = 8")
    source_db.execute("DELETE FROM orders WHERE region = 'eu' AND id BETWEEN 30 AND 35")
    source_db.execute("BEGIN")
    source_db.execute("INSERT INTO orders (region, id, amount) VALUES ('eu', 5000, 1)")
    source_db.execute("UPDATE orders SET amount = 2 WHERE region = 'eu' AND id = 5000")
    source_db.execute("DELETE FROM orders WHERE region = 'eu' AND id = 5000")
    source_db.execute("COMMIT")
    source_db.execute("TRUNCATE customers")
    insert_customers(source_db, range(100, 105))
    source_db.execute("UPDATE customers SET name = 'renamed', raw = NULL WHERE id = 101")

    runs = services.run_until_caught_up(pipeline)
    assert [run.outcome for run in runs] == [PipelineRun.Outcome.SUCCEEDED] * len(runs)
    assert_equal(source_db, target)
    # The values themselves: a key change kept the TOASTed value it did not touch.
    orders = {
        row[:2]: row for row in target.rows("orders", ["region", "id", "big", "amount"], ["region", "id"])
    }
    assert orders[("eu", 1002)] == ("eu", 1002, BIG + "2", Decimal("3.50"))
    assert orders[("us", 4)] == ("us", 4, BIG + "4", Decimal("6.00"))
    assert target.count("customers") == 5

    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING
    assert pipeline.lag_bytes is not None and pipeline.last_applied_lsn
    progress = pipeline.tables.get(table_name="orders")
    assert progress.rows_inserted == 20 + 10 + 1 and progress.rows_deleted == 6 + 1


def test_a_transaction_larger_than_max_changes_per_transaction_is_applied_whole(
    source_db, target, make_pipeline
):
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"], max_changes_per_transaction=10)
    services.run_pipeline(pipeline)  # snapshot of the empty table

    insert_orders(source_db, range(1, 101))  # one transaction of 100 changes
    insert_orders(source_db, range(101, 103))
    parts = []
    run = services.run_pipeline(pipeline, hooks=services.RunHooks(after_apply=parts.append))

    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert [part.changes for part in parts] == [100, 2]  # the whole transaction, not 10 of it
    assert run.changes_read == 102 and run.rows_inserted == 102  # one run reads until caught up
    assert target.count("orders") == 102
    assert target.checkpoint(pipeline.checkpoint_key) > 0
