"""singer-io's ``tap-mixpanel`` from PyPI, in its own virtualenv, pointed at the fake server.

``ensure_venv`` creates ``.bench/singer-io-<version>/`` (gitignored) with the same Python as the
benchmark, ``pip install tap-mixpanel==<version>`` into it (its pins: singer-python 6.0.1,
requests 2.33.0, backoff 2.2.1, jsonlines 1.2.0; they install and run on Python 3.11), and drops
``mixpanel_redirect.py`` into its site-packages (see that file for exactly what it redirects).
An existing venv is reused.

``discover_catalog`` runs the tap's own ``--discover`` through the redirect and selects only the
``export`` stream (and every one of its fields), as a user would in their catalog.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VERSION = "1.8.0"
API_SECRET = "bench-api-secret"


def venv_dir(root: Path, version: str) -> Path:
    return root / ".bench" / f"singer-io-tap-mixpanel-{version}"


def tap_executable(venv: Path) -> Path:
    return venv / "bin" / "tap-mixpanel"


def _site_packages(venv: Path) -> Path:
    py = venv / "bin" / "python"
    out = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def ensure_venv(root: Path, version: str = DEFAULT_VERSION, log=print) -> Path:
    """The venv with tap-mixpanel installed and the redirect in place (created if missing)."""
    venv = venv_dir(root, version)
    if not tap_executable(venv).exists():
        log(f"installing tap-mixpanel=={version} into {venv} (once; reused afterwards)")
        if venv.exists():
            shutil.rmtree(venv)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"tap-mixpanel=={version}",
            ],
            check=True,
        )
    site = _site_packages(venv)
    shutil.copyfile(HERE / "mixpanel_redirect.py", site / "_bench_mixpanel_redirect.py")
    (site / "_bench_mixpanel_redirect.pth").write_text("import _bench_mixpanel_redirect\n")
    return venv


def environment(
    fake_url: str, event_properties: list[str], profile_properties: list[str] | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_MIXPANEL_URL"] = fake_url
    env["BENCH_MIXPANEL_EVENT_PROPERTIES"] = json.dumps(event_properties)
    env["BENCH_MIXPANEL_PROFILE_PROPERTIES"] = json.dumps(profile_properties or [])
    return env


def write_config(path: Path, *, start_date: str, end_date: str) -> None:
    """Its defaults otherwise: date_window_size 30, attribution_window 5 (required key)."""
    config = {
        "api_secret": API_SECRET,
        "start_date": f"{start_date}T00:00:00Z",
        "end_date": f"{end_date}T00:00:00Z",
        "project_timezone": "UTC",
        "attribution_window": 5,
        "user_agent": "tap-mixpanel-parallel-benchmark",
        "select_properties_by_default": "true",
    }
    path.write_text(json.dumps(config))


def discover_catalog(
    venv: Path, config: Path, out: Path, env: dict[str, str], stream: str = "export"
) -> None:
    """Run its discovery, then select one stream (``export``, ``engage``) and all its fields."""
    result = subprocess.run(
        [str(tap_executable(venv)), "--config", str(config), "--discover"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    catalog = json.loads(result.stdout)
    for entry_stream in catalog["streams"]:
        selected = entry_stream["tap_stream_id"] == stream
        for entry in entry_stream.get("metadata", []):
            if entry["breadcrumb"] == [] or selected:
                entry["metadata"]["selected"] = selected
    out.write_text(json.dumps(catalog))


if __name__ == "__main__":  # python benchmarks/singer_io.py: install only
    print(ensure_venv(HERE.parent))
