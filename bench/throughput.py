"""End-to-end snapshot and CDC throughput of the engine, beside the raw limits of the same run.

    .venv/bin/python bench/throughput.py [--rows 300000] [--changes 300000] [--max-changes-per-transaction N]
        [--read-path stream|peek] [--dlt-backend pyarrow|sqlalchemy|none]
        [--writers both|postgres|duckdb] [--destination-latency-ms MS]

Starts two throwaway PostgreSQL clusters (rosetta/pgcluster.py), a source and a
destination, and a source table of --rows rows of ~330 bytes (bigint key, int,
numeric(12,2), text, ~230 B jsonb, two timestamptz), then prints, for the PostgreSQL and DuckDB destinations:

- snapshot: the engine's snapshot (source COPY -> writer.load_snapshot, with the
  run's progress counting: CSV lines, or the source's pg_stat_progress_copy) beside
  `COPY TO STDOUT` read and discarded (binary and CSV), with the time spent
  waiting for the source's COPY, the PostgreSQL writer's steps (prepare, load, key,
  swap, commit) and the peak RSS of this process; and, when
  dlt is installed (bench/requirements.txt), dlt's sql_database source into
  DuckDB on the same table, with Rosetta's rate as a ratio to dlt's;
- CDC: a backlog of --changes changes (70% inserts, 25% updates, 5% deletes, in
  transactions of 1,000) caught up by one run as pipelines.services runs it (one
  stream and one writer, read + decode + fold, apply_batch per part, advance),
  beside one `pg_logical_slot_peek_binary_changes` of the whole backlog read
  and discarded, with where the time went, and beside PostgreSQL's own logical
  replication catching up the same backlog (a subscription in another database of the
  destination cluster, holding the same rows, with copy_data = false on a slot created before the
  changes, enabled after them, timed until its slot confirms the end); then the
  client's share alone (decode + fold of the whole backlog, nothing applied, in the
  run's parts; for comparison, in one batch, which pays for ~1 GB of fresh memory; and in
  parts with the rows kept as pgoutput's bytes, as the PostgreSQL writer's fold keeps them).
  Rosetta's CDC rates are printed as a ratio to the peek and to the subscription.
  With --destination-latency-ms, Rosetta's PostgreSQL destination is reached through
  bench/delay_proxy.py, that far away each way (nothing else is): the cost of its round trips.
  --changes 0 skips CDC.
"""

import argparse
import gc
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from engine.fold import BatchBuilder, TableSpec  # noqa: E402
from engine.runner import DEFAULT_MAX_CHANGES_PER_TRANSACTION, Engine, _counting  # noqa: E402
from engine.source import SourceDatabase  # noqa: E402
from engine.writers.duckdb import DuckDBWriter  # noqa: E402
from engine.writers.postgres import PostgresWriter  # noqa: E402
from rosetta.pgcluster import Cluster, free_port  # noqa: E402

TABLE = TableSpec("public", "orders", "orders")


def fill(conn, first: int, last: int) -> None:
    conn.execute(
        """
        INSERT INTO orders
        SELECT g, g %% 10000, (g %% 100000) / 100.0, 'order note number ' || g,
               jsonb_build_object('sku', 'SKU-' || g, 'qty', g %% 7, 'tags', jsonb_build_array('a', 'b', 'c'),
                                  'address', repeat('x', 120), 'flag', g %% 2 = 0),
               now() - (g || ' seconds')::interval, now()
        FROM generate_series(%s::bigint, %s::bigint) g
        """,
        [first, last],
    )


def workload(conn, rows: int, changes: int) -> int:
    """Inserts, updates and deletes in transactions of 1,000 changes; returns the count."""
    inserts, updates = int(changes * 0.70), int(changes * 0.25)
    deletes = changes - inserts - updates
    done = 0
    for start in range(0, inserts, 1000):
        fill(conn, rows + start + 1, rows + min(start + 1000, inserts))
        done += min(1000, inserts - start)
    for start in range(0, updates, 1000):
        conn.execute(
            "UPDATE orders SET amount = amount + 1, updated_at = now() WHERE id > %s AND id <= %s",
            [start, min(start + 1000, updates)],
        )
        done += min(1000, updates - start)
    for start in range(0, deletes, 1000):
        conn.execute(
            "DELETE FROM orders WHERE id > %s AND id <= %s",
            [rows - start - min(1000, deletes - start), rows - start],
        )
        done += min(1000, deletes - start)
    return done


class PeakRSS:
    """Samples this process's resident set size in a thread."""

    def __init__(self):
        self.peak = 0.0
        self.lock = threading.Lock()
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def now() -> float:
        with open("/proc/self/status") as status:
            for row in status:
                if row.startswith("VmRSS:"):
                    return int(row.split()[1]) / 1024
        return 0.0

    def reset(self) -> float:
        with self.lock:
            self.peak = self.now()
            return self.peak

    def _sample(self) -> None:
        while True:
            with self.lock:
                self.peak = max(self.peak, self.now())
            time.sleep(0.02)


class ServerCPU:
    """CPU time of the clusters' processes while a line runs, by kind (walsender, the
    destination's backends, the native apply worker, each cluster's background processes),
    from /proc, sampled every 0.1 s so that processes that come and go within the line are seen;
    the time each kind, and this process's threads, spent runnable but waiting for one of the
    machine's cores (/proc/<pid>/schedstat); and the WAL the destination cluster wrote meanwhile."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, clusters: dict):
        """`clusters`: {name: Cluster}, the name for the background processes' line."""
        self.postmasters = {
            int((cluster.data_dir / "postmaster.pid").read_text().split()[0]): name
            for name, cluster in clusters.items()
        }
        self.destination = clusters.get("destination")

    def _wal_position(self) -> int:
        if self.destination is None:
            return 0
        with psycopg.connect(self.destination.dsn(), autocommit=True) as conn:
            return conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::int8").fetchone()[0]

    def _children(self) -> dict[int, tuple[str, int]]:
        found = {}
        for postmaster, name in self.postmasters.items():
            for pid in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # gone meanwhile
                if not title.startswith("postgres: "):
                    continue  # just forked or exiting (a zombie's cmdline is empty): keep its last sample
                found[int(pid)] = (
                    self._kind(title, name),
                    int(fields[11]) + int(fields[12]),  # utime + stime
                    self._waited(pid),
                )
        for tid in os.listdir("/proc/self/task"):  # this process's threads (the applier's come and go)
            found[-int(tid)] = ("this process", 0, self._waited(f"self/task/{tid}"))
        return found

    @staticmethod
    def _waited(pid) -> float:
        """Seconds the process spent runnable but waiting for a CPU (/proc/<pid>/schedstat)."""
        try:
            return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError):
            return 0.0

    @staticmethod
    def _kind(title: str, cluster: str) -> str:
        title = title.removeprefix("postgres: ")
        for kind in ("walsender", "logical replication", "autovacuum"):
            if kind in title:
                return "native apply worker" if kind == "logical replication" else kind
        parts = title.split()
        if len(parts) >= 2 and parts[0] == "postgres":  # "postgres <database> <client> ..."
            return f"backends of {parts[1]}"
        return f"{cluster} background (checkpointer, WAL writer, ...)"

    def __enter__(self):
        self.wal_start = self._wal_position()
        self.start = self._children()
        self.last = dict(self.start)
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.last.update(self._children())
            time.sleep(0.1)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.last.update(self._children())
        self.wal_written = self._wal_position() - self.wal_start

    def summary(self) -> str:
        spent, waited = {}, {}
        for pid, (kind, ticks, wait) in self.last.items():
            _, ticks_before, wait_before = self.start.get(pid, (kind, 0, 0.0))
            spent[kind] = spent.get(kind, 0) + (ticks - ticks_before) / self.TICK
            waited[kind] = waited.get(kind, 0) + wait - wait_before
        cpu = ", ".join(
            f"{kind} {seconds:.2f} s"
            for kind, seconds in sorted(spent.items(), key=lambda i: -i[1])
            if seconds >= 0.05
        )
        cpu += "; waiting for a CPU: " + ", ".join(
            f"{kind} {seconds:.2f} s"
            for kind, seconds in sorted(waited.items(), key=lambda i: -i[1])
            if seconds >= 0.05
        )
        return cpu + (
            f"; destination WAL written {self.wal_written / 1e6:,.0f} MB" if self.wal_written >= 1e6 else ""
        )


class TimedChunks:
    """Wraps the snapshot's chunk iterator to count the time spent waiting for the source."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        started = time.perf_counter()
        try:
            return next(self.chunks)
        finally:
            self.seconds += time.perf_counter() - started


def dlt_snapshot(port: int, work: Path, backend: str) -> tuple[int, float] | None:
    """dlt's sql_database source into a DuckDB file; None when dlt is not installed."""
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")  # dlt warns per batch about jsonb as text
    try:
        import dlt
        from dlt.sources.sql_database import sql_table
    except ImportError:
        return None
    import duckdb

    logging.getLogger("dlt").setLevel(logging.ERROR)
    path = work / f"dlt_{backend}.duckdb"
    started = time.perf_counter()
    source = sql_table(
        credentials=f"postgresql+psycopg://postgres@127.0.0.1:{port}/bench_src",
        table="orders",
        backend=backend,
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        destination=dlt.destinations.duckdb(str(path)),
        dataset_name="dlt",
        pipelines_dir=str(work / "dlt"),
    )
    pipeline.run(source, write_disposition="replace")
    seconds = time.perf_counter() - started
    with duckdb.connect(str(path)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM dlt.orders").fetchone()
    return count, seconds


def wait_for_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:>11,.0f}/s" if seconds else "          -"


def line(label: str, count: int, nbytes: int, seconds: float, limit: float | None = None) -> None:
    share = f"  {count / seconds / limit:6.1%} of the limit" if limit and seconds else ""
    print(f"  {label:<44}{rate(count, seconds)}  {nbytes / 1e6 / seconds:7.1f} MB/s  {seconds:7.2f} s{share}")


def copy_discarded(kwargs: dict, copy_format: str) -> tuple[int, int, float]:
    with psycopg.connect(**kwargs) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        nbytes = 0
        with cur.copy(f"COPY (SELECT * FROM orders) TO STDOUT WITH (FORMAT {copy_format})") as copy:
            for block in copy:
                nbytes += len(block)
        seconds = time.perf_counter() - started
        (count,) = conn.execute("SELECT count(*) FROM orders").fetchone()
    return count, nbytes, seconds


def peek_discarded(kwargs: dict, slot: str) -> tuple[int, int, float]:
    # A server-side cursor: the server decodes the whole peek before the first row either
    # way, but this process holds 10,000 rows at a time. A client-side cursor held all of
    # them in libpq's memory, which the C library did not always give back: the CDC lines
    # after it then started from ~570 MB of RSS instead of ~200 MB (in 1 of 9 runs).
    with psycopg.connect(**kwargs) as conn, conn.cursor(name="peek", binary=True) as cur:
        started = time.perf_counter()
        cur.itersize = 10_000
        cur.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'bench')",
            [slot],
        )
        count = nbytes = 0
        while rows := cur.fetchmany(10_000):
            count += len(rows)
            nbytes += sum(len(data) for (data,) in rows)
        return count, nbytes, time.perf_counter() - started


def copy_table(source_kwargs: dict, target_kwargs: dict) -> None:
    """The source table's rows into the same table of another database (binary COPY)."""
    with (
        psycopg.connect(**source_kwargs) as src,
        psycopg.connect(**target_kwargs) as dst,
        src.cursor().copy("COPY orders TO STDOUT (FORMAT binary)") as out,
        dst.cursor().copy("COPY orders FROM STDIN (FORMAT binary)") as into,
    ):
        for block in out:
            into.write(block)


def native_subscription(source_kwargs: dict, native_kwargs: dict, slot: str, end_lsn: str) -> float:
    """Enable the subscription on `slot` and time it until the slot confirms `end_lsn`."""
    with (
        psycopg.connect(**native_kwargs, autocommit=True) as native,
        psycopg.connect(**source_kwargs, autocommit=True) as source,
    ):
        started = time.perf_counter()
        native.execute("ALTER SUBSCRIPTION native ENABLE")
        while True:
            (done,) = source.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                [end_lsn, slot],
            ).fetchone()
            if done:
                seconds = time.perf_counter() - started
                break
            if time.perf_counter() - started > 3600:
                raise RuntimeError("the native subscription did not catch up within an hour")
            time.sleep(0.05)
        native.execute("ALTER SUBSCRIPTION native DISABLE")
    return seconds


def peek_messages(kwargs: dict, slot: str) -> list[bytes]:
    """Every pgoutput message of one peek of the backlog, in memory (not timed)."""
    with psycopg.connect(**kwargs, autocommit=True) as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'bench')",
            [slot],
        )
        return [data for (data,) in cur]


def decode_only(
    messages: list[bytes], part_size: int | None, wire_rows: bool = False
) -> tuple[int, float, str]:
    """Decode and fold the backlog without applying it (the client's share). In parts of
    `part_size` messages ended on a commit, as a run folds its stream (each part's batch
    dropped once built, as a run drops it once applied), or (None) in one batch of the
    whole backlog. `wire_rows`: rows kept as pgoutput's bytes, as the PostgreSQL writer's
    fold keeps them. Returns (changes, seconds, this thread's CPU: user, kernel, page faults):
    a batch of the whole backlog is ~1 GB of fresh memory, whose page faults this machine
    (a VM) makes cost up to ~10 us each, more than the fold itself."""
    gc.disable()  # as the engine does while it builds a batch
    before = resource.getrusage(resource.RUSAGE_THREAD)
    started = time.perf_counter()
    relations = {}
    changes = 0

    # text values: what both writers take
    def new_builder():
        return BatchBuilder(0, {TABLE.key: TABLE}, text_values=True, relations=relations, wire_rows=wire_rows)

    builder = new_builder()
    for data in messages:
        builder.feed(data)
        if part_size and builder.messages >= part_size and data[0] == 67:  # a Commit ends a part
            changes += builder.finish().changes
            builder = new_builder()
    changes += builder.finish().changes
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_THREAD)
    del builder
    gc.enable()
    cpu = (
        f"CPU user {after.ru_utime - before.ru_utime:.2f} s, kernel {after.ru_stime - before.ru_stime:.2f} s "
        f"({after.ru_minflt - before.ru_minflt:,} page faults)"
    )
    return changes, seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--changes", type=int, default=300_000)
    parser.add_argument(
        "--max-changes-per-transaction", type=int, default=DEFAULT_MAX_CHANGES_PER_TRANSACTION
    )  # the Pipeline default
    parser.add_argument("--read-path", choices=["stream", "peek"], default="stream")
    parser.add_argument("--dlt-backend", choices=["pyarrow", "sqlalchemy", "none"], default="pyarrow")
    # Only the peek limit and the decode + fold line: the client's share, which a shared
    # machine's load disturbs less than the end-to-end figures.
    parser.add_argument("--decode-only", action="store_true")
    # One destination's lines only, to measure a change to its writer in less time.
    parser.add_argument("--writers", choices=["both", "postgres", "duckdb"], default="both")
    # Rosetta's PostgreSQL destination behind bench/delay_proxy.py, this many ms away each way
    # (the source, the subscription and the limits stay next door): what its round trips cost.
    parser.add_argument("--destination-latency-ms", type=float, default=0)
    args = parser.parse_args()
    rss = PeakRSS()
    proxy = None

    work = Path(tempfile.mkdtemp(prefix="rosetta-bench-"))
    # Source and destinations in two clusters, as they are deployed: the source's WAL then
    # holds the backlog alone, and each consumer decodes the same WAL (in one cluster, each
    # would also decode what the destinations before it wrote).
    # Autovacuum off in both: a VACUUM of a table an earlier line loaded, starting at a
    # random moment, took a core from whichever line was running (the peek limit went
    # from ~500k to ~285k changes/s in most full runs). The bench vacuums where it loads.
    quiet = {"autovacuum": "off"}
    cluster = Cluster(settings=quiet).start()
    destination = Cluster(settings=quiet)
    clusters = {"source": cluster, "destination": destination}
    try:
        destination.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_src")
        with psycopg.connect(destination.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_dst")
            admin.execute("CREATE DATABASE bench_native")  # PostgreSQL's own subscription
        source_kwargs = {"host": "127.0.0.1", "port": cluster.port, "dbname": "bench_src", "user": "postgres"}
        native_kwargs = {**source_kwargs, "port": destination.port, "dbname": "bench_native"}
        destination_port = destination.port
        if args.destination_latency_ms:
            destination_port = free_port()
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("delay_proxy.py")),
                    str(destination_port),
                    str(destination.port),
                    str(args.destination_latency_ms),
                ]
            )
            wait_for_port(destination_port)
            print(
                f"Rosetta's PostgreSQL destination {args.destination_latency_ms:g} ms away each way (bench/delay_proxy.py)"
            )
        writers = {
            "PostgreSQL": PostgresWriter(
                {
                    "host": "127.0.0.1",
                    "port": destination_port,
                    "database": "bench_dst",
                    "username": "postgres",
                    "password": "",
                    "schema": "public",
                }
            ),
            "DuckDB": DuckDBWriter({"path": str(work / "bench.duckdb")}),
        }
        if args.writers != "both":
            writers = {
                name: writer for name, writer in writers.items() if name.lower().startswith(args.writers[:4])
            }
        slots = {"PostgreSQL": "bench_pg", "DuckDB": "bench_duck"}
        table_ddl = """
            CREATE TABLE orders (
                id bigint PRIMARY KEY, customer int, amount numeric(12,2), note text,
                details jsonb, created_at timestamptz, updated_at timestamptz)
        """
        with psycopg.connect(**source_kwargs, autocommit=True) as conn:
            conn.execute(table_ddl)
            for start in range(0, args.rows, 100_000):
                fill(conn, start + 1, min(start + 100_000, args.rows))
            conn.execute("VACUUM ANALYZE orders")
            conn.execute("CREATE PUBLICATION bench FOR TABLE orders")
            for slot in [*slots.values(), "bench_decode", "bench_native"]:  # decode-only figure, subscription
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
        if args.changes and not args.decode_only:
            # The subscriber starts from the same rows, so its updates and deletes find them.
            with psycopg.connect(**native_kwargs, autocommit=True) as conn:
                conn.execute(table_ddl)
            copy_table(source_kwargs, native_kwargs)
            with psycopg.connect(**native_kwargs, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE orders")
                conn.execute(
                    sql.SQL(
                        "CREATE SUBSCRIPTION native CONNECTION {} PUBLICATION bench WITH (copy_data = false, "
                        "create_slot = false, slot_name = 'bench_native', enabled = false)"
                    ).format(sql.Literal(cluster.dsn("bench_src")))
                )
                # Written out now, not by a checkpoint in the middle of the snapshot lines: the
                # copy is as large as the snapshot, and its dirty pages and WAL made the
                # PostgreSQL snapshot line vary from 30% to 55% of the limit.
                conn.execute("CHECKPOINT")

        if args.decode_only:
            writers, args.dlt_backend = {}, "none"
        else:
            print(f"Snapshot of {args.rows:,} rows")
        count, copy_bytes, seconds = copy_discarded(source_kwargs, "binary")
        copy_limit = count / seconds
        line("limit: COPY TO STDOUT binary, discarded", count, copy_bytes, seconds)
        count, nbytes, seconds = copy_discarded(source_kwargs, "csv")
        line("limit: COPY TO STDOUT csv, discarded", count, nbytes, seconds)
        rates = {}
        for name, writer in writers.items():
            with SourceDatabase(source_kwargs) as source:
                engine = Engine(
                    source, writer, pipeline_key="bench", slot=slots[name], publication="bench",
                    tables=[TableSpec("public", "orders", "orders")], max_changes_per_transaction=args.max_changes_per_transaction,
                )  # fmt: skip
                engine.prepare()
                writer.read_checkpoint("bench")  # connected before the clock starts
                spec = engine.tables[TABLE.key]
                relation = source.describe_table(spec.schema, spec.table)
                select_list = writer.snapshot_columns(relation)
                estimate = source.estimated_rows(spec.schema, spec.table)
                reported = []  # rows copied as the run's progress callback is told them
                baseline = rss.reset()
                started = time.perf_counter()
                # what Engine.snapshot_table does for a run (progress counted), with the
                # source's share of the time counted
                with source.snapshot(relation, writer.snapshot_format, select_list) as chunks:
                    counted = _counting(
                        chunks,
                        writer.snapshot_format,
                        estimate,
                        lambda rows, _estimate, reported=reported: reported.append(rows),
                        source.snapshot_rows_sent,
                    )
                    timed = TimedChunks(counted)
                    loaded = writer.load_snapshot(relation, spec.target_table, timed, 0)
                seconds = time.perf_counter() - started
            rates[name] = loaded / seconds
            line(
                f"Rosetta snapshot into {name} ({writer.snapshot_format})",
                loaded,
                copy_bytes,
                seconds,
                copy_limit,
            )
            steps = getattr(writer, "snapshot_seconds", None)
            if steps:  # the PostgreSQL writer's own steps
                went = (
                    ", ".join(
                        f"{step} {spent:.2f} s"
                        + (
                            f" (of which waiting for the source's COPY {timed.seconds:.2f} s)"
                            if step == "load"
                            else ""
                        )
                        for step, spent in steps.items()
                    )
                    + f"; outside the writer (source connection, snapshot start and end) {seconds - sum(steps.values()):.2f} s"
                )
            else:
                went = (
                    f"waiting for the source COPY {timed.seconds:.2f} s, "
                    f"writer (destination load, key/index, swap) {seconds - timed.seconds:.2f} s"
                )
            print(f"    time went to: {went}; RSS {baseline:.0f} -> peak {rss.peak:.0f} MB")
            print(
                f"    progress: {len(reported)} reports, rows copied {reported[len(reported) // 2]:,} "
                f"mid-copy, {reported[-1]:,} at the last (of ~{estimate:,} estimated)"
            )
        if args.dlt_backend != "none":
            found = dlt_snapshot(cluster.port, work, args.dlt_backend)
            if found is None:
                print("  (dlt is not installed: .venv/bin/pip install -r bench/requirements.txt to compare)")
            else:
                count, seconds = found
                line(
                    f"dlt sql_database ({args.dlt_backend}) into DuckDB",
                    count,
                    copy_bytes,
                    seconds,
                    copy_limit,
                )
                print(f"    Rosetta into DuckDB is {rates['DuckDB'] / (count / seconds):.1f}x dlt's rate")

        if args.changes:  # --changes 0: snapshots only
            # synchronous_commit on: every change is flushed, so one peek can see all of them.
            with psycopg.connect(
                **source_kwargs, autocommit=True, options="-c synchronous_commit=on"
            ) as conn:
                changes = workload(conn, args.rows, args.changes)
                (end_lsn,) = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
                conn.execute("CHECKPOINT")
            if "PostgreSQL" in writers:
                with psycopg.connect(destination.dsn("bench_dst"), autocommit=True) as conn:
                    # what autovacuum would have done after the snapshot (the subscriber's copy
                    # had its VACUUM), and the snapshot lines' writes, not in the CDC lines
                    conn.execute("VACUUM ANALYZE orders")
                    conn.execute("CHECKPOINT")
            print(
                f"\nCDC catch-up of {changes:,} changes (max changes per transaction "
                f"{args.max_changes_per_transaction:,}, read path {args.read_path})"
            )
            count, nbytes, seconds = peek_discarded(source_kwargs, slots["DuckDB"])
            peek_limit = count / seconds
            line("limit: one peek of everything, discarded", count, nbytes, seconds)
            native_rate = None

            def clean_destination():
                # Each CDC line starts with no dirty buffers in the destination cluster: the
                # lines before it wrote ~450 MB of WAL there, and a checkpoint (or evictions by
                # the next line's backends) would charge their writes to whichever line came next.
                with psycopg.connect(destination.dsn(), autocommit=True) as conn:
                    conn.execute("CHECKPOINT")

            if not args.decode_only:
                clean_destination()
                gc.collect()
                with ServerCPU(clusters) as servers:
                    seconds = native_subscription(source_kwargs, native_kwargs, "bench_native", end_lsn)
                native_rate = changes / seconds
                line("PostgreSQL's own subscription (apply worker)", changes, nbytes, seconds, peek_limit)
                print(f"    the clusters' CPU: {servers.summary()}")
            for name, writer in writers.items():
                totals = {}
                applied = 0
                clean_destination()
                gc.collect()
                baseline = rss.reset()
                usage = resource.getrusage(resource.RUSAGE_SELF)
                servers = ServerCPU(clusters).__enter__()
                started = time.perf_counter()
                runs = 0
                while True:
                    # As pipelines.services runs it: one source connection, one stream and
                    # one writer connection for the run, part after part until caught up
                    # (the peek path reads one part per call, so it loops here).
                    runs += 1
                    with SourceDatabase(source_kwargs) as source:
                        engine = Engine(
                            source, writer, pipeline_key="bench", slot=slots[name], publication="bench",
                            tables=[TableSpec("public", "orders", "orders")],
                            max_changes_per_transaction=args.max_changes_per_transaction, read_path=args.read_path,
                        )  # fmt: skip
                        engine.prepare()
                        outcome = engine.run_batch()
                    writer.close()
                    applied += outcome.batch.changes
                    for stage, spent in outcome.seconds.items():
                        totals[stage] = totals.get(stage, 0) + spent
                    if outcome.caught_up:
                        break
                seconds = time.perf_counter() - started
                servers.__exit__()
                line(
                    f"Rosetta CDC into {name} ({runs} run{'s' if runs > 1 else ''})",
                    applied,
                    nbytes,
                    seconds,
                    peek_limit,
                )
                print(f"    {applied / seconds / native_rate:.2f}x the rate of PostgreSQL's own subscription")
                print(
                    "    time went to: "
                    + ", ".join(
                        f"{stage}{' (in a thread, overlapping the next read)' if stage == 'apply' and args.read_path == 'stream' else ''} {spent:.2f} s ({spent / seconds:.0%})"
                        for stage, spent in totals.items()
                    )
                    + f"; other (connect, prepare, checkpoint) {seconds - sum(v for k, v in totals.items() if k != 'apply' or args.read_path == 'peek'):.2f} s"
                    + f"; RSS {baseline:.0f} -> peak {rss.peak:.0f} MB"
                )
                used = resource.getrusage(resource.RUSAGE_SELF)
                print(
                    f"    this process's CPU: user {used.ru_utime - usage.ru_utime:.2f} s, kernel "
                    f"{used.ru_stime - usage.ru_stime:.2f} s ({used.ru_minflt - usage.ru_minflt:,} page faults)"
                )
                print(f"    the clusters' CPU: {servers.summary()}")
            # Last: one list of every message swells this process (Python keeps the memory),
            # which would blur the RSS figures above.
            messages = peek_messages(source_kwargs, "bench_decode")
            decoded, seconds, cpu = decode_only(messages, args.max_changes_per_transaction)
            line("decode + fold only, text values (client side)", decoded, nbytes, seconds, peek_limit)
            print(
                f"    in parts of {args.max_changes_per_transaction:,} messages, as a run folds them; {cpu}"
            )
            if native_rate:
                print(f"    {decoded / seconds / native_rate:.2f}x the rate of PostgreSQL's own subscription")
            decoded, seconds, cpu = decode_only(messages, None)
            print(
                f"    in one batch of the whole backlog: {rate(decoded, seconds).strip()} "
                f"({decoded / seconds / peek_limit:.1%} of the limit); {cpu}"
            )
            decoded, seconds, cpu = decode_only(messages, args.max_changes_per_transaction, wire_rows=True)
            print(
                f"    rows kept as pgoutput's bytes (the PostgreSQL writer's fold), in parts: "
                f"{rate(decoded, seconds).strip()} ({decoded / seconds / peek_limit:.1%} of the limit); {cpu}"
            )
            del messages
        for writer in writers.values():
            writer.close()
    finally:
        if proxy is not None:
            proxy.terminate()
        cluster.stop()
        destination.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
