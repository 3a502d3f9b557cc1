"""notebooks/ot.ipynb executes end to end (small sizes)."""
from notebook_runner import run_notebook


def test_ot_notebook_runs():
    text = run_notebook("ot.ipynb")
    assert "SNS:" in text and "digits W2" in text
