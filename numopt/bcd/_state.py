"""Incrementally maintained solver states for greedy BCD.

A state holds ``x`` and everything needed to keep the **full gradient** ``g`` current after a block update
at the cost of the rows/neighbours the block touches (brief section 7):

* :class:`GLMState` (least squares, logistic, softmax): keeps ``Z = A X`` and ``U = phi'(Z)``; after
  ``X_b += D`` only the rows of ``A`` hit by the block's columns change, so
  ``G += A_rows^T (U_new - U_old)_rows`` -- O(nnz of the touched rows) for sparse ``A``.
* :class:`QuadState` (``Quadratic``, ``LabelPropagation``): ``g = Qx - c``, ``g += Q_:b dx_b``.
* :class:`FunState` (a SciPy-style callable): the gradient is recomputed in full after every step
  (this is why greedy rules only pay where ``g`` is cheap to keep; documented).

Coordinates are flat indices into ``x.ravel()`` (``j * K + c`` for the (p, K) softmax coefficients).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._cy import _bcd as cy
from ._kernels import abs_row_sums

_EMPTY_MARK = np.zeros(0, dtype=np.int8)
_EMPTY_I64 = np.zeros(0, dtype=np.int64)


class GLMState:
    def __init__(self, pb, x):
        self.pb = pb
        self.K = pb.n_classes
        self.p = pb.n_features
        self.n = pb.A.shape[0]
        self.size = self.p * self.K
        self.X = np.array(x, dtype=np.float64).reshape(self.p, self.K)
        self.L = pb.lipschitz()
        self.sparse = pb.sparse
        if self.sparse:
            self.csc = pb.A
            self.csr = pb.csr
            self._mark = np.zeros(self.n, dtype=np.int8)
            self._touched = np.empty(self.n, dtype=np.int64)
        self.refresh()

    # -- state ---------------------------------------------------------------------------------
    @property
    def x(self):
        return self.X.ravel() if self.K > 1 else self.X[:, 0]

    @property
    def g(self):
        return self.G.ravel()

    def _deriv(self, Z, rows=None):
        fit = self.pb.datafit
        if self.K > 1:
            from ._problem import softmax
            Y = fit.Y if rows is None else fit.Y[rows]
            return softmax(Z) - Y
        if fit.name == "squared":
            b = fit.b if rows is None else fit.b[rows]
            return Z - b[:, None]
        y = fit.y if rows is None else fit.y[rows]
        from ._problem import _expit
        return (-y * _expit(-y * Z[:, 0]))[:, None]

    def refresh(self):
        """Recompute ``Z``, ``U`` and ``G`` from scratch (removes incremental drift)."""
        A = self.pb.A
        self.Z = np.asarray(A @ self.X, dtype=np.float64).reshape(self.n, self.K)
        self.U = self._deriv(self.Z)
        self.G = np.ascontiguousarray(np.asarray(A.T @ self.U, dtype=np.float64).reshape(self.p, self.K))
        if self.pb.l2 > 0:
            self.G += self.pb.l2 * self.X

    def value(self):
        Zv = self.Z if self.K > 1 else self.Z[:, 0]
        return self.pb.datafit.value(Zv) + self.pb.penalty(self.X)

    def apply(self, b, d):
        """``x_b += d`` and update ``Z``, ``U`` and the full gradient on the touched rows."""
        K = self.K
        j, c = np.divmod(b, K)
        self.X[j, c] += d
        if self.sparse:
            D = np.zeros((b.size, K))
            D[np.arange(b.size), c] = d
            A = self.csc
            nt = cy.rows_axpy(A.indptr, A.indices, A.data, j.astype(np.int64), D, self.Z,
                              self._mark, self._touched, 0)
            rows = self._touched[:nt].copy()
            self._mark[rows] = 0
            Unew = self._deriv(self.Z[rows], rows)
            dU = Unew - self.U[rows]
            self.U[rows] = Unew
            R = self.csr
            cy.rows_axpy(R.indptr, R.indices, R.data, rows, np.ascontiguousarray(dU), self.G,
                         _EMPTY_MARK, _EMPTY_I64, 0)
        else:
            A = self.pb.A
            if K == 1:
                self.Z[:, 0] += A[:, j] @ d
            else:
                D = np.zeros((b.size, K))
                D[np.arange(b.size), c] = d
                self.Z += A[:, j] @ D
            Unew = self._deriv(self.Z)
            self.G += A.T @ (Unew - self.U)
            self.U = Unew
        if self.pb.l2 > 0:
            self.G[j, c] += self.pb.l2 * d

    # -- curvature -----------------------------------------------------------------------------
    def _cols(self, j):
        Ab = self.pb.A[:, j]
        return np.asarray(Ab.toarray() if sp.issparse(Ab) else Ab, dtype=np.float64)

    def hess_block(self, b, exact):
        """Block Hessian ``nabla^2_bb f`` (``exact``) or its fixed upper bound ``H_b``."""
        K = self.K
        j, c = np.divmod(b, K)
        Ab = self._cols(j)
        fit = self.pb.datafit
        if K == 1:
            if exact and fit.name != "squared":
                h = fit.curvature(self.Z[:, 0])
                H = Ab.T @ (Ab * h[:, None])
            else:
                H = fit.curvature_bound * (Ab.T @ Ab)
        else:
            same = c[:, None] == c[None, :]
            if exact:
                from ._problem import softmax
                S = softmax(self.Z)[:, c]
                AS = Ab * S
                H = (AS.T @ Ab) * same - AS.T @ AS
            else:
                H = 0.5 * (Ab.T @ Ab) * same
        H[np.diag_indices_from(H)] += self.pb.l2
        return H

    def hessp_bound(self, v):
        """``H v`` for the global bound ``H = c A^T A + l2 I`` (IHT selection for GS-q)."""
        A = self.pb.A
        V = v.reshape(self.p, self.K)
        W = self.pb.datafit.curvature_bound * (A.T @ (A @ V))
        return (np.asarray(W) + self.pb.l2 * V).ravel()

    def dominance_bound(self):
        """``D_i >= sum_j |H_ij|`` for the bound H (the GSD metric, valid on every block)."""
        A = self.pb.A
        if sp.issparse(A):
            Aa = abs(A)
            s = np.asarray(Aa.T @ np.asarray(Aa.sum(axis=1)).ravel()).ravel()
        else:
            s = abs_row_sums(np.ascontiguousarray(A, dtype=np.float64))
        D = self.pb.datafit.curvature_bound * s + self.pb.l2
        return np.repeat(D, self.K) if self.K > 1 else D


class QuadState:
    """State of ``1/2 x^T Q x - c^T x`` with symmetric CSR ``Q``: keeps ``g = Qx - c``."""

    def __init__(self, pb, x):
        self.pb = pb
        self.Q = pb.Q
        self.size = pb.n_features
        self.x = np.array(x, dtype=np.float64)
        self.L = pb.lipschitz()
        self.refresh()

    def refresh(self):
        self.g = np.ascontiguousarray(self.Q @ self.x - self.pb.c)

    def value(self):
        # F = 1/2 x^T (Qx) - c^T x = 1/2 x^T (g - c)
        return 0.5 * float(self.x @ (self.g - self.pb.c))

    def apply(self, b, d):
        self.x[b] += d
        Q = self.Q
        cy.rows_axpy(Q.indptr, Q.indices, Q.data, np.asarray(b, dtype=np.int64),
                     np.ascontiguousarray(d, dtype=np.float64).reshape(-1, 1), self.g.reshape(-1, 1),
                     _EMPTY_MARK, _EMPTY_I64, 0)

    def hess_block(self, b, exact=True):
        return self.Q[b][:, b].toarray()

    def hessp_bound(self, v):
        return self.Q @ v

    def dominance_bound(self):
        return np.asarray(abs(self.Q).sum(axis=1)).ravel()


class FunState:
    """State of a SciPy-style callable: the full gradient is recomputed after every step."""

    def __init__(self, pb, x):
        self.pb = pb
        self.size = x.size
        self.x = np.array(x, dtype=np.float64)
        self.L = np.ones(self.size)  # estimates, refined by backtracking
        self.refresh()

    def refresh(self):
        self.f = self.pb.value(self.x)
        self.g = self.pb.gradient(self.x)
        if not np.all(np.isfinite(self.g)):
            raise ValueError("jac(x) returned non-finite values")

    def value(self):
        return self.f

    def apply(self, b, d):
        self.x[b] += d
        self.refresh()
