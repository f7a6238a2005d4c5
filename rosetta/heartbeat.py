"""Heartbeats of the background components, and the health of each component.

A worker records one when it starts and each time it runs the Beat-scheduled heartbeat
task; Beat records one each time it sends a task. /api/health/ reports a component
down when its heartbeat is older than ROSETTA_HEARTBEAT_STALE_SECONDS.
"""

import socket
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from .models import Heartbeat


def record(component: str) -> None:
    Heartbeat.objects.update_or_create(
        component=component, defaults={"seen_at": timezone.now(), "hostname": socket.gethostname()[:255]}
    )


def component_status(component: str, now=None) -> str:
    """ "ok", or why the component counts as down, in one line."""
    now = now or timezone.now()
    seen = Heartbeat.objects.filter(component=component).values_list("seen_at", flat=True).first()
    if seen is None:
        return f"down (no {component} has ever been seen)"
    age = (now - seen).total_seconds()
    if age > settings.ROSETTA_HEARTBEAT_STALE_SECONDS:
        return f"down (last seen {int(age)} s ago)"
    return "ok"


def probes_status(now=None) -> str:
    """ "ok" when every PostgreSQL source older than the stale window has a probe inside it
    (CSV and HTTP JSON sources have no WAL: the probe skips them)."""
    from monitoring.models import WalMetric
    from sources.models import Source

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.ROSETTA_PROBE_STALE_SECONDS)
    stale = (
        Source.objects.filter(created_at__lt=cutoff, kind=Source.Kind.POSTGRES)
        .exclude(Exists(WalMetric.objects.filter(source=OuterRef("pk"), probed_at__gte=cutoff)))
        .count()
    )
    if stale:
        return f"stale ({stale} source(s) not probed in {settings.ROSETTA_PROBE_STALE_SECONDS} s)"
    return "ok"
