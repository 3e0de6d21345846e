"""Every relative link in the project's Markdown leads somewhere: the file exists and, for a `#heading` link, the
heading does too. Content moves between the README, the weights history and the model cards; a link left pointing
at the old place is caught here, not by a reader."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _documents() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not listed:  # not a git checkout (an unpacked source tree): every Markdown file outside virtualenvs
        listed = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.md") if ".venv" not in p.parts]
    return [ROOT / name for name in sorted(listed)]


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    text = FENCE.sub("", markdown)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_the_anchor_rule_matches_githubs():
    assert github_anchor("Ranking of the seed architectures") == "ranking-of-the-seed-architectures"
    assert github_anchor("Container (format versions 1 and 2)") == "container-format-versions-1-and-2"
    assert anchors("# Title\n```\n# not a heading\n```\n## Weights versions\n") == {"title", "weights-versions"}


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    text = FENCE.sub("", document.read_text())
    broken = []
    for link in LINK.findall(text):
        if re.match(r"[a-z]+:", link):  # http(s), mailto: not ours to check offline
            continue
        path, _, fragment = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target.read_text()):
            broken.append(f"{link}: no heading #{fragment} in {target.relative_to(ROOT)}")
    assert not broken, broken
