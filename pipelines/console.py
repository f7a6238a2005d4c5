"""The pipeline page's buttons: Start, Pause, Refresh (all tables or one), Run now, Measure lag.

Each button opens a confirmation page that says what the action does to the source's
WAL; the POST calls the same service as the list actions and the API.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from . import services
from .models import IllegalTransition, Pipeline

WAL_EFFECT = {
    "start": (
        "Start",
        "Runs are scheduled again. The first run creates the publication and the replication slot "
        "{slot} on {source} if they do not exist, then copies the tables that need it. From the moment "
        "the slot exists the source keeps every WAL segment the slot has not confirmed; each run "
        "confirms what the destination committed, releasing that WAL.",
    ),
    "pause": (
        "Pause",
        "No more runs. The slot {slot} stays on {source}, so nothing is lost, but the source keeps "
        "all WAL written from now on until the pipeline runs again: a long pause can fill the source's "
        "disk. The front page and the source's page show how much WAL the slot holds.",
    ),
    "refresh": (
        "Refresh",
        "Copies the chosen tables again with a fresh snapshot; the destination keeps serving the old "
        "copy until the new one is complete. The slot {slot} keeps collecting changes meanwhile, so the "
        "source keeps WAL for the length of the copy (long for large tables); the changes are applied "
        "after the copy.",
    ),
    "run": (
        "Run now",
        "Runs now instead of at the next dispatch: reads the changes waiting in slot {slot}, applies "
        "them to the destination, and only then advances the slot, releasing that WAL on {source}.",
    ),
    "measure_lag": (
        "Measure lag",
        "Reads slot {slot}'s position on {source} now (one short connection, nothing written there) "
        "and stores the lag shown on this page. Runs store it too, each time they end.",
    ),
}
# The same buttons on a pipeline whose source is CSV files or an HTTP JSON API: no slot, no WAL.
BATCH_EFFECT = {
    "start": "Runs are scheduled again: on the pipeline's interval or cron schedule, or, without one, "
    "each time someone asks (Run now, manage.py run_pipeline). Each run loads what is new at {source} "
    "since the checkpoint kept in the destination.",
    "pause": "No more runs. Nothing is lost: the next run after a start goes on from the checkpoint.",
    "refresh": "Forgets the checkpoint: the next run loads every file (or every page) of {source} again; "
    "the rows already loaded stay and are merged over (or, without a key, land on their own rows).",
    "run": "Runs now instead of on the schedule: loads what is new at {source} since the checkpoint.",
}
RUNNABLE = (Pipeline.Status.RUNNING, Pipeline.Status.REFRESHING, Pipeline.Status.FAILED)


def run_now(pipeline: Pipeline) -> None:
    """Queue one scheduled run at once, unless one is already queued."""
    from .tasks import run_pipeline

    if pipeline.status not in RUNNABLE:
        raise IllegalTransition(f"{pipeline.status}; start it first")
    with transaction.atomic():
        queued = Pipeline.objects.filter(pk=pipeline.pk, run_enqueued_at__isnull=True).update(
            run_enqueued_at=timezone.now(), next_run_at=None
        )
        if not queued:
            raise IllegalTransition("a run is already queued or in progress")
        transaction.on_commit(lambda: run_pipeline.delay(pipeline.pk))


def action_view(model_admin, request, object_id, action):
    if action not in WAL_EFFECT:
        raise PermissionDenied
    pipeline = get_object_or_404(Pipeline.objects.select_related("source", "destination"), pk=object_id)
    if not model_admin.has_change_permission(request, pipeline):
        raise PermissionDenied
    label, effect = WAL_EFFECT[action]
    if pipeline.source.is_batch:
        if action not in BATCH_EFFECT:  # measuring lag: a CSV or HTTP JSON source has no WAL
            model_admin.message_user(
                request,
                f"{label} is for pipelines from PostgreSQL: {pipeline.name} reads a "
                f"{pipeline.source.get_kind_display()} source, which has no WAL to lag behind.",
                messages.ERROR,
            )
            return redirect(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk]))
        effect = BATCH_EFFECT[action]
    page = reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])
    tables = [t.qualified_name for t in pipeline.tables.all()]
    if request.method == "POST":
        try:
            if action == "start":
                services.start_pipeline(pipeline)
                done = f"Started {pipeline.name}."
            elif action == "pause":
                services.pause_pipeline(pipeline)
                done = f"Paused {pipeline.name}; its slot keeps WAL on the source until it runs again."
            elif action == "refresh":
                table = request.POST.get("table") or ""
                copied = services.refresh_pipeline(pipeline, [table] if table else None)
                done = f"Refreshing {pipeline.name}: {', '.join(copied)} will be copied again."
            elif action == "measure_lag":
                error = services.measure_lag(pipeline)
                if error:
                    raise ValueError(f"the source did not answer: {error}")
                done = f"{pipeline.name} is {pipeline.lag_bytes:,} bytes of WAL behind its source."
            else:
                run_now(pipeline)
                done = f"A run of {pipeline.name} is queued."
        except (IllegalTransition, ValueError) as refusal:
            model_admin.message_user(request, f"{label} refused: {refusal}.", messages.ERROR)
            return redirect(page)
        model_admin.message_user(request, done, messages.SUCCESS)
        return redirect(page)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Pipeline._meta,
        "original": pipeline,
        "title": f"{label} {pipeline.name}?",
        "action": action,
        "label": label,
        "effect": effect.format(slot=pipeline.source.slot_name, source=pipeline.source.name),
        "heading": "What this does" if pipeline.source.is_batch else "What this does to the source's WAL",
        "refusal": _refusal(pipeline, action),
        "tables": tables,
        "page": page,
    }
    return TemplateResponse(request, "admin/pipelines/pipeline/confirm_action.html", context)


def _refusal(pipeline, action):
    if action == "run":
        return None if pipeline.status in RUNNABLE else f"{pipeline.status}; start it first"
    if action == "measure_lag":
        return "a CSV or HTTP JSON source has no replication slot" if pipeline.source.is_batch else None
    return pipeline.refusal_reason(action)


def pick_tables_view(model_admin, request, object_id):
    """Choose the tables from the source's own list (row estimate, key or not) instead of
    typing names; saving calls services.set_pipeline_tables."""
    from django.conf import settings

    from engine.preflight import describe_connection_error, list_tables

    pipeline = get_object_or_404(Pipeline.objects.select_related("source"), pk=object_id)
    if not model_admin.has_change_permission(request, pipeline):
        raise PermissionDenied
    page = reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])
    if pipeline.source.is_batch:
        model_admin.message_user(
            request,
            f"{pipeline.name} reads {pipeline.source.get_kind_display()} into one table, named after the source "
            "unless the API's tables names it; there is no table to pick.",
            messages.INFO,
        )
        return redirect(page)
    chosen = {t.qualified_name for t in pipeline.tables.all()}
    if request.method == "POST":
        names = request.POST.getlist("table")
        try:
            services.set_pipeline_tables(pipeline, names)
        except ValueError as problem:
            model_admin.message_user(request, str(problem), messages.ERROR)
            return redirect(request.path)
        model_admin.message_user(
            request,
            f"{pipeline.name} copies {len(names)} table(s): {', '.join(names) or 'none'}.",
            messages.SUCCESS,
        )
        return redirect(page)
    source = pipeline.source
    kwargs = source.connection_kwargs(connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT)
    try:
        tables, problem = list_tables(kwargs, settings.ROSETTA_STATEMENT_TIMEOUT_MS), None
    except Exception as error:  # noqa: BLE001 - shown as one line, never with the DSN
        tables, problem = [], describe_connection_error(error, kwargs.get("host"), kwargs.get("port"))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Pipeline._meta,
        "original": pipeline,
        "title": f"Tables of {pipeline.name} from {source.name}",
        "tables": [{"table": t, "chosen": t.name in chosen} for t in tables],
        "problem": problem,
        "page": page,
    }
    return TemplateResponse(request, "admin/pipelines/pipeline/pick_tables.html", context)
