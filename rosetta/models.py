from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """One operator action: who did what to which object, when, and through which door.

    Written by record_audit_event() (rosetta/audit.py) from the API, the admin and the
    commands alike. Never holds a secret: changed fields are recorded by name only.
    """

    class Via(models.TextChoices):
        API = "api", "API"
        ADMIN = "admin", "admin"
        COMMAND = "command", "command"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept when the user is deleted; for a command, the operating-system user who ran it.
    username = models.CharField(max_length=150, blank=True, default="")
    via = models.CharField(max_length=16, choices=Via.choices)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=32, db_index=True)
    # "app_label.model_name" and the primary key, so a deleted object's history stays findable.
    object_type = models.CharField(max_length=100, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    object_repr = models.CharField(max_length=200, blank=True, default="")
    changed_fields = models.JSONField(default=list, blank=True)
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id", "-at"], name="audit_object_at")]

    def __str__(self):
        target = f" {self.object_repr}" if self.object_repr else ""
        return f"{self.username or 'someone'} {self.action}{target} via {self.via}"


class Heartbeat(models.Model):
    """When a background component (a Celery worker, Celery Beat) was last seen alive.

    /api/health/ reads these, so any number of web processes agree on what is down.
    """

    class Component(models.TextChoices):
        WORKER = "worker"
        BEAT = "beat"

    component = models.CharField(max_length=16, choices=Component.choices, unique=True)
    seen_at = models.DateTimeField(default=timezone.now)
    hostname = models.CharField(max_length=255, blank=True, default="")

    def __str__(self):
        return f"{self.component} seen at {self.seen_at:%Y-%m-%d %H:%M:%S}"
