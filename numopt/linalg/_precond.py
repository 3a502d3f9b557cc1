"""Preconditioners as ``LinearOperator``s: Jacobi and zero-fill incomplete Cholesky, IC(0).

Following PyAMG's ``aspreconditioner()``, setup (the factorization) and application are separate: the
returned operator applies ``M ~= A^{-1}`` and can be passed as ``M=`` to any Krylov solver, ours or SciPy's.
Both also expose ``apply_dot(r, z) -> r . z``, the fused form numopt's CG loop uses.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .._cy import _sparse
from .._validation import as_matrix, check_positive
from ..exceptions import OptimizeWarning

__all__ = ["jacobi", "ichol0", "JacobiPreconditioner", "IC0Preconditioner"]


class JacobiPreconditioner(LinearOperator):
    """``M = diag(A)^{-1}``."""

    def __init__(self, diagonal):
        self.dinv = np.ascontiguousarray(1.0 / diagonal)
        super().__init__(dtype=self.dinv.dtype, shape=(diagonal.size, diagonal.size))

    def apply_dot(self, r, z):
        return _sparse.scale_dot(self.dinv, r, z)

    def _matvec(self, x):
        x = np.asarray(x).ravel()
        return self.dinv * x

    def _rmatvec(self, x):
        return self._matvec(x)


class IC0Preconditioner(LinearOperator):
    """``M = (L L^T)^{-1}`` for the zero-fill incomplete Cholesky factor ``L`` (two triangular solves).

    Attributes
    ----------
    L : scipy.sparse.csr_matrix
        Lower-triangular factor on the pattern of ``tril(A)``.
    shift : float
        Diagonal shift ``alpha`` actually used: ``A + alpha * diag(A) ~= L L^T`` (0 unless a pivot broke down).
    """

    def __init__(self, Lp, Li, Lx, shift, dtype):
        import scipy.sparse as sp

        n = Lp.size - 1
        self._Lp, self._Li = Lp, Li
        self._Lx = Lx.astype(dtype)
        self._work = np.empty(n, dtype=np.float64)
        self.shift = shift
        self.L = sp.csr_matrix((self._Lx, Li, Lp), shape=(n, n))
        super().__init__(dtype=np.dtype(dtype), shape=(n, n))

    def apply_dot(self, r, z):
        return _sparse.ic_solve(self._Lp, self._Li, self._Lx, r, z, self._work)

    def _matvec(self, x):
        x = np.ascontiguousarray(np.asarray(x).ravel(), dtype=self.dtype)
        z = np.empty_like(x)
        _sparse.ic_solve(self._Lp, self._Li, self._Lx, x, z, np.empty(x.size))
        return z

    def _rmatvec(self, x):
        return self._matvec(x)


def _check_spd_matrix(A, name="A"):
    A = as_matrix(A, name, square=True, sparse_format="csr")
    import scipy.sparse as sp

    if not sp.issparse(A):
        A = sp.csr_matrix(A)
    diag = A.diagonal()
    if not np.all(diag > 0):
        i = int(np.argmin(diag))
        raise ValueError(f"{name} must have a positive diagonal (SPD); A[{i}, {i}] = {diag[i]!r}")
    return A, diag


def jacobi(A):
    """Jacobi (diagonal) preconditioner of an SPD matrix, as a ``LinearOperator``.

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix, shape (n, n)
        Must have a positive diagonal.
    """
    _, diag = _check_spd_matrix(A)
    return JacobiPreconditioner(diag)


def ichol0(A, *, shift=0.0, max_tries=30):
    r"""Zero-fill incomplete Cholesky factorization IC(0) of a sparse SPD matrix.

    Computes lower-triangular :math:`L` with the sparsity of :math:`\operatorname{tril}(A)` such that
    :math:`(LL^T)_{ij} = A_{ij}` on that pattern. IC(0) can break down (a non-positive pivot) for SPD
    matrices that are not M-matrices; then it retries on :math:`A + \alpha\,\operatorname{diag}(A)` with
    :math:`\alpha` starting at ``1e-3`` and doubling (Manteuffel's shift), and warns with the shift used.

    Parameters
    ----------
    A : scipy.sparse matrix or ndarray, shape (n, n)
        Symmetric positive definite (only the lower triangle is read).
    shift : float
        Initial diagonal shift :math:`\alpha \ge 0`.
    max_tries : int
        Number of shift increases before giving up with ``ValueError``.

    Returns
    -------
    IC0Preconditioner
        A ``LinearOperator`` applying :math:`(LL^T)^{-1}`; ``.L`` is the factor, ``.shift`` the shift used.
    """
    A, _ = _check_spd_matrix(A)
    alpha = check_positive(shift, "shift", strict=False)
    data = A.data.astype(np.float64)
    for _ in range(max_tries + 1):
        Lp, Li, Lx, ok = _sparse.ichol0(A.indptr, A.indices, data, alpha)
        if ok:
            if alpha > shift:
                warnings.warn(f"IC(0) broke down; used diagonal shift alpha={alpha:.3g}", OptimizeWarning,
                              stacklevel=2)
            return IC0Preconditioner(Lp, Li, Lx, alpha, A.dtype)
        alpha = 1e-3 if alpha == 0 else 2 * alpha
    raise ValueError(f"IC(0) failed even with diagonal shift {alpha:.3g}; is A symmetric positive definite?")
