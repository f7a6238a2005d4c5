from django.core.management.base import BaseCommand, CommandError

from engine.forecast import human_bytes
from monitoring.services import probe_sources
from sources.models import Source


class Command(BaseCommand):
    help = "Probe WAL and replication slots now (like the scheduled task), record it, print a table."

    def add_arguments(self, parser):
        parser.add_argument(
            "--source", action="append", metavar="NAME", help="Only this source (repeatable)."
        )

    def handle(self, *args, **options):
        sources = Source.objects.all()
        names = options.get("source")
        if names:
            sources = sources.filter(name__in=names)
            missing = sorted(set(names) - set(sources.values_list("name", flat=True)))
            if missing:
                raise CommandError(f"No source named {', '.join(missing)}.")
        metrics = probe_sources(sources)
        if not metrics:
            self.stdout.write("No sources to probe.")
            return
        rows = [
            ("SOURCE", "PROBE", "WAL DIR", "CURRENT LSN", "WAL/S", "SLOT", "ACTIVE", "RETAINED", "WAL_STATUS")
        ]
        notes = []
        for metric in metrics:
            name = metric.source.name
            if not metric.ok:
                rows.append((name, "FAILED", "", "", "", "", "", "", ""))
                notes.append(f"{name}: {metric.error}")
                continue
            head = (
                name,
                f"ok {metric.duration_ms} ms",
                human_bytes(metric.wal_dir_bytes) if metric.wal_dir_bytes is not None else "not allowed",
                metric.current_lsn,
                human_bytes(metric.wal_rate_bytes_per_s) if metric.wal_rate_bytes_per_s is not None else "",
            )
            notes += [f"{name}: {warning}" for warning in metric.warnings]
            slots = sorted(metric.slot_rows, key=lambda slot: slot.slot_name) or [None]
            for index, slot in enumerate(slots):
                first = head if index == 0 else ("",) * len(head)
                if slot is None:
                    rows.append((*first, "(no slots)", "", "", ""))
                else:
                    rows.append(
                        (
                            *first,
                            slot.slot_name,
                            "yes" if slot.active else "no",
                            human_bytes(slot.retained_bytes),
                            slot.wal_status,
                        )
                    )
        widths = [max(len(str(row[column])) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )
        for note in notes:
            self.stdout.write(note)
