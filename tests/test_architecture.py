"""The layering of the code, checked: the import-linter contracts of pyproject.toml, no import cycle
between modules, and no process-wide setting made by the library core."""

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

REPO = Path(__file__).resolve().parents[1]
CORE = ("space", "supernet", "search", "arch", "models", "data", "train")


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    # no cache: the clone stays as it is while other test processes read it
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    contracts = sum(1 for line in (REPO / "pyproject.toml").read_text().splitlines()
                    if line.strip() == "[[tool.importlinter.contracts]]")
    assert contracts >= 3 and f"{contracts} kept, 0 broken" in done.stdout


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("nasseg", exclude_type_checking_imports=True, cache_dir=None)
    imports = nx.DiGraph()
    for module in graph.modules:
        imports.add_edges_from((module, target) for target in graph.find_modules_directly_imported_by(module))
    cycles = [sorted(c) for c in nx.strongly_connected_components(imports) if len(c) > 1]
    assert cycles == []


def test_the_core_makes_no_process_wide_settings():
    """Heap, plotting backend, thread counts and global styles belong to the shell's entry points."""
    calls = ("keep_freed_heap", "set_num_threads", "use", "mallopt", "rcParams")
    found = []
    for package in CORE:
        for path in (REPO / "nasseg" / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                name = getattr(node, "attr", None) or getattr(node, "id", None)
                if isinstance(node, (ast.Attribute, ast.Name)) and name in calls:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert found == []
