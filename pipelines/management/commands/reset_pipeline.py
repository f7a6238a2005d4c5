from django.core.management.base import BaseCommand, CommandError

from pipelines import batch
from pipelines.models import Pipeline


class Command(BaseCommand):
    help = (
        "Clear a CSV or HTTP JSON pipeline's checkpoint in its destination, so that the next run "
        "loads every file (or page) again. Rows already loaded stay and are merged over."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The pipeline's name.")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, name, yes, **options):
        pipeline = Pipeline.objects.select_related("source", "destination").filter(name=name).first()
        if pipeline is None:
            raise CommandError(f"No pipeline named {name}.")
        if not pipeline.source.is_batch:
            raise CommandError(
                f"{name} reads PostgreSQL changes: its position is the replication slot. "
                "Refresh it to copy its tables again."
            )
        if not yes:
            answer = input(
                f"Clear the checkpoint of {name}? Its next run loads everything from {pipeline.source} "
                "again. Type the pipeline's name to confirm: "
            )
            if answer.strip() != name:
                raise CommandError("Not confirmed; nothing changed.")
        try:
            self.stdout.write(batch.reset_pipeline(pipeline))
        except ValueError as refusal:
            raise CommandError(f"Cannot reset {name}: {refusal}.") from None
