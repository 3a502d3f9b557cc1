"""Ratio scripts: ``python -m numopt.bench <area>`` prints ours vs. peers, same run."""
