"""The ADMM u-step: solve ``A u = b`` with ``A = I + G^T G + (1/rho) F^T F``, factorised once.

``G`` carries a constant ``cone_scale`` ``c`` (``G = c E X`` blockwise, see :mod:`numopt.relu._admm`), so
``G^T G = c^2 I_{2P} (x) X^T X``; below ``C = I_d + c^2 X^T X``.

With ``u = (U, Z)`` (``d x P`` each), ``F(u) = M (U - Z)``, ``M = [D_1 X ... D_P X]`` and
``G^T G = c^2 I_{2P} (x) X^T X`` (because ``E_i^2 = I``). Write ``C = I_d + c^2 X^T X``. In the variables
``a = U - Z`` and ``c = U + Z`` the system decouples (derivation: add and subtract the two block rows):

.. math::

    (I_P \\otimes C + \\tfrac{2}{\\rho} M^T M)\\, a = b_U - b_Z, \\qquad (I_P \\otimes C)\\, c = b_U + b_Z.

The ``c`` system is ``P`` solves with one ``d x d`` Cholesky factor. The ``a`` system
``K = I_P (x) C + (2/rho) M^T M`` is solved by one of two exact paths:

* ``"cholesky"``: factor the ``dP x dP`` matrix ``K`` (chosen by the flop model :func:`path_flops`,
  roughly while ``dP`` is below ``n``);
* ``"woodbury"``: with ``B = I_P (x) C``,
  :math:`K^{-1} = B^{-1} - B^{-1} M^T S^{-1} M B^{-1}`, ``S = (rho/2) I_n + (X C^{-1} X^T) o (D D^T)``,
  an ``n x n`` Cholesky factor (otherwise); memory ``O(n^2 + d^2 + nP)``.

Both factors are turned into explicit inverses once (:func:`spd_inverse`), so each iteration applies
them by one GEMV instead of two latency-bound triangular solves.

Only ``S`` (or ``K``) depends on ``rho``; everything else is cached once per problem, so a new ``rho``
costs one ``n x n`` (or ``dP x dP``) Cholesky, and a new ``beta`` nothing.
"""
from __future__ import annotations

import numpy as np

from ._kernels import (masked_rowsum, masked_rowsum_single, masked_scale, split_combine, split_diff,
                       symmetrize_lower)

__all__ = ["USolver", "choose_path", "path_flops", "spd_inverse"]

PATHS = ("auto", "cholesky", "woodbury")


def path_flops(n, d, P, iterations=1000):
    """Flop model of the two exact paths: one-time factorisation plus ``iterations`` u-solves.

    * ``"cholesky"``: ``M^T M`` (``2 n (dP)^2``), its explicit inverse (:func:`spd_inverse`, ``(dP)^3``),
      one GEMV per iteration (``2 (dP)^2``).
    * ``"woodbury"``: ``X C^{-1} X^T`` and ``D D^T`` (``n^2 (d + P)``), the ``n x n`` inverse (``n^3``);
      per iteration ``M B^{-1} r`` and ``M^T q`` (``2 n d P`` each) and one ``n x n`` GEMV.

    The ``d x d`` work shared by both paths is left out. Returns ``{"cholesky": flops, "woodbury": flops}``.
    """
    dP = float(d) * P
    n = float(n)
    return {"cholesky": 2 * n * dP ** 2 + dP ** 3 + iterations * 2 * dP ** 2,
            "woodbury": n * n * (d + P) + n ** 3 + iterations * (4 * n * dP + 2 * n * n)}


def choose_path(n, d, P, iterations=1000):
    """The path with fewer flops for a solve of ``iterations`` ADMM iterations (:func:`path_flops`).

    Roughly ``"cholesky"`` while ``dP`` is below ``n`` and ``"woodbury"`` beyond; the default 1000
    iterations is the order an ADMM solve to ~1e-4 relative accuracy takes.
    """
    f = path_flops(n, d, P, iterations)
    return "cholesky" if f["cholesky"] <= f["woodbury"] else "woodbury"


F32_FACTOR_COND = 1e3


def spd_inverse(A):
    """Explicit inverse of an SPD matrix: LAPACK ``potrf`` (Cholesky, ``n^3/3``) then ``potri``
    (``2n^3/3``), ``n^3`` flops in all, a third of a general LU inverse (3x faster at ``n = 1437``
    on one thread, measured). float32 input is inverted in float32 (``spotrf``/``spotri``). Raises
    ``numpy.linalg.LinAlgError`` unless ``A`` is positive definite.

    Applying the inverse is one GEMV per iteration, about 4x faster than the two latency-bound
    triangular solves of ``cho_solve`` at ``n = 569`` (measured). Only this one-time factorisation
    calls SciPy's LAPACK (whose bundled BLAS a ``threadpool_limits`` reaches only once SciPy is loaded);
    the hot loop stays on NumPy's.
    """
    from scipy.linalg import lapack

    A = np.asarray(A)
    A = A if A.dtype in (np.float32, np.float64) else A.astype(np.float64)
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (A,))     # float32 input: spotrf / spotri
    R, info = potrf(A, lower=0, clean=0)                       # A = R^T R, Fortran order
    if info == 0:
        R, info = potri(R, lower=0, overwrite_c=1)             # A^{-1} in R's upper triangle
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (LAPACK info {info})")
    return symmetrize_lower(R.T)            # R.T: C order, the inverse in its lower triangle


def _base(problem, path, c2):
    """rho-independent pieces, cached on the problem (shared by its beta / target copies)."""
    key = ("base", path, c2)
    if key not in problem._cache:
        X, D = problem.X, problem.Dmat
        n, d = X.shape
        XtX = X.T @ X
        # explicit inverse of the small SPD C (cond <= 1 + c^2 ||X||^2): per-iteration solves become GEMMs
        base = {"XtX": XtX, "Cinv": spd_inverse(np.eye(d) + c2 * XtX)}
        if path == "cholesky":
            P = D.shape[1]
            MtM = np.zeros((P * d, P * d))
            step = max(1, int(2e7 // max(1, P * d)))  # row chunks keep the n x dP slab bounded
            for lo in range(0, n, step):
                Xc, Dc = X[lo:lo + step], D[lo:lo + step]
                Mc = (Dc[:, :, None] * Xc[:, None, :]).reshape(Xc.shape[0], P * d)
                MtM += Mc.T @ Mc
            base["MtM"] = MtM
            base["BD"] = np.kron(np.eye(P), np.eye(d) + c2 * XtX)
        else:
            H = X @ (base["Cinv"] @ X.T)
            base["HD"] = H * (D @ D.T)
        problem._cache[key] = base
    return problem._cache[key]


class USolver:
    """Exact solver of the u-step system for one ``rho`` (see the module docstring).

    ``dtype=np.float32`` keeps single-precision copies of the (double-precision) factors, ``X`` and the
    patterns, so every per-iteration product runs in float32 (half the memory traffic; measured 2.5x faster
    products at ``n = 1437, d = 65, P = 32``). The factors are computed in float64 and rounded, except the
    Woodbury ``S^{-1}`` when ``cond S <= 1 + 2P / (rho c^2)`` is at most :data:`F32_FACTOR_COND`: then ``S``
    is inverted in float32 (half the ``n^3`` time), its relative error ``~ cond * 1e-7 <= 1e-4``.
    """

    def __init__(self, problem, rho, path="auto", cone_scale=1.0, dtype=np.float64):
        n, d = problem.X.shape
        P = problem.Dmat.shape[1]
        self.path = choose_path(n, d, P) if path == "auto" else path
        self.X, self.D, self.rho = problem.X, problem.Dmat, float(rho)
        self.c2 = float(cone_scale) ** 2
        base = _base(problem, self.path, self.c2)
        self.XtX, self.Cinv = base["XtX"], base["Cinv"]
        key = (self.path, self.rho, self.c2)
        self.dtype = dt = np.dtype(dtype)
        # cond S <= 1 + 2P / (rho c^2): lambda_max((X C^-1 X^T) o (D D^T)) <= max_k |d_k|_1 / c^2 <= P / c^2
        single = (dt == np.float32 and self.path == "woodbury"
                  and 1.0 + 2.0 * P / (self.rho * self.c2) <= F32_FACTOR_COND)
        if single:
            key = key + ("float32-factor",)
        if key not in problem._cache:
            if self.path == "cholesky":
                problem._cache[key] = spd_inverse(base["BD"] + (2.0 / self.rho) * base["MtM"])
            else:
                S = base["HD"].astype(np.float32) if single else base["HD"].copy()
                S.flat[::n + 1] += 0.5 * self.rho
                problem._cache[key] = spd_inverse(S)
        self.fac = problem._cache[key]                          # K^{-1} or S^{-1}, explicit
        if dt != np.float64:                                    # single-precision copies, cached on the problem
            bkey = ("base", self.path, self.c2, dt.name)       # rho-independent: shared by every rho
            if bkey not in problem._cache:
                problem._cache[bkey] = tuple(a.astype(dt) for a in (self.Cinv, self.XtX, self.X, self.D))
            self.Cinv, self.XtX, self.X, self.D = problem._cache[bkey]
            if self.fac.dtype != dt:                            # a float64 factor, rounded once per rho
                fkey = key + (dt.name,)
                if fkey not in problem._cache:
                    problem._cache[fkey] = self.fac.astype(dt)
                self.fac = problem._cache[fkey]
        d, P, n = self.X.shape[1], self.D.shape[1], self.X.shape[0]
        self.XT = self.X.T
        # scratch of solve() (reused every iteration: no temporaries in the hot loop)
        self._CB, self._Ya, self._W = np.empty((d, 2 * P), dt), np.empty((d, P), dt), np.empty((d, P), dt)
        self._XY, self._Dq = np.empty((n, P), dt), np.empty((n, P), dt)
        self._t, self._q = np.empty(n, dt), np.empty(n, dt)
        self._ra, self._a = np.empty((P, d), dt), np.empty(P * d, dt)

    def solve_a(self, R):
        """``K^{-1} r`` for ``r`` given as a ``d x P`` matrix."""
        if self.path == "cholesky":
            d, P = R.shape
            return (self.fac @ R.T.ravel()).reshape(P, d).T
        Y = self.Cinv @ R                                        # B^{-1} r
        t = masked_rowsum_single(self.X @ Y, self.D)             # M B^{-1} r
        q = self.fac @ t
        return Y - self.Cinv @ (self.X.T @ (self.D * q[:, None]))

    def solve(self, B, out=None):
        """Solve ``A u = b`` for ``b = [b_U  b_Z]`` (``d x 2P``); returns ``[U Z]`` (into ``out`` if given).

        In ``a = U - Z``, ``c = U + Z``: ``c = C^{-1} (b_U + b_Z)`` and ``a = K^{-1} (b_U - b_Z)``. Woodbury:
        with ``CB = C^{-1} [b_U  b_Z]`` (one ``d x d`` product for both systems), ``Y_a = CB_U - CB_Z``,
        ``q = S^{-1} M Y_a`` and ``W = C^{-1} M^T q``, ``a = Y_a - W``, hence ``U = CB_U - W / 2`` and
        ``Z = CB_Z + W / 2``: one masked product each way with ``X`` and an ``n``-vector GEMV, every
        intermediate in a preallocated buffer.
        """
        d, m = B.shape
        P = m // 2
        out = np.empty((d, m), self.dtype) if out is None else out
        if self.path == "cholesky":
            ra = self._ra
            np.subtract(B[:, :P].T, B[:, P:].T, out=ra)          # b_U - b_Z, pattern-major (K's layout)
            a = np.matmul(self.fac, ra.reshape(-1), out=self._a).reshape(P, d).T
            c = self._Ya
            np.add(B[:, :P], B[:, P:], out=c)
            c = np.matmul(self.Cinv, c, out=self._W)
            np.add(c, a, out=out[:, :P])
            np.subtract(c, a, out=out[:, P:])
            out *= 0.5
            return out
        CB = np.matmul(self.Cinv, B, out=self._CB)
        Ya = split_diff(CB, self._Ya)                            # B^{-1} r_a (d x P)
        t = masked_rowsum_single(np.matmul(self.X, Ya, out=self._XY), self.D, self._t)   # M B^{-1} r_a
        q = np.matmul(self.fac, t, out=self._q)                  # S^{-1} M B^{-1} r_a
        XtDq = np.matmul(self.XT, masked_scale(self.D, q, self._Dq), out=self._Ya)     # M^T q (Ya is spent)
        W = np.matmul(self.Cinv, XtDq, out=self._W)
        return split_combine(CB, W, out)

    def apply_A(self, UZ):
        """``A u`` (for tests): ``u + c^2 (I (x) X^T X) u + (1/rho) F^T F u``."""
        P = UZ.shape[1] // 2
        XA = self.X @ UZ
        f = masked_rowsum(np.ascontiguousarray(XA), self.D)
        Ft = self.X.T @ (self.D * f[:, None])
        return UZ + self.c2 * (self.XtX @ UZ) + np.hstack([Ft, -Ft]) / self.rho
