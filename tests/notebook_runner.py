"""Execute a notebook from notebooks/ with nbclient; every area's notebook test goes through here."""
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def run_notebook(name, timeout=300, env=None):
    """Run ``notebooks/<name>`` (cwd ``notebooks/``) and return the text of all its outputs.

    The notebook must be committed without outputs. The kernel imports the same numopt as the test
    process (an in-place build or the installed package); ``env`` adds environment variables for it.
    """
    import numopt

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"commit {name} without outputs"
    pkg_root = str(Path(numopt.__file__).resolve().parent.parent)
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in saved.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.update(env or {})
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
