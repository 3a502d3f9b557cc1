r"""Conjugate gradients with SciPy's semantics and a compiled, fused CSR loop.

The iteration is the textbook preconditioned CG (Hestenes & Stiefel 1952), written exactly as
``scipy.sparse.linalg.cg`` orders it, so iteration counts agree with SciPy:

.. math::

    r_0 = b - A x_0,\quad
    \text{for } k = 0, 1, \dots:\ \text{stop if } \|r_k\| < \max(\text{rtol}\,\|b\|, \text{atol});\quad
    z_k = M r_k,\ \rho_k = r_k^T z_k,\ p_k = z_k + (\rho_k/\rho_{k-1}) p_{k-1},\
    q_k = A p_k,\ \alpha_k = \rho_k / p_k^T q_k,\ x_{k+1} = x_k + \alpha_k p_k,\ r_{k+1} = r_k - \alpha_k q_k.

For a CSR ``A`` the loop runs on three fused Cython kernels per iteration (``q = A p`` with ``p.q``;
the ``x``/``r`` update with ``r.r``; ``p = z + beta p``), i.e. three passes over the vectors where a
NumPy loop makes about eight. Jacobi and IC(0) preconditioners fuse ``z = M r`` with ``r.z``.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from .._cy import _sparse
from .._monitor import STATUS_BREAKDOWN, Monitor
from .._solve import check_system

from ._precond import ichol0, jacobi

__all__ = ["cg", "solve_cg", "solve_pcg"]

_BREAKDOWN = -1


def _check_tolerances(rtol, atol):
    # SciPy's rules: atol None/'legacy'/negative is an error
    if atol is None or isinstance(atol, str):
        raise ValueError(f"atol must be a real, non-negative number; got {atol!r}")
    return rtol, atol


def _make_preconditioner(M, A, n, dtype):
    """None -> identity; 'jacobi'/'ic0' -> built from A; else any matrix/LinearOperator (as SciPy)."""
    if M is None or (isinstance(M, str) and M == "none"):
        return None
    if isinstance(M, str):
        if M not in ("jacobi", "ic0"):
            raise ValueError(f"M must be a LinearOperator, a matrix, None, 'jacobi' or 'ic0'; got {M!r}")
        if isinstance(A, LinearOperator):
            raise TypeError(f"M={M!r} needs A as a matrix, not a LinearOperator")
        return jacobi(A) if M == "jacobi" else ichol0(A)
    if not isinstance(M, LinearOperator):
        if not (sp.issparse(M) or hasattr(M, "__array__")):
            raise TypeError(f"M must be a LinearOperator, a matrix, None, 'jacobi' or 'ic0'; got {type(M).__name__}")
        M = aslinearoperator(M)
    if M.shape != (n, n):
        raise ValueError(f"M must have shape {(n, n)} like A; got {M.shape}")
    return M


def _pcg(A, b, x, M, atol, maxiter, on_iter):
    """The CG loop. ``x`` is updated in place. Returns ``(nit, info)``.

    ``on_iter(x, rnorm)`` runs after each iteration; returning True stops the loop (callback stop).
    ``info``: 0 converged, ``maxiter`` not converged, -1 breakdown (``p^T A p <= 0``: A not SPD), -2 stopped.
    A CSR ``A`` runs on the fused compiled kernels; dense ``A`` and ``LinearOperator``s run the same
    NumPy operations as SciPy, in the same order, so their iterates are SciPy's to the last bit.
    """
    if sp.issparse(A) and A.format == "csr":
        return _pcg_csr(A, b, x, M, atol, maxiter, on_iter)
    matvec = A.matvec if isinstance(A, LinearOperator) else A.dot
    psolve = (lambda v: v) if M is None else M.matvec
    r = b - np.asarray(matvec(x)).ravel() if x.any() else b.copy()
    rho_prev, p = 1.0, None
    for it in range(maxiter):
        if np.linalg.norm(r) < atol:
            return it, 0
        z = np.asarray(psolve(r)).ravel()
        rho = np.dot(r, z)
        if it > 0:
            p *= rho / rho_prev
            p += z
        else:
            p = z.astype(x.dtype, copy=True)
        q = np.asarray(matvec(p)).ravel()
        pq = np.dot(p, q)
        if not (pq > 0.0) or not np.isfinite(pq) or not np.isfinite(rho):
            return it, _BREAKDOWN
        alpha = rho / pq
        x += alpha * p
        r -= alpha * q
        rho_prev = rho
        if on_iter is not None and on_iter(x, float(np.linalg.norm(r))):
            return it + 1, -2
    return maxiter, maxiter


def _pcg_csr(A, b, x, M, atol, maxiter, on_iter):
    """:func:`_pcg` on the fused Cython kernels (3 vector passes per iteration, OpenMP rows)."""
    dtype = x.dtype
    indptr, indices = A.indptr, A.indices
    data = A.data if A.data.dtype == dtype else A.data.astype(dtype)
    r = b - A @ x if x.any() else b.copy()
    r = np.ascontiguousarray(r, dtype=dtype)
    rr = float(np.dot(r, r))
    p = np.empty_like(r)
    q = np.empty_like(r)
    fused_m = M is not None and hasattr(M, "apply_dot") and M.dtype == dtype
    z = np.empty_like(r) if M is not None else r
    rho_prev = 1.0
    for it in range(maxiter):
        if math.sqrt(rr) < atol:
            return it, 0
        if M is None:
            rho = rr
        elif fused_m:
            rho = M.apply_dot(r, z)
        else:
            z = np.ascontiguousarray(np.asarray(M.matvec(r)).ravel(), dtype=dtype)
            rho = float(np.dot(r, z))
        if it > 0:
            _sparse.xpby(z, rho / rho_prev, p)
        else:
            p[:] = z
        pq = _sparse.csr_matvec_dot(indptr, indices, data, p, q)
        if not (pq > 0.0) or not math.isfinite(pq) or not math.isfinite(rho):
            return it, _BREAKDOWN
        alpha = rho / pq
        rr = _sparse.cg_step(alpha, p, q, x, r)
        rho_prev = rho
        if on_iter is not None and on_iter(x, math.sqrt(rr)):
            return it + 1, -2
    return maxiter, maxiter


def _setup(A, b, x0, rtol, atol, maxiter, M):
    rtol, atol = _check_tolerances(rtol, atol)
    A, op, b, x0, rtol, atol, maxiter = check_system(A, b, x0, rtol, atol, maxiter)
    n = b.shape[0]
    # float32 only when both A and b are float32 (as SciPy's make_system)
    dtype = np.result_type(b.dtype, op.dtype, np.float32)
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float64)
    b = b.astype(dtype, copy=False)
    Mop = _make_preconditioner(M, A, n, dtype)
    x = np.zeros(n, dtype=dtype) if x0 is None else np.array(x0, dtype=dtype)
    if maxiter is None:
        maxiter = 10 * n
    bnrm2 = float(np.linalg.norm(b))
    return A, b, x, Mop, max(atol, rtol * bnrm2), maxiter, bnrm2


def cg(A, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, callback=None):
    """Solve ``A x = b`` for symmetric positive definite ``A`` by (preconditioned) conjugate gradients.

    A drop-in for :func:`scipy.sparse.linalg.cg` (same arguments, stopping rule, ``info`` codes and
    ``callback(xk)`` once per iteration) whose loop runs on fused compiled CSR kernels.

    Parameters
    ----------
    A : ndarray, scipy.sparse matrix or LinearOperator, shape (n, n)
    b : ndarray, shape (n,) or (n, 1)
    x0 : ndarray, shape (n,), or ``"Mb"``, optional
        Starting guess (not modified); ``"Mb"`` starts from ``M @ b``.
    rtol, atol : float
        Converged when ``||b - A x|| < max(rtol * ||b||, atol)`` (recursive residual, checked at the start
        of each iteration, as SciPy). ``atol`` must be a non-negative number.
    maxiter : int, optional
        Default ``10 * n``.
    M : ndarray, sparse matrix, LinearOperator, ``"jacobi"`` or ``"ic0"``, optional
        Preconditioner approximating ``A^{-1}`` (see :func:`ichol0`, :func:`jacobi`, PyAMG's
        ``aspreconditioner()``).
    callback : callable, optional
        ``callback(xk)`` after each iteration.

    Returns
    -------
    x : ndarray
    info : int
        ``0`` converged; ``maxiter`` (> 0) not converged; ``-1`` breakdown (``p^T A p <= 0``, A is not SPD).
    """
    xMb = isinstance(x0, str)
    if xMb and x0 != "Mb":
        raise ValueError(f"x0 must be an array or 'Mb'; got {x0!r}")
    A, b, x, Mop, atol_eff, maxiter, bnrm2 = _setup(A, b, None if xMb else x0, rtol, atol, maxiter, M)
    if bnrm2 == 0:
        return b.copy(), 0
    if xMb:
        x = np.ascontiguousarray(b.copy() if Mop is None else np.asarray(Mop.matvec(b)).ravel(), dtype=b.dtype)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}")
    on_iter = None if callback is None else (lambda xk, rn: callback(xk))
    _, info = _pcg(A, b, x, Mop, atol_eff, maxiter, on_iter)
    return x, info


def _solve(A, b, x0, rtol, atol, maxiter, M, callback, verbose, progress, method):
    A, b, x, Mop, atol_eff, maxiter, bnrm2 = _setup(A, b, x0, rtol, atol, maxiter, M)
    mon = Monitor(method, callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    if bnrm2 == 0:
        return mon.result(np.zeros_like(b), converged=True, residual_norm=0.0)
    nit, info = _pcg(A, b, x, Mop, atol_eff, maxiter, lambda xk, rn: mon.step(xk, residual_norm=rn))
    final = float(np.linalg.norm(b - (A.matvec(x) if isinstance(A, LinearOperator) else A @ x)))
    if info == _BREAKDOWN:
        return mon.result(x, converged=False, status=STATUS_BREAKDOWN, residual_norm=final,
                          message="CG breakdown: p^T A p <= 0 or not finite; A is not symmetric positive definite.")
    extra = {"residual_norm": final}
    if Mop is not None and hasattr(Mop, "shift"):
        extra["ic0_shift"] = Mop.shift
    return mon.result(x, converged=info == 0, **extra)


def solve_cg(A, b, x0, *, rtol, atol, maxiter, M, callback, verbose=False, progress=False):
    """Conjugate gradients (SciPy's ``cg`` iteration on fused compiled CSR kernels).

    Stops when ``||r_k|| < max(rtol ||b||, atol)`` on the recursive residual. ``M`` (optional) is a
    preconditioner ``LinearOperator`` or ``"jacobi"``/``"ic0"``.

    Options
    -------
    verbose : bool or int
        Log progress through ``logging.getLogger("numopt.cg")``.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    OptimizeResult
        ``x``, ``success``, ``status``, ``nit``, ``history["residual_norm"]`` (recursive residual per
        iteration) and ``residual_norm`` (the true final ``||b - A x||``).
    """
    return _solve(A, b, x0, rtol, atol, maxiter, M, callback, verbose, progress, "cg")


def solve_pcg(A, b, x0, *, rtol, atol, maxiter, M, callback, verbose=False, progress=False):
    """Preconditioned conjugate gradients; ``M`` defaults to IC(0).

    ``M`` is ``"ic0"`` (zero-fill incomplete Cholesky, :func:`numopt.linalg.ichol0`, the default),
    ``"jacobi"``, or any ``LinearOperator`` approximating ``A^{-1}`` (e.g. PyAMG's
    ``ml.aspreconditioner()``). Same stopping rule and result as ``"cg"``; ``ic0_shift`` reports the
    diagonal shift IC(0) needed (0 when none).

    Options
    -------
    verbose : bool or int
    progress : bool
    """
    return _solve(A, b, x0, rtol, atol, maxiter, "ic0" if M is None else M, callback, verbose, progress, "pcg")
