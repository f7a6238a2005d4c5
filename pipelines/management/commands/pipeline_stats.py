from django.core.management.base import BaseCommand, CommandError

from pipelines import batch
from pipelines.models import Pipeline


class Command(BaseCommand):
    help = "Print a pipeline's statistics: rows per destination table, runs, last success, rows/s, rejects."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The pipeline's name.")

    def handle(self, *args, name, **options):
        pipeline = Pipeline.objects.select_related("source", "destination").filter(name=name).first()
        if pipeline is None:
            raise CommandError(f"No pipeline named {name}.")
        stats = batch.pipeline_stats(pipeline)
        runs = stats["runs"]
        write = self.stdout.write
        write(f"Pipeline {pipeline.name} ({pipeline.source.get_kind_display()} -> {pipeline.destination})")
        for table in stats["tables"]:
            rows = "?" if table["rows"] is None else f"{table['rows']:,}"
            write(
                f"  {table['table']}: {rows} rows in the destination "
                f"(+{table['rows_inserted']:,} ~{table['rows_updated']:,} -{table['rows_deleted']:,} by runs)"
            )
        if stats["tables_error"]:
            write(f"  (destination not counted: {stats['tables_error']})")
        write(
            f"Runs: {runs['total']} ({runs['succeeded']} succeeded, {runs['failed']} failed, "
            f"{runs['skipped']} skipped)"
        )
        last = stats["last_success_at"]
        write(f"Last success: {last:%Y-%m-%d %H:%M:%S %Z}" if last else "Last success: never")
        rate = stats["last_run_rows_per_second"]
        write(f"Rows per second (last successful run): {'-' if rate is None else f'{rate:,.0f}'}")
        write(f"Rejected records: {stats['rows_rejected']:,}")
