"""Entropic optimal transport (Sinkhorn-Newton-Sparse)."""
