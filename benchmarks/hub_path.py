"""The Hub user's path: a new Meltano project made only from this repository's Hub definitions.

Once listed, a user installs both plugins from Meltano Hub::

    meltano add --plugin-type extractor tap-mixpanel --variant mixpanel-parallel
    meltano add --plugin-type loader target-postgres --variant mixpanel-parallel

This module plays the Hub: it serves ``hub/_data/meltano`` over the API Meltano reads
(``{hub_url}/meltano/api/v1/plugins/<type>/index`` and ``.../<type>/<name>--<variant>``, the
``hub_url`` setting every Meltano project has), with each definition's ``pip_url`` pointed at a
wheel built from this checkout (constrained to the versions CI pins), and builds such a project
with the real ``meltano`` CLI. The definition reaches the project as the Hub's would, its
``select`` and the loader's extras included (``meltano add --from-ref`` drops those: Meltano
4.4.1 keeps only settings and capabilities of a referenced file).

Used by tests/test_hub_path.py and benchmarks/main_job.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
HUB_DATA = ROOT / "hub" / "_data" / "meltano"
LOADER_DIR = ROOT / "loaders" / "target-postgres-mixpanel"
#: The two plugins as a Hub user names them.
EXTRACTOR = ("extractors", "tap-mixpanel")
LOADER = ("loaders", "target-postgres")
MELTANO_ENV = {
    "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    "MELTANO_DISABLE_TRACKING": "true",
    "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
    "MELTANO_CLI_LOG_FORMAT": "uncolored",
}
#: Variables of a developer's shell that would reach the project's plugins or Meltano.
FOREIGN_PREFIXES = ("MELTANO_", "TAP_MIXPANEL", "TARGET_POSTGRES_", "COVERAGE_PROCESS_")
#: A folder of already built wheels (.ci/check builds them into dist/ just before the tests).
WHEELS_ENV = "HUB_PATH_WHEELS"


def definition_path(plugin: tuple[str, str]) -> Path:
    """The one Hub file of ``plugin`` (type, name): ``<type>/<name>/<variant>.yml``."""
    (path,) = sorted((HUB_DATA / plugin[0] / plugin[1]).glob("*.yml"))
    return path


def variant(plugin: tuple[str, str]) -> str:
    return definition_path(plugin).stem


def build_wheels(out: Path) -> dict[tuple[str, str], Path]:
    """A wheel of the tap and one of the loader, from this checkout, by plugin.

    Built with the PyPA ``build`` frontend in isolated environments, as a release would be;
    ``$HUB_PATH_WHEELS`` names a folder where they were built already.
    """
    sources = {
        EXTRACTOR: (ROOT, "tap_mixpanel_parallel-"),
        LOADER: (LOADER_DIR, "target_postgres_mixpanel-"),
    }
    given = os.environ.get(WHEELS_ENV)
    found: dict[tuple[str, str], Path] = {}
    for plugin, (source, stem) in sources.items():
        if given:
            wheels = sorted(Path(given).glob(f"{stem}*.whl"))
            if len(wheels) != 1:
                msg = f"${WHEELS_ENV}={given}: expected one {stem}*.whl, found {wheels}"
                raise RuntimeError(msg)
            found[plugin] = wheels[0].resolve()
            continue
        out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "build", "--wheel", "--installer", "uv"]
        proc = subprocess.run(
            [*command, "--outdir", str(out), str(source)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(
                f"building {source} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            )
        (found[plugin],) = sorted(out.glob(f"{stem}*.whl"))
    return found


def definitions(
    pip_urls: Mapping[tuple[str, str], str],
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The Hub files as the Hub serves them, by (type, name, variant), ``pip_url`` replaced."""
    served = {}
    for plugin, pip_url in pip_urls.items():
        definition = yaml.safe_load(definition_path(plugin).read_text())
        definition["pip_url"] = pip_url
        served[(plugin[0], definition["name"], definition["variant"])] = definition
    return served


class _HubHandler(BaseHTTPRequestHandler):
    server: _HubServer

    def do_GET(self) -> None:
        prefix = "/meltano/api/v1/plugins/"
        body: Any = None
        if self.path.startswith(prefix):
            plugin_type, _, leaf = self.path[len(prefix) :].partition("/")
            if leaf == "index":
                body = self.server.index(plugin_type)
            else:
                name, _, variant_name = leaf.partition("--")
                body = self.server.plugins.get((plugin_type, name, variant_name))
        if body is None:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Meltano's own log says what it fetched."""


class _HubServer(ThreadingHTTPServer):
    def __init__(self, plugins: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.plugins = plugins

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def index(self, plugin_type: str) -> dict[str, Any]:
        """The Hub's index of one plugin type: each name's variants and where to get them."""
        index: dict[str, Any] = {}
        api = f"{self.url}/meltano/api/v1/plugins/{plugin_type}"
        for (kind, name, variant_name), definition in self.plugins.items():
            if kind != plugin_type:
                continue
            entry = index.setdefault(
                name,
                {
                    "default_variant": variant_name,
                    "logo_url": definition.get("logo_url"),
                    "variants": {},
                },
            )
            entry["variants"][variant_name] = {"ref": f"{api}/{name}--{variant_name}"}
        return index


@contextmanager
def local_hub(plugins: dict[tuple[str, str, str], dict[str, Any]]) -> Iterator[str]:
    """A Meltano Hub on a loopback port serving ``plugins``; yields its ``hub_url``."""
    server = _HubServer(plugins)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class HubProject:
    """A Meltano project in ``path``, driven by the real ``meltano`` CLI beside this Python."""

    path: Path
    env: dict[str, str]

    @classmethod
    def clean_env(cls, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
        # Meltano caches the Hub's index under the user's cache folder: keep it in ``home``.
        return {**env, **MELTANO_ENV, "XDG_CACHE_HOME": str(home / "cache")}

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).with_name("meltano")), *args],
            cwd=self.path, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def ok(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600) -> str:
        proc = self(*args, env=env, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"meltano {' '.join(args)} failed:\n{proc.stderr[-6000:]}")
        return proc.stdout


def create_project(path: Path, wheels: Mapping[tuple[str, str], Path]) -> HubProject:
    """``meltano init``, both plugins added from the (local) Hub, ``meltano install``."""
    home = path.parent
    home.mkdir(parents=True, exist_ok=True)
    env = HubProject.clean_env(home)
    init = HubProject(home, env)
    init.ok("init", path.name, "--no_usage_stats")
    project = HubProject(path, env)
    # Pinned as meltano.yml's plugins are (constraints/, scripts/update-locks.sh), so a new
    # release of a dependency cannot change a result without a change here.
    constraints = {EXTRACTOR: "tap-mixpanel-parallel.txt", LOADER: "target-postgres-mixpanel.txt"}
    plugins = definitions(
        {
            plugin: f"{wheel} -c {ROOT / 'constraints' / constraints[plugin]}"
            for plugin, wheel in wheels.items()
        }
    )
    with local_hub(plugins) as hub_url:
        for plugin_type, name in (EXTRACTOR, LOADER):
            project.ok(
                "add", "--no-install", "--plugin-type", plugin_type.rstrip("s"), name,
                "--variant", variant((plugin_type, name)), env={"MELTANO_HUB_URL": hub_url},
            )  # fmt: skip
    project.ok("install")
    return project
