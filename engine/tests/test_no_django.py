"""The engine package is plain Python: importing its batch sources loads no Django, DRF or Celery."""

import subprocess
import sys
from pathlib import Path


def test_the_batch_source_engine_imports_without_django_drf_or_celery():
    code = (
        "import sys\n"
        "import engine.batch_sources.csv, engine.batch_sources.http_json, engine.batch_sources.loader\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'celery', "
        "'sources', 'destinations.models', 'pipelines.models'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
