from django.core.management.base import BaseCommand, CommandError

from pipelines import services
from pipelines.models import Pipeline, PipelineRun
from rosetta.audit import record_audit_event


class ProgressBar(services.RunObserver):
    """A snapshot progress bar on stderr (rows so far against the planner's estimate)."""

    def __init__(self, stream):
        self.stream = stream  # a command's OutputWrapper: write(text, ending="")

    def snapshot_progress(self, table, rows, estimate):
        if estimate > 0:
            share = min(rows / estimate, 1.0)
            bar = "#" * int(share * 30)
            self.stream.write(f"\r  {table} [{bar:<30}] {rows:,} / ~{estimate:,} rows", ending="")
        else:
            self.stream.write(f"\r  {table} {rows:,} rows", ending="")
        self.stream.flush()

    def snapshot_done(self, table, rows):
        self.stream.write(f"\r  {table}: snapshot of {rows:,} rows done{' ' * 30}")
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "Run a pipeline now, as the scheduler would: snapshot what needs it, then apply changes; "
        "for a CSV or HTTP JSON source, load what is new."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The pipeline's name.")
        parser.add_argument(
            "--until-caught-up",
            action="store_true",
            help="Read changes until the run has applied everything the source had flushed (one run, one stream).",
        )
        parser.add_argument(
            "--snapshot-only", action="store_true", help="Snapshot the tables that need it; read no changes."
        )

    def handle(self, *args, name, until_caught_up, snapshot_only, **options):
        pipeline = Pipeline.objects.select_related("source", "destination").filter(name=name).first()
        if pipeline is None:
            raise CommandError(f"No pipeline named {name}.")
        if pipeline.status == Pipeline.Status.PAUSED:
            raise CommandError(f"Pipeline {name} is paused; start it first.")
        if pipeline.status == Pipeline.Status.CREATED:
            try:
                services.start_pipeline(pipeline)
                record_audit_event(None, "start", pipeline)
            except services.IllegalTransition as refusal:
                raise CommandError(f"Cannot start {name}: {refusal}.") from None
        record_audit_event(None, "run", pipeline, detail="snapshot only" if snapshot_only else "")
        observer = ProgressBar(self.stderr)
        options = {"snapshot_only": snapshot_only, "observer": observer}
        if until_caught_up and not snapshot_only:
            runs = services.run_until_caught_up(pipeline, on_run=self.summary, **options)
        else:
            runs = [services.run_pipeline(pipeline, **options)]
            self.summary(runs[0])
        last = runs[-1]
        if last.outcome == PipelineRun.Outcome.FAILED:
            raise CommandError(f"{name} failed: {last.error.splitlines()[0]}")
        if last.outcome == PipelineRun.Outcome.SKIPPED:
            raise CommandError(f"{name}: another run holds the pipeline's lock; nothing done.")

    def summary(self, run: PipelineRun) -> None:
        if run.outcome != PipelineRun.Outcome.SUCCEEDED:
            return
        seconds = run.duration_seconds or 0.0
        rate = run.changes_read / seconds if seconds else 0
        if run.pipeline.source.is_batch:
            self.stdout.write(
                f"{run.pipeline.name}: {run.changes_read:,} records read, +{run.rows_inserted:,} "
                f"~{run.rows_updated:,} rows, {run.rows_rejected:,} rejected, {seconds:.2f} s "
                f"({rate:,.0f} records/s)"
            )
            return
        parts = [f"{run.pipeline.name}: {run.changes_read:,} changes"]
        if run.snapshot_rows:
            parts.append(f"{run.snapshot_rows:,} snapshot rows")
        parts.append(f"+{run.rows_inserted:,} ~{run.rows_updated:,} -{run.rows_deleted:,} rows")
        parts.append(f"{run.bytes_read / 1e6:.1f} MB")
        if run.end_lsn:
            parts.append(f"up to {run.end_lsn}")
        parts.append(f"{seconds:.2f} s ({rate:,.0f} changes/s)")
        self.stdout.write(", ".join(parts))
