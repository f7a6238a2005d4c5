from django.db import models
from django.utils import timezone


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
