"""Ratio scripts, one per area: ``python -m numopt.bench <area> [--quick]`` (ours vs. the peers, same run)."""
