"""Sparse SPD linear systems: SciPy-compatible CG/PCG with compiled kernels, IC(0) and Jacobi
preconditioners, Poisson test generators, and the Deep Conjugate Direction Method."""
from ._cg import cg
from ._poisson import poisson
from ._precond import IC0Preconditioner, JacobiPreconditioner, ichol0, jacobi

__all__ = ["cg", "poisson", "ichol0", "jacobi", "IC0Preconditioner", "JacobiPreconditioner"]
