"""Shared test configuration.

Tests are collected with ``--import-mode=importlib`` (test modules of different areas share basenames such
as ``test_kernels.py``); each area's folder is put on ``sys.path`` so its helper modules (``_<area>_cases``)
and ``notebook_runner`` import by name.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

_HERE = Path(__file__).resolve().parent
for _d in [_HERE, *sorted(p for p in _HERE.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))]:
    if str(_d) not in sys.path:
        sys.path.insert(0, str(_d))
