"""notebooks/linalg.ipynb executes end to end."""
from notebook_runner import run_notebook


def test_linalg_notebook_runs():
    text = run_notebook("linalg.ipynb")
    assert "numopt ic0-pcg" in text and "iterations=" in text
