"""Alert notifications: email to the operators and an optional Slack-compatible webhook.

AlertEvent rows are the work queue. A sender claims a row with a conditional
UPDATE, tries each channel that has not succeeded yet, and on failure logs it
and schedules a retry with a doubling delay. Nothing here raises into the probe.
"""

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from engine.backoff import backoff_seconds

from .models import AlertEvent, Level

log = logging.getLogger(__name__)

# A claimed event is not picked up by another sender for this long.
CLAIM_LEASE = dt.timedelta(minutes=5)
# Retries double from ROSETTA_ALERT_RETRY_SECONDS up to this.
RETRY_MAX_SECONDS = 6 * 3600


class WebhookError(Exception):
    """A webhook POST failed; the message never contains the URL, which is a secret."""


def post_webhook(url: str, payload: dict, timeout: float) -> None:
    """POST JSON, raise WebhookError with the reason in words on any failure."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise WebhookError("ROSETTA_ALERT_WEBHOOK_URL must be an http or https URL.")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "rosetta-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
            response.read(1024)
    except urllib.error.HTTPError as error:
        raise WebhookError(f"the webhook answered HTTP {error.code}") from None
    except TimeoutError:
        raise WebhookError(f"the webhook did not answer within {timeout} s") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            raise WebhookError(f"the webhook did not answer within {timeout} s") from None
        raise WebhookError(f"the webhook could not be reached ({reason})") from None
    except OSError as error:
        raise WebhookError(f"the webhook could not be reached ({type(error).__name__})") from None


def subject_and_text(event: AlertEvent) -> tuple[str, str]:
    condition = event.get_condition_display()
    if event.kind == AlertEvent.Kind.REMINDER:
        headline = f"still {event.level.upper()}"
    elif event.level == Level.OK:
        headline = f"back to OK (was {event.previous_level.upper()})"
    else:
        headline = f"{event.level.upper()} (was {event.previous_level.upper()})"
    subject = f"[Rosetta] {event.source.name}: {condition} {headline}"
    lines = [event.message]
    if event.forecast:
        lines.append(f"Forecast: {event.forecast}")
    lines.append(f"At {event.created_at:%Y-%m-%d %H:%M:%S %Z}.")
    return subject, "\n".join(lines)


def webhook_payload(event: AlertEvent, subject: str, text: str) -> dict:
    """Slack-compatible: "text" is what Slack (and compatible chats) show."""
    return {
        "text": f"*{subject}*\n{text}",
        "rosetta": {
            "source": event.source.name,
            "condition": event.condition,
            "kind": event.kind,
            "previous_level": event.previous_level,
            "level": event.level,
            "slot_name": event.slot_name,
            "value_bytes": event.value_bytes,
            "forecast_seconds": event.forecast_seconds,
            "created_at": event.created_at.isoformat(),
        },
    }


def due_notifications(now: dt.datetime | None = None):
    """Events that still owe an email or webhook and whose (next) attempt is due."""
    return AlertEvent.objects.filter(
        notified_at__isnull=True,
        next_attempt_at__lte=now or timezone.now(),
        notify_attempts__lt=settings.ROSETTA_ALERT_MAX_ATTEMPTS,
    )


def send_pending_notifications(now: dt.datetime | None = None) -> int:
    """Deliver every event that is due; returns how many were fully delivered.

    Runs in its own task (monitoring.tasks.notify_pending_alerts), never in the probe tick.
    """
    now = now or timezone.now()
    due = list(due_notifications(now).select_related("source").order_by("created_at")[:100])
    delivered = 0
    for event in due:
        claimed = AlertEvent.objects.filter(
            pk=event.pk, notified_at__isnull=True, next_attempt_at=event.next_attempt_at
        ).update(next_attempt_at=now + CLAIM_LEASE)
        if claimed:
            delivered += _deliver(event, now)
    return delivered


def _deliver(event: AlertEvent, now: dt.datetime) -> int:
    subject, text = subject_and_text(event)
    recipients = list(settings.ROSETTA_ALERT_EMAILS)
    webhook_url = settings.ROSETTA_ALERT_WEBHOOK_URL
    errors = []
    if recipients and event.email_sent_at is None:
        try:
            send_mail(subject, text, None, recipients)
            event.email_sent_at = timezone.now()
        except Exception as error:  # noqa: BLE001 - any mail failure is retried
            errors.append(f"email: {type(error).__name__}: {error}")
    if webhook_url and event.webhook_sent_at is None:
        try:
            post_webhook(
                webhook_url, webhook_payload(event, subject, text), settings.ROSETTA_ALERT_WEBHOOK_TIMEOUT
            )
            event.webhook_sent_at = timezone.now()
        except WebhookError as error:
            errors.append(f"webhook: {error}")
    event.notify_attempts += 1
    if errors:
        event.notify_error = "; ".join(errors)
        delay = backoff_seconds(
            event.notify_attempts, settings.ROSETTA_ALERT_RETRY_SECONDS, RETRY_MAX_SECONDS
        )
        event.next_attempt_at = now + dt.timedelta(seconds=delay)
        if event.notify_attempts >= settings.ROSETTA_ALERT_MAX_ATTEMPTS:
            log.error(
                "Giving up notifying alert %s after %d attempts: %s",
                event.pk,
                event.notify_attempts,
                event.notify_error,
            )
        else:
            log.warning(
                "Notifying alert %s failed (attempt %d), retrying in %d s: %s",
                event.pk,
                event.notify_attempts,
                delay,
                event.notify_error,
            )
    else:
        event.notify_error = ""
        event.notified_at = timezone.now()
    event.save(
        update_fields=[
            "email_sent_at",
            "webhook_sent_at",
            "notify_attempts",
            "notify_error",
            "next_attempt_at",
            "notified_at",
        ]
    )
    return 0 if errors else 1
