"""Execute notebooks/ot.ipynb (small sizes) with nbclient."""
from pathlib import Path

import nbformat
import pytest

NB = Path(__file__).resolve().parents[2] / "notebooks" / "ot.ipynb"


@pytest.mark.slow
def test_ot_notebook_runs():
    from nbclient import NotebookClient

    nb = nbformat.read(NB, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NB.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "SNS:" in text and "digits W2" in text
