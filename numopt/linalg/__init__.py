"""Sparse SPD linear systems: SciPy-compatible CG/PCG with compiled kernels, IC(0) and Jacobi
preconditioners, Poisson test generators, and the Deep Conjugate Direction Method."""
from ._poisson import poisson

__all__ = ["poisson"]
