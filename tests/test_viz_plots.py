"""The plots and the report leave matplotlib's process-wide state alone: importing them picks no
backend and loads no pyplot, and plotting restores every rcParam it styles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import sys
import matplotlib

def settings():
    return {key: str(matplotlib.rcParams._get(key)) for key in matplotlib.rcParams}  # _get: no backend lookup

before = settings()
import nasseg.shell.report, nasseg.viz.draw
from nasseg.viz import plots
assert settings() == before, "import"
plots.plot_training_curves(sys.argv[1], sys.argv[2])
plots.plot_alpha_evolution(sys.argv[1], sys.argv[2], "reduce")
changed = sorted(key for key, value in settings().items() if before[key] != value)
assert changed == [], changed
assert matplotlib.rcParams._get_backend_or_none() is None  # still undecided: no backend was chosen
assert "matplotlib.pyplot" not in sys.modules
print("untouched")
"""


def test_plotting_changes_no_process_wide_state(darts_run, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(darts_run), str(tmp_path / "plot.png")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "untouched", done.stderr[-2000:]
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")


def test_no_pyplot_backend_or_global_style_in_the_source():
    """The object API only: no pyplot, matplotlib.use or rcParams writes in nasseg.viz or the report."""
    found = []
    for path in [*(REPO / "nasseg" / "viz").rglob("*.py"), *(REPO / "nasseg" / "shell" / "report").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            attribute = node.attr if isinstance(node, ast.Attribute) else None
            if "pyplot" in module or any("pyplot" in n for n in names) or attribute in ("use", "rcParams"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []
