"""CSV sources end to end: real files into real PostgreSQL and DuckDB destinations."""

import gzip
import os

import pytest

from pipelines import services
from pipelines.models import Pipeline, PipelineRun
from pipelines.services import RunHooks

from .batch_support import checkpoint_state, column_types, make_batch_pipeline, make_source, query

pytestmark = pytest.mark.django_db


def write(path, text, mtime=None):
    path.write_text(text)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))
    return path


def rows(destination, table, columns, order):
    return query(destination, f"SELECT {', '.join(columns)} FROM {{schema}}.{table} ORDER BY {order}")


def test_a_csv_file_lands_with_inferred_types_normalized_names_and_the_mapping_on_the_pipeline(
    tmp_path, destination
):
    write(
        tmp_path / "orders.csv",
        "Order ID,Customer Name,Amount,Paid,Ordered On,Zip\n"
        '1,"Smith, Ann",10.5,true,2024-01-02,01234\n'
        "2,Bob,3,false,2024-01-03,99999\n",
    )
    source = make_source("csv", {"path": str(tmp_path / "orders.csv"), "primary_key": ["Order ID"]})
    pipeline = make_batch_pipeline(source, destination, table="orders")

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert (run.changes_read, run.rows_inserted, run.rows_rejected) == (2, 2, 0)
    assert rows(
        destination, "orders", ["order_id", "customer_name", "amount", "paid", "zip"], "order_id"
    ) == [
        (1, "Smith, Ann", 10.5, True, "01234"),
        (2, "Bob", 3.0, False, "99999"),
    ]
    types = column_types(destination, "orders")
    assert types["order_id"] == "bigint"
    assert types["amount"] in ("double precision", "double")
    assert types["paid"] == "boolean"
    assert types["ordered_on"] == "date"
    assert types["zip"] in ("text", "varchar")
    table = pipeline.tables.get()
    assert table.column_mapping == {
        "Order ID": "order_id",
        "Customer Name": "customer_name",
        "Amount": "amount",
        "Paid": "paid",
        "Ordered On": "ordered_on",
        "Zip": "zip",
    }


def test_each_file_is_loaded_once_and_a_changed_file_again_merging_on_the_key(tmp_path, destination):
    folder = tmp_path / "drop"
    folder.mkdir()
    write(folder / "a.csv", "id,name\n1,one\n2,two\n")
    source = make_source("csv", {"path": str(folder), "glob": "*.csv*", "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination)
    assert services.run_pipeline(pipeline).rows_inserted == 2

    again = services.run_pipeline(pipeline)
    assert (again.outcome, again.changes_read) == ("succeeded", 0)

    with gzip.open(folder / "b.csv.gz", "wt") as gz:
        gz.write("id,name\n3,three\n")
    write(folder / "a.csv", "id,name\n1,one\n2,TWO\n", mtime=2_000_000_000 * 10**9)
    third = services.run_pipeline(pipeline)

    assert third.outcome == "succeeded", third.error
    assert (third.changes_read, third.rows_inserted, third.rows_updated) == (3, 1, 2)
    assert rows(destination, "items", ["id", "name"], "id") == [(1, "one"), (2, "TWO"), (3, "three")]
    _, state = checkpoint_state(destination, pipeline)
    assert sorted(os.path.basename(name) for name in state["reader"]["files"]) == ["a.csv", "b.csv.gz"]
    assert all(entry["done"] for entry in state["reader"]["files"].values())


def test_without_a_key_rows_are_appended_and_reloading_a_file_duplicates_nothing(tmp_path, destination):
    write(tmp_path / "events.csv", "kind,value\nclick,1\nclick,1\nview,2\n")
    source = make_source("csv", {"path": str(tmp_path / "events.csv")})
    pipeline = make_batch_pipeline(source, destination, table="events")
    services.run_pipeline(pipeline)
    from pipelines.batch import reset_pipeline

    reset_pipeline(pipeline)
    services.run_pipeline(pipeline)

    assert rows(destination, "events", ["kind", "value"], "_rosetta_row_id") == [
        ("click", 1),
        ("click", 1),
        ("view", 2),
    ]


def test_malformed_rows_are_kept_in_the_rejects_table_with_file_line_and_reason_and_counted(
    tmp_path, destination
):
    (tmp_path / "people.csv").write_bytes(
        b"id,name,age\n"
        b"1,ann,30\n"
        b"2,bob\n"  # a field missing
        b'3,"carol"x,41\n'  # a broken quote
        b"4,d\xffve,50\n"  # not UTF-8
        b"5,eve,28\n"
        b"6,frank,33,extra\n"  # a field too many
        b",nokey,1\n" + b"".join(f"{i},p{i},{i}\n".encode() for i in range(7, 20))  # no key
    )
    source = make_source("csv", {"path": str(tmp_path / "people.csv"), "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination, max_reject_share=0.5)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert run.rows_rejected == 5
    assert run.rows_inserted == 15
    rejects = query(destination, "SELECT origin, line, reason FROM {schema}._rosetta_rejects ORDER BY line")
    assert [(origin, line) for origin, line, _ in rejects] == [
        ("people.csv", 3),
        ("people.csv", 4),
        ("people.csv", 5),
        ("people.csv", 7),
        ("people.csv", 8),
    ]
    reasons = [reason for _, _, reason in rejects]
    assert "2 fields where the header has 3" in reasons[0]
    assert "malformed CSV" in reasons[1]
    assert "cannot be decoded as utf-8" in reasons[2]
    assert "4 fields where the header has 3" in reasons[3]
    assert "no value for the key field id" in reasons[4]
    assert "_rosetta_rejects" in run.notes


def test_a_run_fails_past_the_configured_share_of_rejects_and_loads_nothing_of_that_part(
    tmp_path, destination
):
    write(tmp_path / "bad.csv", "id,name\n1,a\n2\n3\n4,d\n")
    source = make_source("csv", {"path": str(tmp_path / "bad.csv"), "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination, max_reject_share=0.25)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "failed"
    assert "2 of 4 records were rejected (50%), more than the pipeline allows (25%)" in run.error
    assert checkpoint_state(destination, pipeline) == (0, None)
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.FAILED


def test_schema_drift_adds_columns_and_widens_a_conflicting_field_to_text_with_a_run_note(
    tmp_path, destination
):
    folder = tmp_path / "drift"
    folder.mkdir()
    write(folder / "1.csv", "id,amount\n1,10\n2,20\n")
    source = make_source("csv", {"path": str(folder), "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination)
    services.run_pipeline(pipeline)

    write(folder / "2.csv", "id,amount,Comment\n3,n/a,late\n")
    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert "Column amount of items widened from bigint to text: 2.csv line 2 has 'n/a' there." in run.notes
    assert column_types(destination, "items")["amount"] in ("text", "varchar")
    assert rows(destination, "items", ["id", "amount", "comment"], "id") == [
        (1, "10", None),
        (2, "20", None),
        (3, "n/a", "late"),
    ]


def test_a_failure_before_the_destination_commit_leaves_neither_rows_nor_checkpoint_and_the_next_run_loads_all(
    tmp_path, destination, settings
):
    settings.ROSETTA_BATCH_PART_ROWS = 1000
    write(tmp_path / "big.csv", "id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(1, 3001)))
    source = make_source("csv", {"path": str(tmp_path / "big.csv"), "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination)
    commits = []

    def fail_on_second_part():
        commits.append(1)
        if len(commits) == 2:
            raise RuntimeError("the worker died")

    failed = services.run_pipeline(pipeline, hooks=RunHooks(before_commit=fail_on_second_part))
    assert failed.outcome == "failed"
    sequence, state = checkpoint_state(destination, pipeline)
    assert sequence == 1
    assert state["reader"]["files"][str(tmp_path / "big.csv")]["lines"] == 1001  # header + the first part
    assert query(destination, "SELECT count(*) FROM {schema}.items") == [(1000,)]

    again = services.run_pipeline(pipeline)

    assert again.outcome == "succeeded", again.error
    assert (again.changes_read, again.rows_inserted, again.rows_updated) == (2000, 2000, 0)
    assert query(destination, "SELECT count(*), count(DISTINCT id), sum(v) FROM {schema}.items") == [
        (3000, 3000, sum(i * 2 for i in range(1, 3001)))
    ]
    assert PipelineRun.objects.filter(pipeline=pipeline, outcome="succeeded").count() == 1


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_delimiter_quote_encoding_and_a_file_without_header_are_honoured(tmp_path, destination):
    (tmp_path / "latin.csv").write_bytes("1;'Müller; Jörg';12,5\n2;'Zoë';7\n".encode("latin-1"))
    source = make_source(
        "csv",
        {
            "path": str(tmp_path / "latin.csv"),
            "delimiter": ";",
            "quote": "'",
            "encoding": "latin-1",
            "header": False,
            "primary_key": ["column_1"],
        },
    )
    pipeline = make_batch_pipeline(source, destination)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert rows(destination, "items", ["column_1", "column_2", "column_3"], "column_1") == [
        (1, "Müller; Jörg", "12,5"),
        (2, "Zoë", "7"),
    ]


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_a_csv_url_is_loaded_once_per_etag_and_again_when_it_changes(tmp_path, destination):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    served = {"etag": '"v1"', "body": b"id,name\n1,a\n2,b\n", "gets": 0}

    class Export(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            served["gets"] += 1
            body = gzip.compress(served["body"])
            self.send_response(200)
            self.send_header("ETag", served["etag"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Export)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/export.csv.gz?token=abc"
        pipeline = make_batch_pipeline(make_source("csv", {"url": url, "primary_key": ["id"]}), destination)
        first = services.run_pipeline(pipeline)
        same = services.run_pipeline(pipeline)
        served.update(etag='"v2"', body=b"id,name\n2,B\n3,c\n")
        changed = services.run_pipeline(pipeline)
    finally:
        server.shutdown()
        server.server_close()

    assert first.outcome == "succeeded", first.error
    assert (first.rows_inserted, same.changes_read, changed.rows_inserted, changed.rows_updated) == (
        2,
        0,
        1,
        1,
    )
    assert rows(destination, "items", ["id", "name"], "id") == [(1, "a"), (2, "B"), (3, "c")]
    assert served["gets"] == 3
    _, state = checkpoint_state(destination, pipeline)
    assert "token=abc" not in str(state)  # the file is named without its query string
