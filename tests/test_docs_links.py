"""Every relative link in the project's Markdown points at a file that exists and, with an anchor, at a heading
that file has (GitHub's heading anchors)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").rglob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"```.*?```", re.S)


def github_anchors(page: Path) -> set[str]:
    anchors, seen = set(), {}
    for line in page.read_text().splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            anchor = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def relative_links(page: Path) -> list[str]:
    text = CODE_BLOCK.sub("", page.read_text())
    return [link for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in github_anchors(target):
            broken.append(link)
    return broken


def test_the_anchor_of_a_heading_with_code_and_punctuation_is_githubs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("## Prostate-like slice (`--kind prostate`, 2D)\n")
    assert github_anchors(page) == {"prostate-like-slice---kind-prostate-2d"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository(page):
    assert [link for link in relative_links(page)
            if not (page.parent / link.partition("#")[0]).resolve().is_relative_to(ROOT)] == []
