"""Sparse SPD linear systems: SciPy-compatible CG/PCG with compiled kernels, IC(0) and Jacobi
preconditioners, Poisson test generators, and the Deep Conjugate Direction Method."""
from ._cg import cg
from ._poisson import poisson
from ._precond import IC0Preconditioner, JacobiPreconditioner, ichol0, jacobi

__all__ = ["cg", "poisson", "ichol0", "jacobi", "IC0Preconditioner", "JacobiPreconditioner"]

# --- Deep Conjugate Direction Method (area dcdm) ---------------------------------------------------
from ._dcdm import dcdm  # noqa: E402
from ._dcdm_train import dcdm_train  # noqa: E402
from ._scenes import plume_rhs, random_obstacles, random_scene  # noqa: E402

__all__ += ["dcdm", "dcdm_train", "random_obstacles", "plume_rhs", "random_scene"]
