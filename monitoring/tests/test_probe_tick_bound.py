"""A probe tick ends on time whatever the servers do, leaves nothing running, and keeps what it has."""

import signal
import socket
import threading
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from monitoring.models import WalMetric
from monitoring.services import probe_sources

from .conftest import StallingProxy

pytestmark = pytest.mark.django_db(transaction=True)


def probe_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("wal-probe")]


@pytest.fixture
def stalling_proxies(pg_cluster):
    proxies = []

    def make(count: int) -> list[StallingProxy]:
        made = [StallingProxy(pg_cluster.port) for _ in range(count)]
        proxies.extend(made)
        return made

    yield make
    for proxy in proxies:
        proxy.close()


def run_tick_in_thread(limit: float):
    """probe_sources() in a thread: (finished?, seconds, metrics); the old code never ended."""
    outcome = {}

    def run():
        try:
            outcome["metrics"] = probe_sources()
        finally:
            connection.close()  # this thread's own connection to the test database

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive(), time.monotonic() - started, outcome.get("metrics")


def test_a_tick_ends_on_time_when_more_servers_stall_than_may_be_probed_in_parallel(
    make_source, stalling_proxies, hanging_port, settings
):
    settings.ROSETTA_PROBE_MAX_PARALLEL = 2
    settings.ROSETTA_STATEMENT_TIMEOUT_MS = 1000
    healthy = [make_source(name=f"healthy-{index}") for index in range(3)]
    stalled = [
        make_source(name=f"stalled-{index}", pg_port=proxy.port)
        for index, proxy in enumerate(stalling_proxies(3))
    ]
    silent = make_source(name="silent", pg_port=hanging_port)

    finished, seconds, metrics = run_tick_in_thread(20)

    assert finished, "the tick did not end within 20 s"
    # Bound: connect timeout 2 s + statement timeout 1 s + 2 s grace, whatever the parallel limit.
    assert seconds < 5 + 1.5, seconds
    by_name = {metric.source.name: metric for metric in metrics}
    for source in healthy:
        assert by_name[source.name].ok, by_name[source.name].error
    for source in stalled:
        error = by_name[source.name].error
        assert not by_name[source.name].ok
        assert "did not answer within 5 s" in error and "the connection was closed" in error
    assert not by_name[silent.name].ok and "within the timeout" in by_name[silent.name].error
    assert WalMetric.objects.count() == 7


def test_a_stalled_server_leaves_no_probe_thread_or_connection_behind(
    make_source, stalling_proxies, settings
):
    settings.ROSETTA_STATEMENT_TIMEOUT_MS = 1000
    proxies = stalling_proxies(2)
    for index, proxy in enumerate(proxies):
        make_source(name=f"stalled-{index}", pg_port=proxy.port)
    make_source(name="healthy")

    for _ in range(2):  # a long-lived worker runs tick after tick
        metrics = probe_sources()
        assert sum(metric.ok for metric in metrics) == 1

    assert probe_threads() == []
    deadline = time.monotonic() + 2
    while sum(proxy.clients_gone for proxy in proxies) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Every connection the probes opened to the stalled servers was closed by the probe.
    assert [proxy.clients_gone for proxy in proxies] == [2, 2]


def test_a_tick_cut_short_by_the_task_time_limit_keeps_what_it_has(make_source, stalling_proxies, settings):
    """Celery's soft time limit raises SoftTimeLimitExceeded in the task's thread, as the alarm does here."""
    settings.ROSETTA_STATEMENT_TIMEOUT_MS = 10_000
    healthy = [make_source(name=f"healthy-{index}") for index in range(2)]
    (proxy,) = stalling_proxies(1)
    stalled = make_source(name="stalled", pg_port=proxy.port)

    def time_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, time_limit)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        with pytest.raises(SoftTimeLimitExceeded):
            probe_sources()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    for source in healthy:
        assert WalMetric.objects.get(source=source).ok
    assert not WalMetric.objects.filter(source=stalled).exists()
    assert probe_threads() == []


def test_a_server_that_never_answers_at_all_is_failed_within_the_connect_timeout(make_source, settings):
    settings.ROSETTA_PROBE_MAX_PARALLEL = 1
    listeners = []
    for index in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        listeners.append(sock)
        make_source(name=f"silent-{index}", pg_port=sock.getsockname()[1])
    make_source(name="healthy")
    try:
        finished, seconds, metrics = run_tick_in_thread(20)
    finally:
        for sock in listeners:
            sock.close()
    assert finished and seconds < 5 + 1.5, seconds
    assert [metric.ok for metric in sorted(metrics, key=lambda m: m.source.name)] == [
        True,
        False,
        False,
        False,
    ]
    assert probe_threads() == []
