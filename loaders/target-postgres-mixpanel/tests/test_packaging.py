"""The sdist and the wheel build, pass ``twine check --strict``, and carry what PyPI shows."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import target_postgres_mixpanel

ROOT = Path(__file__).resolve().parents[1]


def test_sdist_and_wheel_build_and_pass_twine_check(tmp_path: Path):
    # no build isolation: hatchling comes from the test venv, so no network is needed
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    version = target_postgres_mixpanel.__version__
    wheel = tmp_path / f"target_postgres_mixpanel-{version}-py3-none-any.whl"
    sdist = tmp_path / f"target_postgres_mixpanel-{version}.tar.gz"
    built = sorted(p.name for p in tmp_path.iterdir())
    assert wheel.name in built, built
    assert sdist.name in built, built
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"target_postgres_mixpanel-{version}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "target_postgres_mixpanel/py.typed" in names
    assert "target_postgres_mixpanel/seams.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    assert metadata["Name"] == "target-postgres-mixpanel"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    description = " ".join(metadata.get_payload().split())
    assert "the same settings, the same tables" in description
    requires = metadata.get_all("Requires-Dist")
    assert "meltanolabs-target-postgres<0.9,>=0.8.1" in requires
    assert any(r.startswith("s3fs") and "extra == 's3'" in r for r in requires)
    assert metadata.get_all("Project-URL")
    assert "Programming Language :: Python :: 3.10" in metadata.get_all("Classifier")
    assert (
        "target-postgres-mixpanel = target_postgres_mixpanel.target:TargetPostgresMixpanel.cli"
        in entry_points
    )

    with tarfile.open(sdist) as archive:
        members = {
            Path(m).relative_to(f"target_postgres_mixpanel-{version}").as_posix()
            for m in archive.getnames()
            if "/" in m
        }
    for needed in ("README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "tests/test_load.py"):
        assert needed in members, needed
