"""notebooks/dcdm.ipynb executes end to end (small sizes) and reports what it should."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("torch")
pytest.importorskip("pyamg")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_dcdm_notebook_runs(monkeypatch):
    root = str(NOTEBOOKS.parent)  # the kernel runs in notebooks/: let it import the in-place package
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("NUMOPT_TORCH_THREADS", "1")
    nb = nbformat.read(str(NOTEBOOKS / "dcdm.ipynb"), as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "DCDM: " in text and "network calls" in text and "A-cosine" in text
