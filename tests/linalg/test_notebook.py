"""notebooks/linalg.ipynb executes end to end."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from notebook_runner import run_notebook  # noqa: E402


def test_linalg_notebook_runs():
    nb = run_notebook("linalg.ipynb")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "numopt ic0-pcg" in text and "iterations=" in text
