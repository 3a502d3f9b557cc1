"""notebooks/bcd.ipynb executes end to end (small sizes)."""
from notebook_runner import run_notebook


def test_notebook_runs():
    assert "f* =" in run_notebook("bcd.ipynb")
