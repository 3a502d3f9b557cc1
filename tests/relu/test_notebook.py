"""notebooks/relu.ipynb executes end to end (small sizes); any cell error fails the test."""
from notebook_runner import run_notebook


def test_notebook_runs():
    run_notebook("relu.ipynb")
