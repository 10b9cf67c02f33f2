"""The README and docs/: every relative link resolves to a file in the repository (and, for a
markdown target with an anchor, to one of its headings), no link leaves the repository, and the
README stays short."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def links(text: str) -> list[str]:
    """Link targets of a markdown text, code blocks left out."""
    return LINK.findall(FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", FENCE.sub("", path.read_text()), re.MULTILINE)}


def test_links_and_slugs_are_parsed_as_github_renders_them():
    text = "see [a](docs/a.md#b) and ![img](x.png)\n```\n[not](a link)\n```\n[c](https://e.org)"
    assert links(text) == ["docs/a.md#b", "https://e.org"]
    assert slug("Results on SciFact: the ablation") == "results-on-scifact-the-ablation"
    assert slug("The `train` step, in detail") == "the-train-step-in-detail"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_inside_the_repository(doc):
    broken = []
    for target in links(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.is_relative_to(REPO):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading '#{anchor}' in {path.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_the_readme_is_short_and_keeps_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 160
    assert "bash scripts/run_pipeline.sh" in text and "bash scripts/test.sh" in text


def test_the_method_spec_is_the_one_in_the_repository():
    """The docs point at docs/method.md, never at a copy of the spec outside the repository."""
    assert (REPO / "docs" / "method.md").is_file()
    offenders = [
        f"{d.name}: {line.strip()}" for d in DOCS for line in d.read_text().splitlines() if "METHOD.md" in line
    ]
    assert not offenders, offenders
