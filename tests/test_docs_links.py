"""Every relative link of the README and docs pages reaches a file, and a heading if it names one.

The README is the front door and links docs/ pages for the details; moving a section or renaming
a heading would otherwise leave a link that leads nowhere, which no other test notices.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "hub" / "README.md",
    ROOT / "benchmarks" / "README.md",
    ROOT / "loaders" / "target-postgres-mixpanel" / "README.md",
]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_pages_checked_exist_and_link_somewhere():
    assert all(page.is_file() for page in PAGES), [p for p in PAGES if not p.is_file()]
    assert len(relative_links(ROOT / "README.md")) >= 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_its_file_and_heading(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, broken


def test_slug_is_githubs():
    assert slug("Run it with Meltano: the main job") == "run-it-with-meltano-the-main-job"
    assert slug("`partition_mode`: fixed or fitted to the budget") == (
        "partition_mode-fixed-or-fitted-to-the-budget"
    )
    assert slug("State and exit codes") == "state-and-exit-codes"
