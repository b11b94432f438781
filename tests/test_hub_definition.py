"""The Meltano Hub definitions pass the Hub's checks and agree with meltano.yml and ``--about``.

Three descriptions of one extractor drift apart unless something compares them: the Hub file
(hub/_data/meltano/extractors/tap-mixpanel/<variant>.yml), the inline extractor of meltano.yml,
and what the installed tap reports with ``--about --format json``. The loader's Hub file
(hub/_data/meltano/loaders/target-postgres/<variant>.yml) must default to what meltano.yml's
target-postgres is configured with. Both files are checked against the Hub's JSON schemas and
yamllint configuration, copied into ``../shared/reference/meltano-hub/`` beside the repository.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from tap_mixpanel_parallel.tap import TapMixpanelParallel
from tests.helpers import TAP, discover

ROOT = Path(__file__).resolve().parents[1]
HUB_DATA = ROOT / "hub" / "_data" / "meltano"
# The Hub lists implementations of one source as variants of one plugin name (see docs/meltano.md,
# "Why a `tap-mixpanel` variant"): this tap is a variant of tap-mixpanel, the loader one of
# target-postgres.
HUB_NAME = "tap-mixpanel"
LOADER_HUB_NAME = "target-postgres"
NAME = "tap-mixpanel-parallel"  # the executable, the distribution and meltano.yml's name
LOADER_DIST = "target-postgres-mixpanel"
# The Hub's schema (schemas/common/base_setting.schema.json) and extractor capabilities.
HUB_KINDS = {
    "oauth",
    "hidden",
    "password",
    "date_iso8601",
    "file",
    "email",
    "integer",
    "decimal",
    "options",
    "object",
    "array",
    "boolean",
    "string",
}
HUB_CAPABILITIES = {
    "properties",
    "catalog",
    "discover",
    "state",
    "about",
    "stream-maps",
    "schema-flattening",
    "activate-version",
    "batch",
    "test",
    "log-based",
    "structured-logging",
}
SETTING_KEYS = {"name", "label", "kind", "description", "value", "options", "sensitive"}
# Meltano kinds each JSON schema type may be declared as. A JSON "number" (a fraction allowed) is
# `decimal` on the Hub. meltano.yml declares it `integer`: Meltano 4.4.1 crashes on any
# environment-variable value of a `decimal` setting (tests/test_hub_path.py shows it), and this
# repository's project is driven by environment variables.
COMPATIBLE = {
    "string": {"string", "password", "date_iso8601", "options"},
    "integer": {"integer"},
    "number": {"decimal"},
    "boolean": {"boolean"},
    "array": {"array"},
    "object": {"object"},
}
# Settings the SDK adds to every tap; their descriptions are the SDK's business.
SDK_BUILTINS = {
    "stream_maps",
    "stream_map_config",
    "faker_config",
    "flattening_enabled",
    "flattening_max_depth",
    "flattening_max_key_length",
    "flattening_separator",
    "batch_config",
}


def hub_file() -> Path:
    files = sorted((HUB_DATA / "extractors" / HUB_NAME).glob("*.yml"))
    assert len(files) == 1, files
    return files[0]


def loader_hub_file() -> Path:
    files = sorted((HUB_DATA / "loaders" / LOADER_HUB_NAME).glob("*.yml"))
    assert len(files) == 1, files
    return files[0]


def hub_reference() -> Path | None:
    """The Hub's checks, copied into ``../shared/reference/meltano-hub`` beside the repository.

    In a git worktree "beside the repository" is beside the main checkout, found through the
    common git directory.
    """
    candidates = [ROOT.parent / "shared"]
    proc = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0 and proc.stdout.strip():
        candidates.append(Path(proc.stdout.strip()).parent.parent / "shared")
    for shared in candidates:
        reference = shared / "reference" / "meltano-hub"
        if (reference / "schemas").is_dir() and (reference / "yamllint.yaml").is_file():
            return reference
    return None


@pytest.fixture(scope="module")
def reference() -> Path:
    found = hub_reference()
    if found is None:
        pytest.skip(
            "the Meltano Hub's schemas and yamllint.yaml are not here: they are read from"
            f" {ROOT.parent / 'shared' / 'reference' / 'meltano-hub'} (shared/ beside the"
            " repository), which this checkout does not have"
        )
    return found


@pytest.fixture(scope="module")
def hub() -> dict[str, Any]:
    return yaml.safe_load(hub_file().read_text())


@pytest.fixture(scope="module")
def loader_hub() -> dict[str, Any]:
    return yaml.safe_load(loader_hub_file().read_text())


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "meltano.yml").read_text())


@pytest.fixture(scope="module")
def project_extractor(project) -> dict[str, Any]:
    (extractor,) = [e for e in project["plugins"]["extractors"] if e["name"] == NAME]
    return extractor


@pytest.fixture(scope="module")
def project_loader(project) -> dict[str, Any]:
    (loader,) = [p for p in project["plugins"]["loaders"] if p["name"] == "target-postgres"]
    return loader


@pytest.fixture(scope="module")
def about() -> dict[str, Any]:
    proc = subprocess.run(
        [TAP, "--about", "--format", "json"], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)


def json_type(prop: dict[str, Any]) -> str:
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    (kind,) = [t for t in types if t != "null"]
    return kind


def by_name(settings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), "a setting is declared twice"
    return {s["name"]: s for s in settings}


def test_hub_file_is_a_valid_hub_extractor(hub):
    assert hub_file().stem == hub["variant"], "the Hub names the file <variant>.yml"
    assert hub_file().parent.name == hub["name"] == HUB_NAME
    for key in ("name", "namespace", "variant", "label", "quality"):  # required by the Hub
        assert isinstance(hub[key], str)
        assert hub[key]
    # Its own namespace, so the default load schema (tap_mixpanel_parallel) never mixes its
    # tables with another tap-mixpanel variant's differently shaped ones.
    assert hub["namespace"] == "tap_mixpanel_parallel"
    assert hub["executable"] == NAME
    assert hub["pip_url"] == NAME, "the Hub installs the published package"
    assert set(hub["capabilities"]) <= HUB_CAPABILITIES
    for setting in hub["settings"]:
        assert set(setting) <= SETTING_KEYS, setting
        assert setting["kind"] in HUB_KINDS, setting
        assert setting.get("description"), f"{setting['name']} has no description"
        for option in setting.get("options", []):
            assert set(option) == {"label", "value"}
            assert isinstance(option["value"], str)


def test_variant_and_repo_are_the_published_repository():
    """The Hub names a variant after the GitHub owner that publishes it; one URL says both."""
    urls = dict(url.split(", ", 1) for url in metadata.metadata(NAME).get_all("Project-URL") or [])
    repo = urls["Repository"]
    owner = re.fullmatch(r"https://github\.com/([\w.-]+)/[\w.-]+", repo)
    assert owner, repo
    for definition in (hub_file(), loader_hub_file()):
        plugin = yaml.safe_load(definition.read_text())
        assert plugin["repo"] == repo, definition
        assert plugin["variant"] == owner.group(1).lower() == definition.stem, definition


def test_supported_python_versions_are_the_packages(hub, loader_hub, about):
    classifiers = metadata.metadata(NAME).get_all("Classifier") or []
    versions = [c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)]
    assert hub["supported_python_versions"] == versions == about["supported_python_versions"]
    # The loader runs wherever both the tap's users and its own base target do.
    assert set(loader_hub["supported_python_versions"]) <= set(versions)


def test_hub_and_meltano_yml_declare_the_same_extractor(hub, project_extractor):
    for key in ("namespace", "executable", "capabilities", "settings_group_validation", "select"):
        assert hub[key] == project_extractor[key], key
    assert project_extractor["pip_url"] == (
        "-e ${MELTANO_PROJECT_ROOT}"
        " -c ${MELTANO_PROJECT_ROOT}/constraints/tap-mixpanel-parallel.txt"
    ), "the checkout, with the dependency versions CI tested"
    hub_settings = by_name(hub["settings"])
    yml_settings = by_name(project_extractor["settings"])
    assert list(hub_settings) == list(yml_settings), "same settings, same order"
    for name, hub_setting in hub_settings.items():
        yml_setting = yml_settings[name]
        assert set(yml_setting) <= SETTING_KEYS, yml_setting
        assert bool(hub_setting.get("sensitive")) == bool(yml_setting.get("sensitive")), name
        # The Hub spells a secret `password`; Meltano 4 deprecates that kind for
        # `string` + `sensitive: true`. A fraction is `decimal` on the Hub and `integer` in
        # meltano.yml (see COMPATIBLE).
        expected_kind = {"password": "string", "decimal": "integer"}.get(
            hub_setting["kind"], hub_setting["kind"]
        )
        assert yml_setting["kind"] == expected_kind, name
        for key in ("label", "description", "value", "options"):
            assert hub_setting.get(key) == yml_setting.get(key), (name, key)


def test_hub_selects_the_streams_the_tap_selects_by_default(hub, tmp_path):
    """The Hub's `select` replaces Meltano's `*.*`, which would select every stream."""
    catalog = discover({"api_secret": "x", "start_date": "2024-01-01"}, tmp_path)
    selected = []
    for stream in catalog["streams"]:
        (top,) = [m for m in stream["metadata"] if m["breadcrumb"] == []]
        if top["metadata"].get("selected-by-default", True):
            selected.append(f"{stream['tap_stream_id']}.*")
    assert sorted(hub["select"]) == sorted(selected)
    assert {"events.*", "engage.*"} <= set(hub["select"])
    assert "cohort_members.*" not in hub["select"] and "funnels.*" not in hub["select"]


def test_hub_settings_match_the_taps_about(hub, about):
    assert about["name"] == NAME
    properties = about["settings"]["properties"]
    hub_settings = by_name(hub["settings"])
    own = [name for name in properties if name not in SDK_BUILTINS]
    assert own == [n for n in hub_settings if n not in SDK_BUILTINS], (
        "every setting of config_jsonschema, in its order, and nothing else"
    )
    assert set(hub_settings) <= set(properties)
    for name, setting in hub_settings.items():
        prop = properties[name]
        assert setting["kind"] in COMPATIBLE[json_type(prop)], (name, setting["kind"])
        secret = bool(prop.get("secret"))
        assert bool(setting.get("sensitive")) == secret, name
        assert (setting["kind"] == "password") == secret, name
        if "enum" in prop:
            assert setting["kind"] == "options"
            assert [o["value"] for o in setting["options"]] == prop["enum"]
        elif setting["kind"] == "options":
            pytest.fail(f"{name}: options without an enum in the tap")
        assert setting.get("value") == prop.get("default"), (name, "default")
        if name not in SDK_BUILTINS:
            assert setting["description"] == prop["description"], name


def test_group_validation_matches_the_taps_auth_rules(hub, about):
    groups = [set(group) for group in hub["settings_group_validation"]]
    required = set(about["settings"].get("required", []))
    assert required == {"start_date"}
    assert all(required <= group for group in groups)
    assert {"service_account_username", "service_account_secret", "project_id"} <= groups[0]
    assert "api_secret" in groups[1]
    assert not groups[0] & {"api_secret"}
    assert not groups[1] & {"service_account_username", "service_account_secret"}
    names = {s["name"] for s in hub["settings"]}
    assert set().union(*groups) <= names


def test_capabilities_are_ones_the_tap_has(hub, about):
    assert set(hub["capabilities"]) <= set(about["capabilities"])
    # without `discover`, `meltano run` fails with "catalog file is missing"
    assert {"state", "catalog", "discover", "about"} <= set(hub["capabilities"])
    assert {"stream-maps", "schema-flattening"} <= set(hub["capabilities"])


def test_about_comes_from_the_same_schema_as_the_tap_class(about):
    """The console script and the imported class agree (no stale install)."""
    assert list(about["settings"]["properties"])[
        : len(TapMixpanelParallel.config_jsonschema["properties"])
    ] == list(TapMixpanelParallel.config_jsonschema["properties"])


# -- the Hub's own checks ---------------------------------------------------------------------


def hub_validator(reference: Path, plugin_type: str) -> Any:
    """The Hub's draft-7 validator for ``plugin_type``, resolving its relative ``$ref``s on disk."""
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource

    schemas = reference / "schemas"
    registry: Registry[Any] = Registry().with_resources(
        (path.resolve().as_uri(), Resource.from_contents(json.loads(path.read_text())))
        for path in schemas.rglob("*.json")
    )
    path = schemas / "plugin_definitions" / f"{plugin_type}.schema.json"
    schema = {**json.loads(path.read_text()), "$id": path.resolve().as_uri()}
    return Draft7Validator(schema, registry=registry)


@pytest.mark.parametrize(
    ("plugin_type", "definition"),
    [("extractors", hub_file), ("loaders", loader_hub_file)],
    ids=["extractor", "loader"],
)
def test_hub_definition_validates_against_the_hubs_schema(reference, plugin_type, definition):
    plugin = yaml.safe_load(definition().read_text())
    validator = hub_validator(reference, plugin_type)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(plugin)
    ]
    assert errors == []
    # The validator is live: a copy without `quality`, or with a kind the Hub lacks, fails.
    broken = {k: v for k, v in plugin.items() if k != "quality"}
    assert "'quality' is a required property" in [e.message for e in validator.iter_errors(broken)]
    odd = {**plugin, "settings": [{**plugin["settings"][0], "kind": "number"}]}
    assert list(validator.iter_errors(odd))


def test_hub_definitions_pass_the_hubs_yamllint(reference):
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(reference / "yamllint.yaml"))
    problems = []
    for definition in sorted(HUB_DATA.rglob("*.yml")):
        problems += [
            f"{definition.relative_to(ROOT)}:{p.line}:{p.column} {p.desc} ({p.rule})"
            for p in linter.run(definition.read_text(), config, str(definition))
        ]
    assert problems == []
    # The configuration is the Hub's: unsorted keys fail it.
    assert list(linter.run("name: a\nlabel: b\n", config))


# -- the loader ----------------------------------------------------------------------------------


def test_loader_hub_file_is_a_target_postgres_variant(loader_hub):
    assert loader_hub_file().parent.name == loader_hub["name"] == LOADER_HUB_NAME
    assert loader_hub_file().stem == loader_hub["variant"]
    # Same namespace as the Hub's other target-postgres variants: the same TARGET_POSTGRES_*
    # settings, so switching variant keeps a project's configuration.
    assert loader_hub["namespace"] == "target_postgres"
    assert loader_hub["pip_url"] == LOADER_DIST
    assert loader_hub["executable"] == LOADER_DIST
    assert loader_hub["dialect"] == "postgres"
    for setting in loader_hub["settings"]:
        assert set(setting) <= SETTING_KEYS, setting
        assert setting["kind"] in HUB_KINDS, setting
    # the schema follows the extractor: tap_mixpanel_parallel for this tap
    defaults = {s["name"]: s.get("value") for s in loader_hub["settings"]}
    assert defaults["default_target_schema"] == "$MELTANO_EXTRACT__LOAD_SCHEMA"
    assert loader_hub["target_schema"] == "$TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA"


def test_loader_hub_defaults_are_meltano_ymls_fast_and_correct_config(loader_hub, project_loader):
    """A Hub user sets credentials and connection only; the rest is what meltano.yml runs with."""
    defaults = {s["name"]: s.get("value") for s in loader_hub["settings"]}
    config = dict(project_loader["config"])
    assert config.pop("default_target_schema") == "mixpanel"  # the repo's own choice of schema
    assert config, "meltano.yml configures target-postgres"
    for name, value in config.items():
        assert defaults.get(name) == value, name
    assert {"load_method", "use_copy", "validate_records", "add_record_metadata"} <= set(config)
    hub_names = {s["name"] for s in loader_hub["settings"]}
    assert {s["name"] for s in project_loader["settings"]} <= hub_names
    # the loader's capabilities are the ones meltano.yml declares (and structured logging)
    assert set(project_loader["capabilities"]) | {"structured-logging"} == set(
        loader_hub["capabilities"]
    )
