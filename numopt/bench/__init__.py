"""Ratio scripts: ``python -m numopt.bench <area> [--quick]`` prints ours vs. the peers, same run."""
