from django.db import models
from django.utils import timezone

from engine.forecast import human_bytes
from engine.lsn import format_lsn
from sources.models import Source


class Resolution(models.TextChoices):
    RAW = "raw", "one probe"
    HOURLY = "hourly", "hourly max"


class Level(models.TextChoices):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"


LEVEL_RANK = {Level.OK: 0, Level.WARN: 1, Level.CRITICAL: 2}


def retained_wal_level(source: Source, retained_bytes: int) -> Level:
    """Where a slot's retained WAL stands against the source's thresholds."""
    if retained_bytes >= source.wal_critical_bytes:
        return Level.CRITICAL
    if retained_bytes >= source.wal_warn_bytes:
        return Level.WARN
    return Level.OK


class Condition(models.TextChoices):
    RETAINED_WAL = "retained_wal", "retained WAL over threshold"
    SLOT_INACTIVE = "slot_inactive", "slot inactive"
    WAL_STATUS = "wal_status", "slot wal_status"
    SLOT_LOST = "slot_lost", "slot lost"
    PROBE_FAILED = "probe_failed", "probe failing"


# Conditions about one replication slot: judged once per server and slot, not per source.
SLOT_CONDITIONS = (Condition.RETAINED_WAL, Condition.SLOT_INACTIVE, Condition.WAL_STATUS, Condition.SLOT_LOST)


def alert_key(
    condition: str, *, source_id: int | None = None, server_id: str = "", slot_name: str = ""
) -> str:
    """What one alert is about: a slot on a server, or else one source.

    Other kinds of alert (e.g. about a pipeline) take their own prefix.
    """
    if server_id:
        return f"server:{server_id}:slot:{slot_name}:{condition}"
    return f"source:{source_id}:{condition}"


class WalMetric(models.Model):
    """One probe of one source (or, past the full-resolution window, the max of one hour)."""

    # No index of its own: (source, -probed_at) below serves lookups by source.
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="wal_metrics", db_index=False)
    probed_at = models.DateTimeField(default=timezone.now)
    resolution = models.CharField(max_length=8, choices=Resolution.choices, default=Resolution.RAW)
    probes = models.PositiveIntegerField(default=1, help_text="How many probes this row summarises.")
    ok = models.BooleanField(default=True)
    error = models.TextField(blank=True, default="")
    warnings = models.JSONField(default=list, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    in_recovery = models.BooleanField(default=False)
    # The current LSN as a number: a position in the WAL stream, never a size.
    # bigint holds 8 EiB of WAL, centuries at any real write rate.
    lsn_position = models.BigIntegerField(null=True, blank=True)
    wal_dir_bytes = models.BigIntegerField("WAL directory bytes", null=True, blank=True)
    wal_segments = models.PositiveIntegerField(null=True, blank=True)
    wal_rate_bytes_per_s = models.FloatField("WAL written (bytes/s)", null=True, blank=True)
    heartbeat_lsn = models.CharField(max_length=32, blank=True, default="")
    system_identifier = models.CharField(
        max_length=32,
        blank=True,
        default="",
        db_default="",
        help_text="The server's pg_control_system() system_identifier.",
    )

    class Meta:
        verbose_name = "WAL metric"
        indexes = [
            models.Index(fields=["source", "-probed_at"], name="walmetric_source_time"),
            # Newest first across sources: the admin list and downsampling.
            models.Index(fields=["-probed_at"], name="walmetric_time"),
        ]

    def __str__(self):
        return f"{self.source_id} at {self.probed_at:%Y-%m-%d %H:%M:%S}"

    @property
    def current_lsn(self) -> str:
        return format_lsn(self.lsn_position)


class SlotMetric(models.Model):
    """One replication slot (any slot on the server, not only Rosetta's) at one probe."""

    # No index of its own: (source, -probed_at) below serves lookups by source.
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="slot_metrics", db_index=False)
    probed_at = models.DateTimeField(default=timezone.now)
    resolution = models.CharField(max_length=8, choices=Resolution.choices, default=Resolution.RAW)
    slot_name = models.CharField(max_length=64)
    plugin = models.CharField(max_length=64, blank=True, default="")
    slot_type = models.CharField(max_length=16, blank=True, default="")
    database = models.CharField(max_length=64, blank=True, default="")
    active = models.BooleanField(default=False)
    restart_lsn = models.CharField(max_length=32, blank=True, default="")
    confirmed_flush_lsn = models.CharField(max_length=32, blank=True, default="")
    retained_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Current LSN minus restart_lsn: the WAL this slot keeps on disk."
    )
    unconfirmed_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Current LSN minus confirmed_flush_lsn: what the consumer has not confirmed.",
    )
    wal_status = models.CharField(max_length=16, blank=True, default="")
    safe_wal_size = models.BigIntegerField(
        null=True, blank=True, help_text="Bytes of WAL that can still be written before the slot is lost."
    )
    inactive_since = models.DateTimeField(
        null=True, blank=True, help_text="Since when the slot has been neither active nor advancing."
    )

    class Meta:
        verbose_name = "slot metric"
        indexes = [
            models.Index(fields=["source", "-probed_at"], name="slotmetric_source_time"),
            models.Index(fields=["source", "slot_name", "-probed_at"], name="slotmetric_slot_time"),
            models.Index(fields=["-probed_at"], name="slotmetric_time"),
        ]

    def __str__(self):
        return f"{self.slot_name} at {self.probed_at:%Y-%m-%d %H:%M:%S}"

    @property
    def is_lost(self) -> bool:
        return self.wal_status == "lost"

    @property
    def reserves_wal(self) -> bool:
        """A physical slot created without reserving WAL has no restart_lsn: it holds nothing."""
        return (
            bool(self.restart_lsn) or self.resolution == Resolution.HOURLY and self.retained_bytes is not None
        )

    def display_bytes(self, value: int | None) -> str:
        """A size of this slot as shown everywhere: a lost slot has no meaningful figures."""
        if self.is_lost:
            return "n/a (lost)"
        if value is None:
            return "-"
        return human_bytes(value)

    @property
    def display_safe_wal_size(self) -> str:
        # NULL means unlimited only for a slot that still reserves WAL (PostgreSQL also
        # returns NULL for lost slots, and reports nothing for slots that reserve nothing).
        if self.is_lost:
            return "n/a (lost)"
        if not self.reserves_wal or not self.wal_status:
            return "-"
        return "unlimited" if self.safe_wal_size is None else human_bytes(self.safe_wal_size)


class WalSettings(models.Model):
    """The server's WAL budget settings, recorded when they change (bytes; -1 = unlimited)."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="wal_settings")
    recorded_at = models.DateTimeField(default=timezone.now)
    max_slot_wal_keep_size = models.BigIntegerField(null=True, blank=True)
    max_wal_size = models.BigIntegerField(null=True, blank=True)
    wal_keep_size = models.BigIntegerField(null=True, blank=True)
    wal_segment_size = models.BigIntegerField(null=True, blank=True)

    WATCHED = ("max_slot_wal_keep_size", "max_wal_size", "wal_keep_size", "wal_segment_size")

    class Meta:
        verbose_name = "WAL settings change"
        indexes = [models.Index(fields=["source", "-recorded_at"], name="walsettings_source_time")]

    def __str__(self):
        return f"{self.source} settings at {self.recorded_at:%Y-%m-%d %H:%M:%S}"

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.WATCHED}

    def describe(self) -> dict:
        return {
            name: ("unlimited" if value == -1 else human_bytes(value))
            for name, value in self.as_dict().items()
            if value is not None
        }


class AlertState(models.Model):
    """The current level of one condition; a change creates an AlertEvent.

    `key` says what the alert is about (alert_key()): a slot on a server (identified by
    its system identifier, so that every source on that server shares one state), or
    one source. `source` is the source the alert is attributed to: for a slot, the
    source that owns it when one does.
    """

    key = models.CharField(max_length=300, unique=True)
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="alert_states")
    condition = models.CharField(max_length=32, choices=Condition.choices)
    server_id = models.CharField(
        max_length=200, blank=True, default="", help_text="The server's system identifier (or host:port)."
    )
    slot_name = models.CharField(max_length=64, blank=True, default="")
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.OK)
    message = models.TextField(blank=True, default="")
    since = models.DateTimeField(default=timezone.now, help_text="When the current level began.")
    last_event_at = models.DateTimeField(
        null=True, blank=True, help_text="The last change or reminder notified for this condition."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["source", "condition"], name="alertstate_source_condition")]

    def __str__(self):
        about = f" slot {self.slot_name}" if self.slot_name else ""
        return f"{self.source}{about} {self.condition}: {self.level}"


class AlertEvent(models.Model):
    """A change of an alert's level (or a reminder that it is still bad).

    Also the notification work queue: rows with notified_at NULL still owe an
    email or webhook, claimed with a conditional UPDATE on next_attempt_at.
    """

    class Kind(models.TextChoices):
        CHANGE = "change"
        REMINDER = "reminder"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="alert_events")
    created_at = models.DateTimeField(default=timezone.now)
    condition = models.CharField(max_length=32, choices=Condition.choices)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.CHANGE)
    previous_level = models.CharField(max_length=8, choices=Level.choices)
    level = models.CharField(max_length=8, choices=Level.choices)
    message = models.TextField()
    slot_name = models.CharField(max_length=64, blank=True, default="")
    value_bytes = models.BigIntegerField(null=True, blank=True)
    forecast = models.TextField(blank=True, default="")
    forecast_seconds = models.FloatField(
        null=True, blank=True, help_text="Seconds until the critical threshold or the slot's loss."
    )
    notified_at = models.DateTimeField(null=True, blank=True)
    email_sent_at = models.DateTimeField(null=True, blank=True)
    webhook_sent_at = models.DateTimeField(null=True, blank=True)
    notify_attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    notify_error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["source", "-created_at"], name="alertevent_source_time"),
            models.Index(fields=["-created_at"], name="alertevent_time"),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(notified_at__isnull=True),
                name="alertevent_pending",
            ),
        ]

    def __str__(self):
        return f"{self.source} {self.condition}: {self.previous_level} -> {self.level}"
