"""A CSV batch source into Snowflake (fakesnow): rows, rejects and the checkpoint state
in one transaction, resumable, and what the statistics and preview read."""

import pytest

from engine.batch_sources.csv import CsvReader, CsvSettings
from engine.batch_sources.loader import BatchLoader

from .fakesnow_support import fake_snowflake, read_table, snowflake_settings


def load(writer, path, **options):
    reader = CsvReader(CsvSettings.from_settings({"path": str(path), "primary_key": ["id"]}))
    loader = BatchLoader(
        reader,
        writer,
        pipeline_key="csv-p",
        source_name="csv",
        target_table="items",
        primary_key=["id"],
        **options,
    )
    return loader.run()


def test_a_csv_source_loads_into_snowflake_with_rejects_and_its_checkpoint_state(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,name,price\n1,one,1.5\n2,two\n3,three,3\n")
    settings = snowflake_settings()
    with fake_snowflake(settings) as analyst:
        from engine.writers.snowflake import SnowflakeWriter

        writer = SnowflakeWriter(settings)
        try:
            outcome = load(writer, path, max_reject_share=0.5)
            again = load(writer, path, max_reject_share=0.5)

            assert (outcome.records, outcome.rejects, outcome.result.inserted) == (2, 1, 2)
            assert again.parts == 0  # the file is in the checkpoint: nothing to load
            rows = read_table(analyst, "items", '"id"')
            assert [(r["id"], r["name"], r["price"]) for r in rows] == [(1, "one", 1.5), (3, "three", 3.0)]
            rejects = read_table(analyst, "_rosetta_rejects", '"line"')
            assert [(r["origin"], r["line"], r["reason"]) for r in rejects] == [
                ("items.csv", 3, "2 fields where the header has 3")
            ]
            sequence, state = writer.read_checkpoint_state("csv-p")
            assert sequence == 1 and state["reader"]["files"][str(path)]["done"] is True
            assert writer.count_rows("items") == 2
            columns, found, total = writer.preview_rows("items", 0, 10, "THR")
            assert total == 1 and found[0][columns.index("name")] == "three"
        finally:
            writer.close()


def test_a_failure_before_the_snowflake_commit_leaves_no_rows_no_rejects_and_no_checkpoint(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,name\n1,one\n2\n")
    settings = snowflake_settings()
    with fake_snowflake(settings):
        from engine.writers.snowflake import SnowflakeWriter

        writer = SnowflakeWriter(settings)
        try:
            writer.before_commit_hook = lambda: (_ for _ in ()).throw(RuntimeError("killed"))
            with pytest.raises(RuntimeError):
                load(writer, path, max_reject_share=0.5)
            writer.before_commit_hook = None
            assert writer.read_checkpoint_state("csv-p") == (0, None)
            assert writer.count_rows("items") == 0
            outcome = load(writer, path, max_reject_share=0.5)
            assert (outcome.records, outcome.rejects) == (1, 1)
            assert writer.count_rows("items") == 1
        finally:
            writer.close()


def test_an_http_json_source_into_snowflake_keeps_nested_json_as_variant_and_follows_schema_drift():
    """The API's first run has a nested object and a number field; the second a new field and a
    text where the number was: a VARIANT column, an added column, the number column widened to
    VARCHAR with a run note naming the page and position."""
    from engine.batch_sources.http_json import HttpJsonReader, HttpJsonSettings
    from pipelines.tests.batch_support import ScriptedApi

    api = ScriptedApi()
    api.style = "none"
    settings = snowflake_settings()

    def load_api(writer):
        source = HttpJsonSettings.from_settings(
            {"url": api.url, "records_path": "data", "primary_key": ["id"]}
        )
        return BatchLoader(
            HttpJsonReader(source),
            writer,
            pipeline_key="api-p",
            source_name="api",
            target_table="contacts",
            primary_key=["id"],
            json_values=True,
        ).run()

    try:
        with fake_snowflake(settings) as analyst:
            from engine.writers.snowflake import SnowflakeWriter

            writer = SnowflakeWriter(settings)
            try:
                api.records = [
                    {"id": 1, "score": 10, "address": {"city": "Oslo", "lines": ["a", "b"]}},
                    {"id": 2, "score": 20, "address": None},
                ]
                load_api(writer)
                api.records = [{"id": 3, "score": "n/a", "address": {"city": "Rome"}, "Signed Up": True}]
                drift = load_api(writer)

                assert any(
                    note.startswith("Column score of contacts widened from bigint to text:")
                    and "line 1 has 'n/a' there" in note
                    for note in drift.notes
                ), drift.notes
                rows = read_table(analyst, "contacts", '"id"', variant_columns=["address"])
                assert [(r["id"], r["score"], r["address"], r["signed_up"]) for r in rows] == [
                    (1, "10", {"city": "Oslo", "lines": ["a", "b"]}, None),
                    (2, "20", None, None),
                    (3, "n/a", {"city": "Rome"}, True),
                ]
                types = dict(
                    analyst.cursor()
                    .execute(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'contacts'"
                    )
                    .fetchall()
                )
                assert types["address"] == "VARIANT" and types["score"] == "TEXT"
                assert types["signed_up"] == "BOOLEAN"
            finally:
                writer.close()
    finally:
        api.close()
