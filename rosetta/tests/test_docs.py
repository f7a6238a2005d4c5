"""docs/architecture.md stays true: every file, function, task, setting and Beat entry it
names exists, and the README links it."""

import importlib
import re
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("engine", "rosetta", "sources", "destinations", "pipelines", "monitoring")


def code_spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", DOC.read_text())


def test_every_path_the_architecture_names_exists():
    paths = [span for span in code_spans() if re.fullmatch(r"[\w.-]+(/[\w.-]*)+", span)]
    links = [
        (DOC.parent / target).resolve().relative_to(ROOT).as_posix()
        for target in re.findall(r"\]\(([^)#]+)\)", DOC.read_text())
    ]
    assert len(paths) > 30
    missing = [path for path in paths + links if not (ROOT / path).exists()]
    assert not missing, missing


def test_every_function_and_task_the_architecture_names_exists():
    dotted = [span for span in code_spans() if re.fullmatch(rf"({'|'.join(PACKAGES)})(\.\w+)+", span)]
    assert len(dotted) > 5
    missing = []
    for name in dotted:
        module_name, _, attribute = name.rpartition(".")
        try:
            found = hasattr(importlib.import_module(module_name), attribute)
        except ImportError:
            found = False
        if not found:
            missing.append(name)
    assert not missing, missing
    tasks = [name for name in dotted if ".tasks." in name]
    for name in tasks:
        module_name, _, attribute = name.rpartition(".")
        assert hasattr(getattr(importlib.import_module(module_name), attribute), "delay"), name


def test_every_setting_the_architecture_names_exists():
    names = set(re.findall(r"\bROSETTA_[A-Z_]+\b", DOC.read_text()))
    assert names
    assert not [name for name in names if not hasattr(settings, name)]


def test_each_beat_entry_is_created_by_the_migration_the_table_names():
    rows = re.findall(
        r"^\| ([^|`]+?) \| `([\w.]+)` \| [^|]+ \| `([\w/.]+)` \|$", DOC.read_text(), re.MULTILINE
    )
    assert len(rows) >= 4
    for entry, task, migration in rows:
        text = (ROOT / migration).read_text()
        assert f'"{entry}"' in text and f'"{task}"' in text, (entry, migration)


def test_the_readme_links_the_architecture_and_no_missing_design_file():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/architecture.md)" in readme
    assert "DESIGN.md" not in readme + DOC.read_text()
