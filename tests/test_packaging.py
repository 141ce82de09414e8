"""The wheel carries what a non-editable install needs: templates/, sql/ and data/."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gateway

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_templates_migrations_and_data(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (ROOT / "templates").rglob("*"):
        if template.is_file():
            assert f"gateway/templates/{template.relative_to(ROOT / 'templates')}" in names
    for migration in (ROOT / "sql").glob("*.sql"):
        assert f"gateway/sql/{migration.name}" in names
    assert "gateway/data/common-passwords.txt.gz" in names
    assert "gateway/cli.py" in names


MODULES = sorted(m.name for m in pkgutil.walk_packages(gateway.__path__, "gateway."))


@pytest.mark.parametrize("name", [m for m in MODULES if m != "gateway.__main__"])
def test_every_module_imports(name):
    """Some modules load only when their command runs (demo/ with `gateway demo`):
    a broken import there would otherwise wait for the one test of that command."""
    importlib.import_module(name)
