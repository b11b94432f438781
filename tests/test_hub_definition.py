"""The Meltano Hub definition and meltano.yml say the same as the tap's own ``--about``.

Three descriptions of one extractor drift apart unless something compares them: the Hub file
(hub/_data/meltano/extractors/...), the inline extractor of meltano.yml, and what the installed
tap reports with ``--about --format json``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tap_mixpanel_parallel.tap import TapMixpanelParallel
from tests.helpers import TAP

ROOT = Path(__file__).resolve().parents[1]
HUB_DIR = ROOT / "hub" / "_data" / "meltano" / "extractors" / "tap-mixpanel-parallel"
NAME = "tap-mixpanel-parallel"
# The Hub's schema (schemas/common/base_setting.schema.json) and extractor capabilities.
HUB_KINDS = {
    "oauth",
    "hidden",
    "password",
    "date_iso8601",
    "file",
    "email",
    "integer",
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
# Meltano kinds each JSON schema type may be declared as. A JSON "number" is `integer`: the Hub
# has no decimal kind, and Meltano 4.4.1's `decimal` crashes on an env-var value (Decimal is not
# JSON serialisable); a fractional value can still be written in meltano.yml.
COMPATIBLE = {
    "string": {"string", "password", "date_iso8601", "options"},
    "integer": {"integer"},
    "number": {"integer"},
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
    files = sorted(HUB_DIR.glob("*.yml"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="module")
def hub() -> dict[str, Any]:
    return yaml.safe_load(hub_file().read_text())


@pytest.fixture(scope="module")
def project_extractor() -> dict[str, Any]:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    (extractor,) = [e for e in project["plugins"]["extractors"] if e["name"] == NAME]
    return extractor


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
    for key in ("name", "namespace", "variant", "label"):  # required by the Hub's schema
        assert isinstance(hub[key], str)
        assert hub[key]
    assert hub["name"] == NAME
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


def test_hub_and_meltano_yml_declare_the_same_extractor(hub, project_extractor):
    for key in ("name", "namespace", "executable", "capabilities", "settings_group_validation"):
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
        # `string` + `sensitive: true`.
        expected_kind = "string" if hub_setting["kind"] == "password" else hub_setting["kind"]
        assert yml_setting["kind"] == expected_kind, name
        for key in ("label", "description", "value", "options"):
            assert hub_setting.get(key) == yml_setting.get(key), (name, key)


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
