from django.conf import settings
from django.core.management.base import BaseCommand

from pipelines import services


class Command(BaseCommand):
    help = (
        "Delete pipeline runs older than ROSETTA_RUN_HISTORY_DAYS (failed and interrupted ones older "
        "than ROSETTA_FAILED_RUN_HISTORY_DAYS), keeping each pipeline's newest run; what the hourly "
        "Beat task does."
    )

    def handle(self, *args, **options):
        deleted = services.prune_runs()
        self.stdout.write(
            f"Deleted {deleted:,} runs (kept: the last {settings.ROSETTA_RUN_HISTORY_DAYS} days, failed ones "
            f"{settings.ROSETTA_FAILED_RUN_HISTORY_DAYS} days, and each pipeline's newest run)."
        )
