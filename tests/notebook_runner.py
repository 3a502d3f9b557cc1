"""Execute a notebook from notebooks/ with nbclient (used by each area's test_notebook.py)."""
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def run_notebook(name, timeout=300):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    # the kernel imports the numopt this test imports (an in-place build or the installed package)
    import numopt

    pkg_root = str(Path(numopt.__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.setdefault("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb
