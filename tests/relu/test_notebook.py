"""Execute notebooks/relu.ipynb (small sizes) with nbclient."""
from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[2] / "notebooks" / "relu.ipynb"


@pytest.mark.slow
def test_notebook_runs(monkeypatch):
    import os
    # the kernel runs in notebooks/: let it import the in-place (worktree) numopt
    root = str(NB.parents[1])
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NB, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB.parent)}})
    client.execute()
