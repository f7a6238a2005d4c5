"""load_snapshot for every writer: a real COPY stream from a real source table,
swapped in atomically, with memory that does not grow with the table."""

import pytest

from engine.batch import Column, Relation

from .batches import copy_chunks, make_batch, relation_of, table_changes


def vmrss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def make_source_table(source_conn, rows: int, label: str):
    source_conn.execute("CREATE TABLE IF NOT EXISTS public.towns (id bigint PRIMARY KEY, name text)")
    source_conn.execute("TRUNCATE public.towns")
    source_conn.execute(
        "INSERT INTO public.towns SELECT g, %s || g FROM generate_series(1, %s) g", [label, rows]
    )
    return relation_of(source_conn, "public", "towns")


def towns(target):
    return target.rows(f"SELECT id, name, _rosetta_lsn FROM {target.table('towns')} ORDER BY id")


def test_a_snapshot_replaces_the_table_and_readers_see_the_old_copy_until_it_is_complete(target, source_conn):
    relation = make_source_table(source_conn, 3, "old-")
    assert (
        target.writer.load_snapshot(
            relation, "towns", copy_chunks(source_conn, relation, target.writer), 1000
        )
        == 3
    )

    relation = make_source_table(source_conn, 5, "new-")
    seen_during_load = []

    def watched(chunks):
        for chunk in chunks:
            seen_during_load.append(towns(target))
            yield chunk

    loaded = target.writer.load_snapshot(
        relation, "towns", watched(copy_chunks(source_conn, relation, target.writer)), 2000
    )
    assert loaded == 5
    assert seen_during_load and all(
        rows == [(n, f"old-{n}", 1000) for n in (1, 2, 3)] for rows in seen_during_load
    )
    assert towns(target) == [(n, f"new-{n}", 2000) for n in range(1, 6)]


def test_a_snapshot_that_fails_midway_leaves_the_old_copy(target, source_conn):
    relation = make_source_table(source_conn, 3, "old-")
    target.writer.load_snapshot(relation, "towns", copy_chunks(source_conn, relation, target.writer), 1000)
    relation = make_source_table(source_conn, 5000, "new-")

    def broken(chunks):
        yield next(iter(chunks))
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        target.writer.load_snapshot(
            relation, "towns", broken(copy_chunks(source_conn, relation, target.writer)), 2000
        )
    assert towns(target) == [(n, f"old-{n}", 1000) for n in (1, 2, 3)]
    # and the next attempt starts clean
    assert (
        target.writer.load_snapshot(
            relation, "towns", copy_chunks(source_conn, relation, target.writer), 2000
        )
        == 5000
    )
    assert target.rows(f"SELECT count(*) FROM {target.table('towns')}") == [(5000,)]


def test_changes_apply_on_top_of_a_snapshot(target, source_conn):
    relation = make_source_table(source_conn, 3, "t")
    target.writer.load_snapshot(relation, "towns", copy_chunks(source_conn, relation, target.writer), 1000)
    batch = make_batch(
        table_changes(relation, upserts={(2,): ({"id": 2, "name": "changed"}, 1100)}, deletes={(3,): 1100}),
        end_lsn=1200,
    )
    result = target.writer.apply_batch("pipeline-1", batch)
    assert (result.inserted, result.updated, result.deleted) == (0, 1, 1)
    assert towns(target) == [(1, "t1", 1000), (2, "changed", 1100)]


def test_an_empty_table_snapshots_to_an_empty_table(target, source_conn):
    relation = make_source_table(source_conn, 0, "")
    assert (
        target.writer.load_snapshot(relation, "towns", copy_chunks(source_conn, relation, target.writer), 5)
        == 0
    )
    assert towns(target) == []


def _binary_copy_rows(rows: int, width: int):
    """A PostgreSQL binary COPY stream of (bigint, text) rows, made up as it is read."""
    yield b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    body = b"y" * width
    per_chunk = 1000
    for start in range(0, rows, per_chunk):
        yield b"".join(
            b"\x00\x02\x00\x00\x00\x08"
            + n.to_bytes(8, "big")
            + (width + 8).to_bytes(4, "big")
            + body
            + b"%08d" % n
            for n in range(start, min(start + per_chunk, rows))
        )
    yield b"\xff\xff"


def _csv_rows(rows: int, width: int):
    body = b"y" * width
    per_chunk = 1000
    for start in range(0, rows, per_chunk):
        yield b"".join(b'%d,"%s%08d"\n' % (n, body, n) for n in range(start, min(start + per_chunk, rows)))


def test_a_snapshot_streams_with_flat_memory(target):
    """400 MB go through while the process grows by well under that: chunks are
    consumed as they come, never gathered."""
    relation = Relation(9, "public", "wide", [Column("id", 20, -1, True), Column("body", 25)])
    rows, width = 400_000, 1000
    stream = (
        _binary_copy_rows(rows, width)
        if target.writer.snapshot_format == "binary"
        else _csv_rows(rows, width)
    )
    target.writer.settings["snapshot_memory_limit"] = "64MB"  # DuckDB's buffer cap (PostgreSQL ignores it)
    target.writer.read_checkpoint("warm-up")  # open the connection before measuring
    baseline, peak = vmrss_mb(), 0.0

    def measured(chunks):
        nonlocal peak
        for number, chunk in enumerate(chunks):
            if number % 50 == 0:
                peak = max(peak, vmrss_mb())
            yield chunk

    assert target.writer.load_snapshot(relation, "wide", measured(stream), 1) == rows
    growth = peak - baseline
    print(f"{target.kind}: RSS grew {growth:.0f} MB while loading {rows * width / 2**20:.0f} MB")
    assert growth < 200
