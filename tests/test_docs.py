"""The design document that docstrings cite: every cited section exists."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SOURCES = sorted((ROOT / "src" / "l1sparse").rglob("*.py"))

# "docs/design.md §4", "design.md §5.2", "docs/design.md §4, §5" (a citation may wrap a line)
CITATION = re.compile(r"design\.md\s+((?:§\d+(?:\.\d+)*(?:,\s*)?)+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,4} §(\d+(?:\.\d+)*) \S", re.MULTILINE)


def cited_sections(text: str) -> list[str]:
    """The section numbers cited as ``design.md §N`` in ``text``."""
    return [s for group in CITATION.findall(text) for s in SECTION.findall(group)]


def missing_sections(sources: dict[str, str], design: str) -> list[tuple[str, str]]:
    """``(source, section)`` for every citation whose section has no heading in ``design``."""
    present = set(HEADING.findall(design))
    return [(name, s) for name, text in sources.items() for s in cited_sections(text)
            if s not in present]


def test_the_checker_finds_a_missing_section():
    design = "# t\n\n## §1 Models\n\n### §1.2 Scale\n\n## §3 Characterisation\n"
    sources = {"a.py": "see docs/design.md §1 and\n    docs/design.md §1.2, §3",
               "b.py": "(docs/design.md §2)", "c.py": "design.md §3.1"}
    assert cited_sections(sources["a.py"]) == ["1", "1.2", "3"]
    assert missing_sections(sources, design) == [("b.py", "2"), ("c.py", "3.1")]
    assert missing_sections({"d.py": "no citation"}, design) == []


def test_design_document_has_numbered_sections():
    sections = HEADING.findall(DESIGN.read_text(encoding="utf-8"))
    top = [s for s in sections if "." not in s]
    assert top == [str(i) for i in range(1, len(top) + 1)], top  # §1, §2, … in order
    assert len(top) >= 7


def test_every_cited_section_exists():
    sources = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in SOURCES}
    assert sum(len(cited_sections(t)) for t in sources.values()) >= 5  # the collector works
    assert missing_sections(sources, DESIGN.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_citation_of_the_design_notes_outside_the_repository(path):
    # "DESIGN §N" meant a file that is not in the repository; cite docs/design.md §N instead
    assert not re.search(r"\bDESIGN\s+§", path.read_text(encoding="utf-8"))
