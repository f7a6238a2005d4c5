"""HTTP JSON sources end to end, against a local API the tests start and script."""

import time

import pytest

from pipelines import services

from .batch_support import column_types, make_batch_pipeline, make_source, query

pytestmark = pytest.mark.django_db

PAGINATION = {
    "page": {"style": "page", "page_param": "page", "page_size": 3},
    "offset": {"style": "offset", "offset_param": "offset", "limit_param": "limit", "limit": 3},
    "cursor": {"style": "cursor", "cursor_param": "cursor", "cursor_path": "next_cursor"},
    "link": {"style": "link"},
}


def records(first, last):
    return [
        {
            "id": i,
            "name": f"item {i}",
            "updated_at": f"2024-01-{i:02d}T00:00:00Z",
            "tags": {"n": i, "odd": i % 2 == 1},
        }
        for i in range(first, last + 1)
    ]


def http_source(api, style="page", **settings):
    return make_source(
        "http_json",
        {
            "url": api.url,
            "records_path": "data",
            "pagination": PAGINATION[style],
            "primary_key": ["id"],
            "backoff_seconds": 0.05,
            "timeout_seconds": 2,
            **settings,
        },
        secret_headers='{"Authorization": "Bearer s3cret-token"}',
    )


def loaded(destination, table="items"):
    return query(destination, f"SELECT id, name FROM {{schema}}.{table} ORDER BY id")


@pytest.mark.parametrize("style", ["page", "offset", "cursor", "link"])
@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_every_pagination_style_loads_every_record_once(api, destination, style):
    api.style = style
    api.records = records(1, 8)
    pipeline = make_batch_pipeline(http_source(api, style), destination)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert run.rows_inserted == 8
    assert loaded(destination) == [(i, f"item {i}") for i in range(1, 9)]
    assert len(api.requests) == 3  # the third page is short (or has no next): the last one asked for
    assert all(headers.get("Authorization") == "Bearer s3cret-token" for _, _, headers, _ in api.requests)


def test_incremental_runs_send_the_stored_value_and_fetch_only_new_records(api, destination):
    api.records = records(1, 4)
    pipeline = make_batch_pipeline(
        http_source(api, incremental={"field": "updated_at", "param": "updated_since"}), destination
    )
    assert services.run_pipeline(pipeline).rows_inserted == 4
    assert "updated_since" not in api.requests[0][1]

    api.requests.clear()
    api.records = records(1, 6)
    api.records[0]["name"] = "changed but old"  # not newer than the checkpoint: the API does not send it
    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert (run.changes_read, run.rows_inserted) == (2, 2)
    assert api.requests[0][1]["updated_since"] == "2024-01-04T00:00:00Z"
    assert loaded(destination)[0] == (1, "item 1")
    assert len(loaded(destination)) == 6


def test_nested_json_is_kept_as_json_and_a_non_object_record_is_rejected(api, destination):
    api.style = "none"
    api.records = [*records(1, 2), "not an object"]
    pipeline = make_batch_pipeline(http_source(api, "page", pagination={"style": "none"}), destination)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "failed"  # 1 of 3 rejected: more than the default 10%
    pipeline.max_reject_share = 0.5
    pipeline.save()
    run = services.run_pipeline(pipeline)
    assert run.outcome == "succeeded", run.error
    assert run.rows_rejected == 1
    assert column_types(destination, "items")["tags"] in ("jsonb", "json")
    (tags,) = query(destination, "SELECT tags FROM {schema}.items WHERE id = 2")[0]
    assert (tags if isinstance(tags, dict) else __import__("json").loads(tags)) == {"n": 2, "odd": False}
    (reason,) = query(destination, "SELECT reason FROM {schema}._rosetta_rejects")[0]
    assert reason == "the record is not a JSON object"


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_a_429_with_retry_after_is_waited_out_and_a_500_is_retried(api, destination):
    api.records = records(1, 2)
    api.script = [
        (429, {"Retry-After": "1"}, {"error": "slow down"}, 0),
        (500, {}, {"error": "oops"}, 0),
    ]
    pipeline = make_batch_pipeline(http_source(api), destination)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    times = [at for _, _, _, at in api.requests]
    assert times[1] - times[0] >= 0.95  # Retry-After: 1
    assert times[2] - times[1] < 0.9  # the 500's back-off is backoff_seconds (0.05 s)
    assert "2 request(s) were retried" in run.notes
    assert run.rows_inserted == 2


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_a_server_that_never_answers_fails_the_run_after_the_timeout_with_a_readable_error(api, destination):
    api.records = records(1, 2)
    api.script = [(200, {}, {"data": []}, 3)] * 2
    pipeline = make_batch_pipeline(http_source(api, timeout_seconds=0.5, max_retries=1), destination)

    started = time.monotonic()
    run = services.run_pipeline(pipeline)

    assert time.monotonic() - started < 3
    assert run.outcome == "failed"
    assert f"http://127.0.0.1:{api.server.server_address[1]}/items did not answer within 0.5 s" in run.error
    assert "gave up after 2 attempts" in run.error
    assert "s3cret-token" not in run.error


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_a_client_error_fails_at_once_naming_the_status_and_never_the_secret_header(api, destination):
    api.script = [(401, {}, {"error": "bad token"}, 0)]
    pipeline = make_batch_pipeline(http_source(api), destination)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "failed"
    assert "HTTP 401" in run.error and "s3cret" not in run.error
    assert len(api.requests) == 1


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_a_run_that_fails_mid_pagination_resumes_at_the_next_page_and_ends_with_every_record(
    api, destination, settings
):
    settings.ROSETTA_BATCH_PART_ROWS = 3  # one part per page
    api.records = records(1, 9)
    source = http_source(api, max_retries=0)
    pipeline = make_batch_pipeline(source, destination)
    api.fail_pages_once = {"3"}

    first = services.run_pipeline(pipeline)
    assert first.outcome == "failed" and "HTTP 503" in first.error
    assert len(loaded(destination)) == 6  # pages 1 and 2, each committed with its checkpoint
    second = services.run_pipeline(pipeline)

    assert second.outcome == "succeeded", (first.error, second.error)
    assert len(loaded(destination)) == 9
    pages = [q.get("page") for _, q, _, _ in api.requests]
    assert pages.count("1") == 1 and pages.count("2") == 1  # not fetched again after the failure


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_the_request_rate_limit_spaces_the_requests(api, destination):
    api.records = records(1, 9)
    pipeline = make_batch_pipeline(http_source(api, requests_per_second=5), destination)

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    times = [at for _, _, _, at in api.requests]
    assert len(times) == 4  # three full pages, then an empty one
    assert times[-1] - times[0] >= 0.55  # 5 per second: 3 gaps of 0.2 s (less a little server-side jitter)


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_a_next_url_in_the_body_is_followed(api, destination):
    api.style = "cursor"
    api.records = records(1, 5)
    original = api.page

    def with_next_url(query):
        body, headers = original(query)
        cursor = body.pop("next_cursor")
        body["links"] = {"next": f"/items?cursor={cursor}" if cursor else None}
        return body, headers

    api.page = with_next_url
    pipeline = make_batch_pipeline(
        http_source(api, pagination={"style": "link", "next_url_path": "links.next"}), destination
    )

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert len(loaded(destination)) == 5 and len(api.requests) == 2


def test_json_schema_drift_adds_a_column_and_widens_a_conflicting_field_to_text_with_a_run_note(
    api, destination
):
    api.style = "none"
    api.records = [{"id": 1, "score": 10, "meta": {"a": 1}}, {"id": 2, "score": 20, "meta": None}]
    pipeline = make_batch_pipeline(http_source(api, pagination={"style": "none"}), destination)
    assert services.run_pipeline(pipeline).outcome == "succeeded"

    api.records = [{"id": 3, "score": "n/a", "meta": [1, 2], "Signed Up": True}]
    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert "Column score of items widened from bigint to text: " in run.notes
    assert "line 1 has 'n/a' there." in run.notes
    types = column_types(destination, "items")
    assert types["score"] in ("text", "varchar") and types["signed_up"] == "boolean"
    assert types["meta"] in ("jsonb", "json")
    got = query(destination, "SELECT id, score, signed_up FROM {schema}.items ORDER BY id")
    assert got == [(1, "10", None), (2, "20", None), (3, "n/a", True)]
    assert pipeline.tables.get().column_mapping["Signed Up"] == "signed_up"
