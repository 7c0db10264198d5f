"""The layer contract CI enforces (ARCHITECTURE.md): arrows point one way, formats and families stay in
their rooms, no catch-all modules.

- import-linter's contracts in pyproject.toml (layers, formats independent, nothing imports the CLI,
  the core imports no format package), run with the real `lint-imports`;
- no import cycle among quantkit's modules (grimp's graph, imports inside functions included);
- outside quantkit/formats/ and quantkit/adapters/ no code compares a value against a format name, a
  model family or a model_type (the AST is read, so docstrings and messages may still name them);
- no module over 600 lines.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import quantkit
from quantkit.adapters import ADAPTERS
from quantkit.format import format_names

ROOT = Path(quantkit.__file__).parent
REPO = ROOT.parent
MAX_LINES = 600
# Rooms allowed to speak of a format or a family by name.
OWN_ROOMS = ("formats", "adapters")


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency (pip install -e '.[dev]')"
    r = subprocess.run([exe, str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Tarjan's algorithm over `modules` (iterative, so deep chains do not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            for j in range(i, len(edges[node])):
                nxt = edges[node][j]
                if nxt not in index:
                    work.append((node, j + 1))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def test_no_import_cycles():
    graph = grimp.build_graph("quantkit", exclude_type_checking_imports=True)
    # The root package's __init__ imports quantkit.formats only to register them (and `load`); it is
    # no room, so it is left out of the cycle search.
    modules = {m for m in graph.modules if m != "quantkit"}
    cycles = _strongly_connected(graph, modules)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _names_owned_by_rooms() -> tuple[set[str], set[str]]:
    """(format names, family names and model_types the adapters recognise)."""
    families = set()
    for cls in ADAPTERS:
        families.add(cls.family)
        families.update(getattr(cls, "model_types", ()))
    return set(format_names()), families


def _branches(path: Path, formats: set[str], families: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    src = path.read_text()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        consts = []
        for op in operands:
            if isinstance(op, ast.Constant) and isinstance(op.value, str):
                consts.append(op.value)
            elif isinstance(op, (ast.Tuple, ast.List, ast.Set)):
                consts += [e.value for e in op.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        text = ast.get_source_segment(src, node) or ""
        for c in consts:
            # "gptq" is also a method name (GPTQ vs RTN): a format is meant when the code speaks of formats
            is_format = c in formats and (c != "gptq" or "format" in text or "fmt" in text)
            if is_format or c in families:
                found.append(f"{path}:{node.lineno}: {text}")
    return found


def test_no_format_or_family_branches_outside_their_rooms():
    formats, families = _names_owned_by_rooms()
    assert {"gptq", "gguf"} <= formats and families
    offenders = []
    for path in _modules():
        rel = path.relative_to(ROOT).parts
        if rel[0] in OWN_ROOMS:
            continue
        offenders += _branches(path, formats, families)
    assert not offenders, "branches on a format or family name outside formats/ and adapters/:\n" + "\n".join(offenders)


def test_branch_detector_finds_a_branch(tmp_path):
    """The detector above is not vacuous: it flags the kinds of branch the redesign removed."""
    p = tmp_path / "x.py"
    p.write_text('if manifest.get("format") == "gguf":\n    pass\nif adapter.family != "fam":\n    pass\n'
                 'if s.method == "gptq":\n    pass\n')
    found = _branches(p, {"gptq", "gguf"}, {"fam"})
    assert len(found) == 2 and "method" not in " ".join(found)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(REPO)}: {n} lines (split it: one job per module)"


def test_lint_is_clean():
    exe = shutil.which("ruff")
    assert exe, "ruff is a test dependency (pip install -e '.[dev]')"
    r = subprocess.run([exe, "check", "quantkit", "tests", "bench", "scripts"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout[-4000:]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
