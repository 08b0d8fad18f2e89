"""The docs stand alone: README.md and docs/ name no file outside the repository, and every
relative link in them reaches a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

# Documents a reader of the repository does not have: the design and style notes, the seed
# documents and the reference notes of the machine the project was written on.
OUTSIDE = re.compile(
    r"design\.md|style\.md|\bseeds?\s+00\d|\bseed-00\d|/work/shared|reference\s+§|"
    r"reference section|reference/|home-automation reference",
    flags=re.IGNORECASE,
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^ *```.*?^ *```", flags=re.DOTALL | re.MULTILINE)


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.MULTILINE):
        base = slug(heading)
        anchor, n = base, 0
        while anchor in found:  # repeated headings get -1, -2...
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_no_reference_to_files_outside_the_repository(doc: Path) -> None:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found = [f"{n}: {line}" for n, line in enumerate(lines, 1) if OUTSIDE.search(line)]
    assert not found, f"{_name(doc)} refers to documents outside the repository:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_relative_link_reaches_a_file_and_heading(doc: Path) -> None:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif not path.is_relative_to(REPO):
            broken.append(f"{target}: outside the repository")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {_name(path)}")
    assert not broken, f"{_name(doc)} has broken links:\n" + "\n".join(broken)
