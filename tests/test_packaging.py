"""What a user installs: one version everywhere, the licence in the wheel, no dev tools in it.

The version is written once (``tap_mixpanel_parallel.__version__``); the build copies it into the
distribution's metadata and the SDK's ``--version``/``--about`` read it back from there, so a stale
install or a second hand-edited version shows up here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Any

import tap_mixpanel_parallel

ROOT = Path(__file__).resolve().parents[1]
DIST = "tap-mixpanel-parallel"
# Tools for working on the tap; a user of the tap must never get them.
DEV_TOOLS = {"pytest", "pytest-cov", "coverage", "hypothesis", "ruff", "mypy", "deptry", "meltano"}


def requirement_names(requires: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower() for req in requires}


def check_metadata(meta: Any) -> None:
    """``meta``: the installed distribution's or the wheel's core metadata (email headers)."""
    assert meta["Version"] == tap_mixpanel_parallel.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    assert "License" not in meta, "the deprecated License field is back"
    requires = meta.get_all("Requires-Dist") or []
    names = requirement_names(requires)
    assert not names & DEV_TOOLS
    # one extra, `s3`, for BATCH files on S3 (fsspec's s3fs), and nothing else in it
    assert meta.get_all("Provides-Extra") == ["s3"]
    assert requirement_names([r for r in requires if "extra ==" in r]) == {"s3fs"}
    # `import backoff` comes from the maintained fork; the old distribution would overwrite it.
    assert "python-backoff" in names
    assert "backoff" not in names


def test_python_dash_m_runs_the_cli_and_reports_the_package_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tap_mixpanel_parallel", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    installed = metadata.version(DIST)
    assert installed == tap_mixpanel_parallel.__version__, "stale install: pip install -e ."
    assert proc.stdout.startswith(f"{DIST} v{tap_mixpanel_parallel.__version__}, Meltano SDK v")


def test_installed_metadata_has_the_licence_and_no_dev_tools() -> None:
    check_metadata(metadata.metadata(DIST))


def test_wheel_carries_the_licence_text_and_only_the_package(tmp_path: Path) -> None:
    # No build isolation: hatchling comes from the test group, so this needs no network.
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(tmp_path), str(ROOT)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("tap_mixpanel_parallel-*.whl")
    dist_info = f"tap_mixpanel_parallel-{tap_mixpanel_parallel.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        licence = zf.read(f"{dist_info}/licenses/LICENSE").decode()
        meta = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
    assert licence == (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "TERMS AND CONDITIONS" in licence
    check_metadata(meta)
    assert "tap_mixpanel_parallel/__main__.py" in names
    # the fake server ships with the tap (its own docs run it with `python -m`); tests do not
    assert "tap_mixpanel_parallel/testing/fake_server/__main__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "scripts/"))]


def test_changelog_describes_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(
        rf"^## \[{re.escape(tap_mixpanel_parallel.__version__)}\] - \d{{4}}-\d\d-\d\d$",
        changelog,
        re.M,
    )
