"""Batch pipelines' schedules: django-celery-beat's IntervalSchedule and CrontabSchedule rows,
given in the API as a number of seconds or a cron expression."""

from celery.schedules import crontab
from django_celery_beat.models import CrontabSchedule, IntervalSchedule


def interval_for(seconds: int | None) -> IntervalSchedule | None:
    if not seconds:
        return None
    schedule, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    return schedule


def crontab_for(expression: str | None) -> CrontabSchedule | None:
    """A cron expression ("minute hour day-of-month month day-of-week", UTC) as a schedule row;
    raises ValueError saying what is wrong."""
    if not expression or not expression.strip():
        return None
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression!r} has {len(fields)} fields; a cron expression has 5: "
            "minute hour day-of-month month day-of-week."
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    except Exception as error:  # celery raises ValueError or its own ParseException
        raise ValueError(f"{expression!r} is not a valid cron expression: {error}") from None
    schedule, _ = CrontabSchedule.objects.get_or_create(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        timezone="UTC",
    )
    return schedule


def interval_seconds(schedule: IntervalSchedule | None) -> int | None:
    if schedule is None:
        return None
    return int(schedule.schedule.run_every.total_seconds())


def cron_expression(schedule: CrontabSchedule | None) -> str | None:
    if schedule is None:
        return None
    return " ".join(
        [schedule.minute, schedule.hour, schedule.day_of_month, schedule.month_of_year, schedule.day_of_week]
    )
