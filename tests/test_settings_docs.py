"""The README's settings table says what the one schema says: every setting, its default, bounds.

CONFIG_SCHEMA is the single source of each setting; meltano.yml and the Hub file are checked
against the tap's ``--about`` by test_hub_definition.py, and this checks the README's table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tap_mixpanel_parallel.settings import CONFIG_SCHEMA

README = Path(__file__).resolve().parents[1] / "README.md"


def settings_rows() -> dict[str, str]:
    """setting name -> the table's type/default cell, from the README's Settings section."""
    text = README.read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            assert name not in rows, f"{name} is in the README's table twice"
            rows[name] = cells[1]
    return rows


def rendered(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


ROWS = settings_rows()


@pytest.mark.parametrize("name", list(CONFIG_SCHEMA["properties"]))
def test_every_setting_is_in_the_readme_table_with_its_default_and_bounds(name):
    prop = CONFIG_SCHEMA["properties"][name]
    assert name in ROWS, f"{name} is missing from the README's settings table"
    cell = ROWS[name]
    tokens = re.findall(r"[\w.\-]+", cell.replace("`", " "))
    if "default" in prop:
        assert rendered(prop["default"]) in tokens, (name, cell, prop["default"])
    if "minimum" in prop and "maximum" in prop:
        assert f"{prop['minimum']}..{prop['maximum']}" in cell, (name, cell)
    for match in re.findall(r"(\d+)\.\.(\d+)", cell):
        assert (int(match[0]), int(match[1])) == (prop.get("minimum"), prop.get("maximum"))
    for match in re.findall(r">= (\d+)", cell):
        assert int(match) == prop.get("minimum"), (name, cell)
    if prop.get("secret"):
        assert "secret" in cell, (name, cell)


def test_the_readme_table_names_no_setting_the_tap_does_not_have():
    assert set(ROWS) <= set(CONFIG_SCHEMA["properties"])
