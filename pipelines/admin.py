from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.shortcuts import redirect
from django.template.defaultfilters import truncatechars
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from destinations.models import Destination
from engine.forecast import human_duration
from engine.names import format_identifier
from engine.source import SourceProblem
from rosetta.admin_utils import RecordAdmin, badge, report_per_object
from rosetta.audit import AuditedAdminMixin, deleted, record_audit_event

from . import batch, schedules, services
from .models import IllegalTransition, Pipeline, PipelineRun, PipelineTable


class PipelineTableForm(forms.ModelForm):
    """Names are shown as they are typed (quoted where a name holds a dot, a quote or
    outer spaces) and read back by the one parser, engine.names."""

    NAME_FIELDS = ("schema_name", "table_name", "target_table")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.NAME_FIELDS:  # narrower than the admin's 20em, so the inline fits the page
            if field in self.fields:
                self.fields[field].widget.attrs["style"] = "width: 10em"
        if self.instance.pk:
            for field in self.NAME_FIELDS:
                value = getattr(self.instance, field)
                if value:
                    self.initial[field] = format_identifier(value)


class PipelineTableInline(admin.TabularInline):
    model = PipelineTable
    form = PipelineTableForm
    extra = 0
    fields = [
        "schema_name",
        "table_name",
        "target_table",
        "snapshot",
        "changes",
        "columns",
    ]
    readonly_fields = ["snapshot", "changes", "columns"]

    @admin.display(description="rows ins / upd / del")
    def changes(self, table):
        return f"{table.rows_inserted:,} / {table.rows_updated:,} / {table.rows_deleted:,}"

    @admin.display(description="snapshot")
    def snapshot(self, table):
        """The table's copy: pending, done with its rows, or, while it runs, rows copied
        of the planner's estimate (stored by services.SnapshotProgress)."""
        if table.pipeline.source.is_batch:
            return "-"  # CSV and HTTP JSON tables are loaded by runs, not copied first
        if table.snapshot_state == PipelineTable.SnapshotState.DONE:
            finished = table.snapshot_finished_at
            return format_html(
                '<span title="{}">done, {} rows</span>',
                f"finished {timezone.localtime(finished):%Y-%m-%d %H:%M:%S}" if finished else "",
                f"{table.snapshot_rows:,}",
            )
        if table.snapshot_state != PipelineTable.SnapshotState.IN_PROGRESS:
            return table.get_snapshot_state_display().lower()
        copied, estimate = table.snapshot_rows_copied, table.snapshot_rows_estimate
        since = ""
        if table.snapshot_started_at:
            since = f", for {human_duration((timezone.now() - table.snapshot_started_at).total_seconds())}"
        if not estimate:
            return format_html(
                '<span class="rosetta-snapshot">copying: {} rows so far{}</span>', f"{copied:,}", since
            )
        if not copied:  # not counted yet (or a PostgreSQL source before 14: no pg_stat_progress_copy)
            return format_html(
                '<span class="rosetta-snapshot">copying: ~{} rows estimated{}</span>', f"{estimate:,}", since
            )
        share = min(copied / estimate, 1.0)
        return format_html(
            '<span class="rosetta-snapshot">copying: {} of ~{} rows ({}%){}</span>'
            '<progress value="{}" max="100" style="display:block;width:120px"></progress>',
            f"{copied:,}",
            f"{estimate:,}",
            int(share * 100),
            since,
            int(share * 100),
        )

    @admin.display(description="columns (field -> column: type)")
    def columns(self, table):
        """CSV and HTTP JSON sources: how each field was named and typed in the destination."""
        if not table.column_mapping:
            return "-"
        return format_html_join(
            "",
            "<div>{} &rarr; {}: {}</div>",
            (
                (original, column, table.column_types.get(column) or "text")
                for original, column in table.column_mapping.items()
            ),
        )


class MoveForm(forms.Form):
    destination = forms.ModelChoiceField(queryset=Destination.objects.all(), label="new destination")


@admin.register(Pipeline)
class PipelineAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "status_badge", "source", "destination", "last_run", "short_error"]
    list_filter = ["status", "source", "destination"]
    search_fields = ["name", "source__name", "destination__name", "last_error"]
    list_select_related = ["source", "destination"]
    inlines = [PipelineTableInline]
    readonly_fields = [
        "status_badge",
        "last_error",
        "last_alert",
        "last_alert_at",
        "consecutive_failures",
        "next_run_at",
        "lag",
        "last_checked_at",
        "quiet_checks",
        "last_applied_lsn",
        "last_applied_commit_at",
        "recent_runs",
        "statistics",
        "preview_rows_link",
        "created_at",
        "updated_at",
    ]
    fields = [
        "name",
        "source",
        "destination",
        "max_changes_per_transaction",
        "soft_delete",
        "on_incompatible_schema_change",
        "on_slot_lost",
        "max_reject_share",
        "schedule_interval",
        "schedule_crontab",
        *readonly_fields,
    ]
    actions = ["start", "pause", "refresh"]

    def get_urls(self):
        from .console import action_view, pick_tables_view

        act = self.admin_site.admin_view(
            lambda request, object_id, action: action_view(self, request, object_id, action)
        )
        pick = self.admin_site.admin_view(
            lambda request, object_id: pick_tables_view(self, request, object_id)
        )
        return [
            path("<int:object_id>/act/<str:action>/", act, name="pipelines_pipeline_act"),
            path("<int:object_id>/tables/", pick, name="pipelines_pipeline_tables"),
            path(
                "<int:object_id>/move/",
                self.admin_site.admin_view(self.move_view),
                name="pipelines_pipeline_move",
            ),
            path(
                "<path:object_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="pipelines_pipeline_preview",
            ),
            *super().get_urls(),
        ]

    def response_add(self, request, obj, post_url_continue=None):
        # A new pipeline without tables goes on to pick them from the source's list.
        # (A CSV or HTTP JSON pipeline writes one table, named when it first runs: nothing to pick.)
        if not obj.source.is_batch and not obj.tables.exists() and "_addanother" not in request.POST:
            return redirect(reverse("admin:pipelines_pipeline_tables", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "max_changes_per_transaction":
            field.widget.attrs["style"] = "width: 10em"  # Django's default box cuts a seven-digit value
        return field

    def get_queryset(self, request):
        last_run = PipelineRun.objects.filter(pipeline=OuterRef("pk")).order_by("-started_at")
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_run_at=Subquery(last_run.values("started_at")[:1]),
                last_run_outcome=Subquery(last_run.values("outcome")[:1]),
            )
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, pipeline):
        return badge(pipeline.get_status_display(), pipeline.status)

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, pipeline):
        if not pipeline.last_run_at:
            return "never"
        return format_html(
            "{} {}", pipeline.last_run_at.strftime("%Y-%m-%d %H:%M:%S"), badge(pipeline.last_run_outcome)
        )

    @admin.display(description="lag")
    def lag(self, pipeline):
        if pipeline.lag_bytes is None:
            return "not measured yet"
        return f"{pipeline.lag_bytes:,} bytes of WAL behind the source (measured {pipeline.lag_measured_at:%Y-%m-%d %H:%M:%S})"

    @admin.display(description="statistics")
    def statistics(self, pipeline):
        if pipeline.pk is None:
            return "-"
        stats = batch.pipeline_stats(pipeline, count_destination=pipeline.source.is_batch)
        tables = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} / {} / {}</td></tr>",
            (
                (
                    t["table"],
                    "-" if t["rows"] is None else f"{t['rows']:,}",
                    t["rows_inserted"],
                    t["rows_updated"],
                    t["rows_deleted"],
                )
                for t in stats["tables"]
            ),
        )
        runs = stats["runs"]
        rate = stats["last_run_rows_per_second"]
        return format_html(
            "<table><tr><th>table</th><th>rows in the destination</th><th>ins / upd / del</th></tr>{}</table>"
            "{}<p>Runs: {} ({} succeeded, {} failed, {} skipped). Last success: {}. "
            "Rows per second in the last successful run: {}. Rejected records: {}.</p>"
            "<p>Schedule: {}.</p>",
            tables,
            format_html('<p class="errornote">{}</p>', stats["tables_error"])
            if stats["tables_error"]
            else "",
            runs["total"],
            runs["succeeded"],
            runs["failed"],
            runs["skipped"],
            stats["last_success_at"].strftime("%Y-%m-%d %H:%M:%S") if stats["last_success_at"] else "never",
            "-" if rate is None else f"{rate:,.0f}",
            f"{stats['rows_rejected']:,}",
            self._schedule_text(pipeline),
        )

    @staticmethod
    def _schedule_text(pipeline):
        if pipeline.schedule_interval_id:
            return f"every {schedules.interval_seconds(pipeline.schedule_interval)} s"
        if pipeline.schedule_crontab_id:
            return f"cron {schedules.cron_expression(pipeline.schedule_crontab)} (UTC)"
        return "continuous (CDC)" if not pipeline.source.is_batch else "none: runs only when asked"

    @admin.display(description="preview rows")
    def preview_rows_link(self, pipeline):
        if pipeline.pk is None:
            return "-"
        return format_html(
            '<a href="{}">Preview rows of the destination tables</a>',
            reverse("admin:pipelines_pipeline_preview", args=[pipeline.pk]),
        )

    def preview_view(self, request, object_id):
        """Preview rows: a read-only page of a destination table, for users who may view the pipeline."""
        pipeline = self.get_object(request, object_id)
        if pipeline is None:
            return redirect(reverse("admin:pipelines_pipeline_changelist"))
        if not self.has_view_permission(request, pipeline):
            raise PermissionDenied
        params = request.GET
        error, page = None, {"tables": [], "table": "", "search": params.get("search", ""), "page_size": 50}
        try:
            page = batch.preview_rows(
                pipeline,
                params.get("table", ""),
                int(params.get("page") or 1),
                int(params.get("page_size") or 50),
                params.get("search", ""),
            )
        except ValueError as refusal:
            error = (
                str(refusal)
                if isinstance(refusal, batch.PreviewRefused)
                else "page and page_size are whole numbers."
            )
        except Exception as problem:  # noqa: BLE001 - the page says why the destination cannot be read
            error = f"The destination cannot be read: {services.describe_error(problem)}"
        context = {
            **self.admin_site.each_context(request),
            "title": f"Preview rows: {pipeline.name}",
            "pipeline": pipeline,
            "page": page,
            "error": error,
            "previous_page": page["page"] - 1 if page.get("page", 1) > 1 else None,
            "next_page": page["page"] + 1
            if page.get("count", 0) > page.get("page", 1) * page["page_size"]
            else None,
        }
        return TemplateResponse(request, "admin/pipelines/pipeline/preview.html", context)

    @admin.display(description="last error")
    def short_error(self, pipeline):
        return truncatechars(pipeline.last_error, 80)

    @admin.display(description="recent runs")
    def recent_runs(self, pipeline):
        runs = pipeline.runs.all()[:10]
        if not runs:
            return "No runs yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} &ndash; {}</td><td>{}</td><td>{} / {} / {}</td>"
            "<td>{}</td></tr>",
            (
                (
                    run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                    badge(run.outcome),
                    "-" if run.duration_seconds is None else f"{run.duration_seconds:.1f} s",
                    run.start_lsn or "-",
                    run.end_lsn or "-",
                    f"{run.changes_read:,}",
                    run.rows_inserted,
                    run.rows_updated,
                    run.rows_deleted,
                    truncatechars(run.error, 100),
                )
                for run in runs
            ),
        )
        history = reverse("admin:pipelines_pipelinerun_changelist") + f"?pipeline__id__exact={pipeline.pk}"
        return format_html(
            "<table><tr><th>started</th><th>outcome</th><th>duration</th><th>LSN range</th><th>changes</th>"
            "<th>ins / upd / del</th><th>error</th></tr>"
            '{}</table><a href="{}">All runs</a>',
            rows,
            history,
        )

    def move_view(self, request, object_id):
        """Another destination for a started pipeline: every table is re-copied there."""
        pipeline = self.get_object(request, str(object_id))
        if pipeline is None or not self.has_change_permission(request, pipeline):
            raise PermissionDenied
        form = MoveForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                done = services.move_pipeline(pipeline, form.cleaned_data["destination"])
            except IllegalTransition as refusal:
                form.add_error(None, f"Not moved: {refusal}.")
            except ValueError as error:
                form.add_error("destination", str(error))
            else:
                self.message_user(request, done, messages.SUCCESS)
                return redirect(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Move {pipeline} to another destination",
            "form": form,
            "pipeline": pipeline,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/pipelines/pipeline/move.html", context)

    def get_actions(self, request):
        # Deleting asks, per pipeline, whether to drop its replication slot.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        pipeline = self.get_object(request, object_id)
        if pipeline is None or not self.has_delete_permission(request, pipeline):
            return super().delete_view(request, object_id, extra_context)
        if request.method == "POST":
            choice = request.POST.get("drop_slot")
            if choice not in ("yes", "no"):
                self.message_user(request, "Choose whether to drop the replication slot.", messages.ERROR)
                return redirect(request.path)
            target = deleted(pipeline)
            try:
                done = services.delete_pipeline(pipeline, drop_slot=choice == "yes")
            except (IllegalTransition, SourceProblem) as problem:
                self.message_user(request, f"{pipeline.name} was not deleted: {problem}", messages.ERROR)
                return redirect(request.path)
            record_audit_event(request, "delete", target, detail=f"drop_slot={str(choice == 'yes').lower()}")
            self.message_user(request, done, messages.SUCCESS if choice == "yes" else messages.WARNING)
            return redirect(reverse("admin:pipelines_pipeline_changelist"))
        context = {
            **(extra_context or {}),
            "slot_name": pipeline.source.slot_name,
            "source_name": pipeline.source.name,
        }
        return super().delete_view(request, object_id, context)

    def _apply(self, request, queryset, operation, done_label):
        outcomes = {done_label: []}
        for pipeline in queryset:
            try:
                operation(pipeline)
                record_audit_event(request, operation.__name__.split("_")[0], pipeline)
                outcomes[done_label].append(pipeline.name)
            except IllegalTransition as refusal:
                outcomes.setdefault(f"refused: {refusal}", []).append(pipeline.name)
        refused = any(names for label, names in outcomes.items() if label != done_label)
        self.message_user(
            request, report_per_object(outcomes), messages.WARNING if refused else messages.SUCCESS
        )

    @admin.action(description="Start selected pipelines", permissions=["change"])
    def start(self, request, queryset):
        self._apply(request, queryset, services.start_pipeline, "started")

    @admin.action(description="Pause selected pipelines", permissions=["change"])
    def pause(self, request, queryset):
        self._apply(request, queryset, services.pause_pipeline, "paused")

    @admin.action(description="Refresh (re-snapshot) selected pipelines", permissions=["change"])
    def refresh(self, request, queryset):
        self._apply(request, queryset, services.refresh_pipeline, "refreshing")


class SelectedPipelineFilter(admin.SimpleListFilter):
    """Runs of one pipeline (the "All runs" link of a pipeline's page), without listing
    every pipeline as a choice: with thousands of pipelines that list is the slow part."""

    title = "pipeline"
    parameter_name = "pipeline__id__exact"

    def lookups(self, request, model_admin):
        value = self.value()
        if not (value and value.isdigit()):
            return []
        return [(value, name) for name in Pipeline.objects.filter(pk=value).values_list("name", flat=True)]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(pipeline_id=value) if value.isdigit() else queryset.none()


@admin.register(PipelineRun)
class PipelineRunAdmin(RecordAdmin):
    list_display = [
        "pipeline",
        "started",
        "outcome_badge",
        "duration",
        "end_lsn",
        "changes_read",
        "rows_inserted",
        "rows_updated",
        "rows_deleted",
        "rows_rejected",
        "short_error",
    ]
    # No date_hierarchy: it reads every run's date to draw its links. The date filter
    # below only adds a WHERE on the started_at index.
    list_filter = ["outcome", SelectedPipelineFilter, ("started_at", admin.DateFieldListFilter)]
    search_fields = ["pipeline__name", "error"]
    list_select_related = ["pipeline"]

    @admin.display(description="started", ordering="started_at")
    def started(self, run):
        return run.started_at.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, run):
        return badge(run.outcome)

    @admin.display(description="duration")
    def duration(self, run):
        seconds = run.duration_seconds
        return "-" if seconds is None else f"{seconds:.1f} s"

    @admin.display(description="error")
    def short_error(self, run):
        return truncatechars(run.error, 80)
