"""notebooks/dcdm.ipynb executes end to end (small sizes) and reports what it should."""
import pytest
from notebook_runner import run_notebook


def test_dcdm_notebook_runs():
    pytest.importorskip("torch")
    text = run_notebook("dcdm.ipynb", env={"NUMOPT_TORCH_THREADS": "1"})
    assert "DCDM: " in text and "network calls" in text and "A-cosine" in text
