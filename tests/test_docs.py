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


# Importing a module (as doctest collection does for every module of src/) must not change
# global state, and must not need a package that only some extras install.
_IMPORT_ALL = r"""
import importlib, logging, os, pkgutil, random, sys, warnings
import numpy as np, torch
try:
    import scipy.optimize, scipy.special  # a third party's own import-time filters are not ours
except ImportError:
    pass
before = dict(torch_rng=torch.get_rng_state().clone(), np_rng=np.random.get_state()[1].copy(),
              py_rng=random.getstate(), threads=torch.get_num_threads(),
              handlers=list(logging.getLogger().handlers), level=logging.getLogger().level,
              filters=list(warnings.filters), env=dict(os.environ), cwd=sorted(os.listdir(".")),
              dtype=torch.get_default_dtype(), grad=torch.is_grad_enabled(),
              modules=set(sys.modules))
import l1sparse
# l1sparse.sklearn is the scikit-learn interface: it imports scikit-learn by design; so do the
# trainer integrations their frameworks (whose own imports set warnings filters, environment
# variables and, for lightning, the random module's state); l1sparse.integrations itself is
# walked
EXTRAS = ("l1sparse.sklearn", "l1sparse.integrations.huggingface",
          "l1sparse.integrations.lightning")
names = [m.name for m in pkgutil.walk_packages(l1sparse.__path__, "l1sparse.")
         if not m.name.endswith("__main__") and m.name not in EXTRAS]
for name in names:
    importlib.import_module(name)
changed = []
if not torch.equal(before["torch_rng"], torch.get_rng_state()): changed.append("torch RNG")
if not (before["np_rng"] == np.random.get_state()[1]).all(): changed.append("numpy RNG")
if before["py_rng"] != random.getstate(): changed.append("random RNG")
if before["threads"] != torch.get_num_threads(): changed.append("torch threads")
if (before["handlers"], before["level"]) != (logging.getLogger().handlers,
                                             logging.getLogger().level):
    changed.append("root logger")
if before["filters"] != warnings.filters: changed.append("warnings filters")
if before["env"] != dict(os.environ): changed.append("environment")
if before["cwd"] != sorted(os.listdir(".")): changed.append("files in the working directory")
if before["dtype"] != torch.get_default_dtype(): changed.append("default dtype")
if before["grad"] != torch.is_grad_enabled(): changed.append("grad mode")
optional = {"matplotlib", "mlxtend", "sklearn", "hypothesis", "pytest", "pandas"}
loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before["modules"]} & optional)
print(len(names), "|", ",".join(changed), "|", ",".join(loaded))
"""


def test_importing_every_module_has_no_side_effects(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    n_modules, changed, optional = (part.strip() for part in out.strip().split("|"))
    assert int(n_modules) >= 20  # the walk found the package's modules
    assert changed == "", f"importing l1sparse modules changed: {changed}"
    assert optional == "", f"importing l1sparse modules imported optional packages: {optional}"
