"""The import contracts in pyproject.toml ([tool.importlinter]), checked by the real lint-imports.

``export/`` and ``query/`` share only what lives in ``run/`` and ``http/``; neither imports the
other. The second test proves the contract can fail: a copy of the package with one forbidden
import is reported broken.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_export_and_query_never_import_each_other():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "export/ and query/ never import each other KEPT" in run.stdout
    assert "run/ and http/ import no stream family KEPT" in run.stdout
    assert "2 kept, 0 broken" in run.stdout


def test_a_query_module_importing_export_breaks_the_contract(tmp_path: Path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        ROOT / "tap_mixpanel_parallel",
        tmp_path / "tap_mixpanel_parallel",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    records = tmp_path / "tap_mixpanel_parallel" / "query" / "records.py"
    records.write_text(
        records.read_text() + "\nfrom tap_mixpanel_parallel.export.records import decode_record\n"
    )
    spool = tmp_path / "tap_mixpanel_parallel" / "run" / "spool.py"
    spool.write_text(spool.read_text() + "\nimport tap_mixpanel_parallel.query.paging\n")

    run = lint_imports(tmp_path)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "export/ and query/ never import each other BROKEN" in run.stdout
    assert "run/ and http/ import no stream family BROKEN" in run.stdout
    assert "tap_mixpanel_parallel.query.records -> tap_mixpanel_parallel.export.records" in (
        run.stdout
    )
