"""notebooks/linalg.ipynb executes end to end."""
from notebook_runner import run_notebook


def test_linalg_notebook_runs():
    nb = run_notebook("linalg.ipynb")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "numopt ic0-pcg" in text and "iterations=" in text
