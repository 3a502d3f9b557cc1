r"""Robust alternating minimization for matrix completion (``method="altmin"``).

Gu, Song, Yin, Zhang, "Low Rank Matrix Completion via Robust Alternating Minimization in Nearly Linear
Time", ICLR 2024 (arXiv 2302.11068), on top of Jain, Netrapalli, Sanghavi (STOC 2013). The loop below
reads like the paper's Algorithm 1; the per-row least-squares solves of each half-step are the compiled
block kernel :func:`numopt.completion.solve_rows`.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from .._monitor import Monitor
from .._validation import (as_float_array, check_bool, check_choice, check_int, check_positive,
                           check_random_state)
from . import _kernels as K
from ._rowsolve import SOLVERS, USED_NAMES, choose_solver, sample_block, solve_rows

__all__ = ["minimize_altmin", "sparse_top_svd", "clip_rows", "gram_distance", "balance_factors"]


# --------------------------------------------------------------------------------------------------
# building blocks (NumPy terms)
# --------------------------------------------------------------------------------------------------
def sparse_top_svd(indptr, indices, values, shape, k, *, scale=1.0, oversample=10, n_power_iter=4, rng=None):
    """Top-k SVD of ``scale * P_Omega(M)`` by a randomized range finder with power iterations.

    Only sparse products with the CSR matrix are formed (no m x n array). Returns ``(U, s, Vt)``
    truncated to exactly ``k`` components.
    """
    import scipy.sparse as sp

    rng = check_random_state(rng)
    m, n = shape
    A = sp.csr_array((values.astype(np.float64) * scale, indices, indptr), shape=shape)
    ell = min(k + oversample, min(m, n))
    Q = np.linalg.qr(A @ rng.standard_normal((n, ell)))[0]
    for _ in range(n_power_iter):               # subspace iteration, re-orthonormalized each time
        Z = np.linalg.qr(A.T @ Q)[0]
        Q = np.linalg.qr(A @ Z)[0]
    B = (A.T @ Q).T                             # ell x n
    Ub, s, Vt = np.linalg.svd(B, full_matrices=False)
    return Q @ Ub[:, :k], s[:k], Vt[:k]


def clip_rows(Q, mu):
    r"""Rescale the rows of ``Q`` (m x k) whose norm exceeds :math:`2\mu\sqrt{k/m}` down to it, then
    re-orthonormalize by QR (incoherence clipping of the initial factor). Returns ``(Q, n_clipped)``."""
    m, k = Q.shape
    tau = 2.0 * mu * np.sqrt(k / m)
    norms = np.linalg.norm(Q, axis=1)
    big = norms > tau
    Q = Q.copy()
    Q[big] *= (tau / norms[big])[:, None]
    return np.linalg.qr(Q)[0], int(big.sum())


def gram_distance(U1, V1, U2, V2):
    r"""``(d2, x2)``: :math:`\|U_1V_1^T - U_2V_2^T\|_F^2` and :math:`\|U_2V_2^T\|_F^2` in O((m+n)k^2).

    First the trace formula :math:`\mathrm{tr}(U_1^TU_1V_1^TV_1) - 2\mathrm{tr}(U_1^TU_2V_2^TV_1) +
    \mathrm{tr}(U_2^TU_2V_2^TV_2)` (k x k Grams). It cancels catastrophically when the distance is small,
    so below a relative 1e-5 the distance is recomputed stably: :math:`U_1V_1^T - U_2V_2^T =
    [U_1, -U_2][V_1, V_2]^T` and, with thin QRs, the norm is :math:`\|R_aR_b^T\|_F` (resolves relative
    distances down to rounding). Never forms an m x n array.
    """
    U1, V1, U2, V2 = (np.asarray(a, dtype=np.float64) for a in (U1, V1, U2, V2))
    G1, G2 = U1.T @ U1, V1.T @ V1
    H1, H2 = U2.T @ U2, V2.T @ V2
    a = float(np.sum(G1 * G2))
    c = float(np.sum(H1 * H2))
    b = float(np.sum((U1.T @ U2) * (V1.T @ V2)))
    d2 = a - 2.0 * b + c
    if d2 > 1e-10 * max(a, c):
        return d2, max(c, 0.0)
    return _stable_distance_sq(U1, V1, U2, V2), max(c, 0.0)


def _stable_distance_sq(U1, V1, U2, V2):
    r""":math:`\|U_1V_1^T - U_2V_2^T\|_F^2 = \|R_aR_b^T\|_F^2` with :math:`[U_1, -U_2] = Q_aR_a`,
    :math:`[V_1, V_2] = Q_bR_b` (no cancellation)."""
    U1, V1, U2, V2 = (np.asarray(a, dtype=np.float64) for a in (U1, V1, U2, V2))
    Ra = np.linalg.qr(np.hstack([U1, -U2]), mode="r")
    Rb = np.linalg.qr(np.hstack([V1, V2]), mode="r")
    return float(np.sum((Ra @ Rb.T) ** 2))


def balance_factors(U, V):
    r"""Rewrite :math:`UV^T` as :math:`U'V'^T` with :math:`U'^TU' = V'^TV' = \Sigma` (same product)."""
    Qu, Ru = np.linalg.qr(U)
    Qv, Rv = np.linalg.qr(V)
    A, s, Bt = np.linalg.svd(Ru @ Rv.T)
    r = np.sqrt(s)
    return ((Qu @ A) * r).astype(U.dtype), ((Qv @ Bt.T) * r).astype(V.dtype)


def _syrk(F):
    r""":math:`F^TF` in float64 by one BLAS syrk (:math:`nk(k+1)/2` FMAs), both triangles filled."""
    from scipy.linalg.blas import dsyrk

    C = dsyrk(1.0, np.asarray(F, dtype=np.float64).T)       # F^T is Fortran-ordered: no copy
    return np.triu(C) + np.triu(C, 1).T


def _chol_qr(F, G=None, max_cond=1e4):
    r"""``(Q, R, fmas)`` with :math:`F = QR` (F is n x k, float64).

    Cholesky QR: :math:`R = \mathrm{chol}(F^TF)` (``G`` = :math:`F^TF` when the caller has it), then
    :math:`Q = FR^{-1}` by one triangular solve: :math:`nk^2/2` FMAs (+ :math:`nk^2/2` for the Gram),
    against :math:`\approx 2nk^2` for Householder QR with an explicit Q. Q is orthonormal to
    :math:`O(\kappa(F)^2\epsilon)`; it only has to span the same space as F and keep the row designs well
    conditioned, so when :math:`\kappa(R) >` ``max_cond`` (orthogonality error above ~1e-8) or the
    Cholesky factorization fails, Householder QR is used instead.
    """
    import scipy.linalg as sla

    n, k = F.shape
    fmas = 0
    if G is None:
        G = _syrk(F)
        fmas += n * k * (k + 1) // 2
    try:
        R = sla.cholesky(G, lower=False, check_finite=False)
        fmas += k ** 3 // 6
        ok = bool(np.all(np.isfinite(R))) and np.linalg.cond(R) <= max_cond
    except np.linalg.LinAlgError:
        ok = False
    if not ok:
        Q, R = np.linalg.qr(F)
        return Q, R, fmas + 2 * n * k * k
    Q = sla.solve_triangular(R, F.T, trans="T", lower=False, check_finite=False).T
    return np.ascontiguousarray(Q), R, fmas + n * k * (k + 1) // 2


def _times_rt(C, R):
    r""":math:`CR^T` for upper-triangular R by one BLAS trmm (:math:`mk(k+1)/2` FMAs)."""
    from scipy.linalg.blas import dtrmm

    return np.ascontiguousarray(dtrmm(1.0, R, np.asarray(C, dtype=np.float64).T, side=0, lower=0).T)


def _split_block(indptr, labels, part, indices, values):
    """The CSR block of the entries whose split label equals ``part``."""
    keep = labels == part
    owner = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    counts = np.bincount(owner[keep], minlength=indptr.size - 1)
    ip = np.zeros(indptr.size, dtype=np.int64)
    np.cumsum(counts, out=ip[1:])
    return ip, indices[keep], values[keep]


def _fit_biases(problem, center, reg, n_sweeps=10):
    """Global mean and (optionally) row/column biases fitted by alternating ridge means."""
    m, n = problem.shape
    vals = problem.csr_values.astype(np.float64)
    rows = problem.rows
    cols = problem.cols
    mu = float(vals.mean()) if center in ("global", "biases") else 0.0
    bu = np.zeros(m)
    bv = np.zeros(n)
    if center == "biases":
        du = np.bincount(rows, minlength=m).astype(np.float64)
        dv = np.bincount(cols, minlength=n).astype(np.float64)
        r = vals - mu
        for _ in range(n_sweeps):
            bu = np.bincount(rows, weights=r - bv[cols], minlength=m) / (du + reg + (du == 0))
            bv = np.bincount(cols, weights=r - bu[rows], minlength=n) / (dv + reg + (dv == 0))
    return mu, bu, bv


@contextlib.contextmanager
def _threads(workers):
    """Pin BLAS to one thread around the parallel kernels and set the Numba thread count."""
    import numba

    old = numba.get_num_threads()
    if workers is not None:
        numba.set_num_threads(max(1, min(workers, numba.config.NUMBA_NUM_THREADS)))
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:                      # pragma: no cover - threadpoolctl ships with scikit-learn
            ctx = contextlib.nullcontext()
        else:
            ctx = threadpool_limits(1, "blas")
        with ctx:
            yield
    finally:
        numba.set_num_threads(old)


def _unpack_x0(x0, m, n, k, dtype):
    if isinstance(x0, (tuple, list)) and len(x0) == 2:
        U = as_float_array(x0[0], "x0[0]", shape=(m, k), dtype=dtype, copy=True)
        V = as_float_array(x0[1], "x0[1]", shape=(n, k), dtype=dtype, copy=True)
        return U, V
    x = as_float_array(x0, "x0", ndim=1, dtype=dtype)
    if x.size != (m + n) * k:
        raise ValueError(f"x0 must be (U, V) or a vector of length (m + n) * k = {(m + n) * k}; got {x.size}")
    return x[:m * k].reshape(m, k).copy(), x[m * k:].reshape(n, k).copy()


# --------------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------------
def minimize_altmin(problem, x0=None, *, callback=None, solver="auto", init="svd", clip=True, mu=None,
                    sample_split=False, reg_scaling="none", center="none", maxiter=100, tol=1e-9, xtol=1e-9,
                    atol=1e-12, inner_tol=1e-10, cg_steps=3, sketch_size=None, sketch_nnz=8, n_power_iter=4,
                    workers=None, random_state=None, verbose=False, progress=False, client=None):
    r"""Robust alternating minimization (AltMin) for low-rank matrix completion.

    Minimizes, over :math:`U\in\mathbb R^{m\times k}` and :math:`V\in\mathbb R^{n\times k}`,

    .. math::

        f(U,V) = \tfrac12\sum_{(i,j)\in\Omega}(u_i^Tv_j - M_{ij})^2
        + \tfrac{\lambda}{2}\Big(\sum_i c_i\|u_i\|^2 + \sum_j c'_j\|v_j\|^2\Big)

    by alternating exact or approximate solves of the row problems
    :math:`u_i = \arg\min_u \|V_{\Omega_i}u - M_{i,\Omega_i}\|^2 + \lambda c_i\|u\|^2` (U-step; the V-step is
    symmetric). Gu, Song, Yin & Zhang (ICLR 2024) show that approximate solves (a sketch-based
    preconditioner plus a few iterative steps, warm-started) keep the geometric convergence of Jain,
    Netrapalli & Sanghavi (2013), :math:`\|M - X_T\|_F \le \epsilon` after
    :math:`T = O(\log(\|M\|_F/\epsilon))` iterations when
    :math:`|\Omega| \ge C\kappa^4\mu^2k^{4.5}n\log n\log(k\|M\|_F/\epsilon)` (JNS13 form), at a cost of
    :math:`\tilde O(|\Omega|k)` per iteration instead of :math:`O(|\Omega|k^2)`.

    Algorithm: initialize :math:`U_0` by the top-k left singular vectors of :math:`P_\Omega(M)/p`
    (randomized sparse SVD), clip rows with norm above :math:`2\mu\sqrt{k/m}` and re-orthonormalize;
    then alternate V-steps and U-steps. With :math:`\lambda = 0` the fixed factor is orthonormalized
    (QR) before each half-step and the warm start is mapped by the same :math:`R`, which leaves
    :math:`UV^T` unchanged and keeps the designs well conditioned. ``x`` packs the returned factors
    ``U.ravel()`` then ``V.ravel()``; the model is :math:`X = UV^T` + offsets (see ``center``).

    Parameters
    ----------
    problem : MatrixCompletion
    x0 : (U, V) or array of length (m + n) k, optional
        Warm start; replaces the initialization (the first V-step starts from ``U``).
    callback : callable, optional
        ``callback(intermediate_result)`` after every iteration (fields ``x`` (packed U, V), ``nit``,
        ``fun``, ``rmse``, ``rel_residual``, ...); raise ``StopIteration`` to stop.

    Options
    -------
    solver : {"auto", "cholesky", "cg", "sketch-cg"}
        Row solver of the half-steps. ``"cholesky"``: exact normal equations (:math:`Nk^2/2` per row).
        ``"cg"``: warm-started CG on the normal equations, at most ``cg_steps`` steps; ``s`` steps cost
        :math:`(2s+1)Nk` FMAs (one gather, one fused sweep per step computing :math:`Ap` and
        :math:`A^T(Ap)` together, and a last step that needs only :math:`Ap`), i.e. :math:`2(2s+1)`
        passes over :math:`|\Omega|k` per iteration whatever k.
        ``"sketch-cg"`` (the paper): sparse sign sketch, QR preconditioner, preconditioned CG to
        ``inner_tol``; rows with at most ``sketch_size`` entries are solved exactly by QR.
        ``"auto"``: chosen by **measured cost**: at the first V-step and the first U-step, the candidate
        solvers solve the same sample of rows (2% of the side, 256 to 2048 evenly spaced rows, same
        fixed factor and warm start) and the fastest wall time wins for the rest of the solve
        (:func:`numopt.completion.choose_solver`; candidates more than 4x off the cheapest flop model
        are not timed; decisions are cached per process). ``result.auto_choice`` has the timings.
    init : {"svd", "random"}
        SVD initialization (above) or Gaussian factors with scale :math:`\sqrt{\text{mean}|M_\Omega|/k}`.
    clip : bool
        Clip the rows of the initial factor (incoherence step of the analysis).
    mu : float, optional
        Incoherence level of the clipping threshold :math:`2\mu\sqrt{k/m}`. Estimated when omitted as
        :math:`\sqrt{m/k}` times the 95th percentile of the initial row norms (so only outlying rows are clipped).
    sample_split : bool
        Theory mode: split :math:`\Omega` into :math:`2T+1` disjoint parts by a splitmix64 hash of
        :math:`(i, j)` (:math:`T` = ``maxiter``), initialize on part 0 and use a fresh part in each half-step.
    reg_scaling : {"none", "count"}
        :math:`c_i = 1`, or :math:`c_i = |\Omega_i|` (ALS-WR / Spark scaling).
    center : {"none", "global", "biases"}
        Subtract the global mean, or the global mean plus row/column biases (ridge, weight ``reg``),
        before factorizing; they are returned and added back by the estimator.
    maxiter : int
        Outer iterations (one V-step plus one U-step each).
    tol : float
        Stop when :math:`|f_t - f_{t-1}| \le` ``tol`` :math:`\max(f_t, \text{tiny})`.
    xtol : float
        Stop when :math:`\|X_t - X_{t-1}\|_F \le` ``xtol`` :math:`\|X_t\|_F` (computed from Grams).
    atol : float
        Stop when the relative residual :math:`\|P_\Omega(X - M)\|_F/\|P_\Omega(M)\|_F \le` ``atol``.
    inner_tol : float
        Forcing term of the iterative row solves: stop when the normal-equation residual has dropped to
        ``inner_tol`` times its value at the starting point (the warm start, i.e. the previous iterate;
        :math:`\|A^Tb\|` from a cold start). The residual at the warm start is the half-step gradient at
        the previous iterate, so the accuracy asked of each solve follows the outer progress (inexact
        ALS); ``cg_steps`` caps the steps.
    cg_steps : int
        Maximum CG steps per row and half-step for ``"cg"`` (3, as in implicit).
    sketch_size : int, optional
        Sketch rows :math:`s \ge k` (default :math:`4k`).
    sketch_nnz : int
        Nonzeros :math:`\zeta` per column of the sparse sign embedding.
    n_power_iter : int
        Power iterations of the randomized SVD initialization (>= 2 recommended for flat spectra).
    workers : int, optional
        Numba threads for the row kernels (default: all). BLAS is pinned to one thread meanwhile.
    client : distributed.Client or scheduler address, optional
        Run on a Dask cluster (``numopt[dask]``): the data stay on the workers and only factors move;
        same iterates as on one machine. Needed for a ``DaskMatrixCompletion`` (see
        :func:`numopt.completion._dask.minimize_altmin_dask`).
    random_state : None, int or Generator
        Seeds the initialization, the sketches and the split.
    verbose, progress : bool
        Log one line per iteration block / show a tqdm bar.

    Returns
    -------
    OptimizeResult
        ``x`` (packed U, V), ``U``, ``V``, ``fun``, ``nit``, ``success``, ``history`` with per-iteration
        ``fun``, ``rmse`` (observed), ``rel_residual``, ``rel_change``, ``rel_error`` (when the problem
        has ``truth``), ``iter_time`` (wall), ``iter_cpu`` (CPU seconds, all threads), ``passes`` (FMAs /
        (|Omega| k), including the O((m+n)k^2) dense work), ``row_passes`` (row solves and the residual pass
        only) and ``inner_steps``; also
        ``rmse``, ``global_mean``, ``row_bias``, ``col_bias``, ``n_cold_rows``, ``n_cold_cols``,
        ``n_rank_deficient`` (rows + columns guarded in the last iteration), ``solver_counts`` (row solves
        per solver in the last iteration), ``time_per_iter``, ``passes_per_iter``, ``init_time``.

    References
    ----------
    Gu, Song, Yin, Zhang. ICLR 2024, arXiv 2302.11068. Jain, Netrapalli, Sanghavi. STOC 2013, arXiv 1212.0467.
    """
    if client is not None or type(problem).__name__ == "DaskMatrixCompletion":
        if client is None:
            raise ValueError("a DaskMatrixCompletion is solved on a Dask cluster: pass options={'client': client}")
        from ._dask import minimize_altmin_dask

        return minimize_altmin_dask(problem, x0, client=client, callback=callback, solver=solver, init=init,
                                    clip=clip, mu=mu, sample_split=sample_split, reg_scaling=reg_scaling,
                                    center=center, maxiter=maxiter, tol=tol, xtol=xtol, atol=atol,
                                    inner_tol=inner_tol, cg_steps=cg_steps, sketch_size=sketch_size,
                                    sketch_nnz=sketch_nnz, n_power_iter=n_power_iter, workers=workers,
                                    random_state=random_state, verbose=verbose, progress=progress)
    opts, workers = _check_options(problem, solver, init, clip, mu, sample_split, reg_scaling, center, maxiter,
                                   tol, xtol, atol, inner_tol, cg_steps, sketch_size, sketch_nnz, n_power_iter,
                                   workers, random_state)
    with _threads(workers):
        return _altmin(problem, x0, callback, verbose, progress, **opts)


# --------------------------------------------------------------------------------------------------
# the driver shared by the single-machine and the Dask solver (only the row solves differ)
# --------------------------------------------------------------------------------------------------
def _check_options(problem, solver, init, clip, mu, sample_split, reg_scaling, center, maxiter, tol, xtol, atol,
                   inner_tol, cg_steps, sketch_size, sketch_nnz, n_power_iter, workers, random_state):
    """Validate the solver options; returns ``(options, workers)`` (``options`` holds ``rng``)."""
    check_choice(solver, "solver", tuple(SOLVERS))
    check_choice(init, "init", ("svd", "random"))
    clip = check_bool(clip, "clip")
    sample_split = check_bool(sample_split, "sample_split")
    check_choice(reg_scaling, "reg_scaling", ("none", "count"))
    check_choice(center, "center", ("none", "global", "biases"))
    maxiter = check_int(maxiter, "maxiter", min_value=1)
    tol = check_positive(tol, "tol", strict=False)
    xtol = check_positive(xtol, "xtol", strict=False)
    atol = check_positive(atol, "atol", strict=False)
    inner_tol = check_positive(inner_tol, "inner_tol", strict=False)
    cg_steps = check_int(cg_steps, "cg_steps", min_value=1)
    k = problem.rank
    sketch_size = check_int(sketch_size, "sketch_size", min_value=k, allow_none=True)
    sketch_nnz = check_int(sketch_nnz, "sketch_nnz", min_value=1)
    n_power_iter = check_int(n_power_iter, "n_power_iter", min_value=0)
    workers = check_int(workers, "workers", min_value=1, allow_none=True)
    if mu is not None:
        mu = check_positive(mu, "mu")
    rng = check_random_state(random_state)
    opts = dict(solver=solver, init=init, clip=clip, mu=mu, sample_split=sample_split, reg_scaling=reg_scaling,
                center=center, maxiter=maxiter, tol=tol, xtol=xtol, atol=atol, inner_tol=inner_tol,
                cg_steps=cg_steps, sketch_size=sketch_size, sketch_nnz=sketch_nnz, n_power_iter=n_power_iter, rng=rng)
    return opts, workers


def _init_factors(x0, m, n, k, dtype, lam, init, clip, mu, rng, top_svd, random_scale):
    r"""``(U, V, warm_v, n_clipped)``: the warm start ``x0``, or the SVD / random initialization.

    ``top_svd()`` returns the top-k ``(Q, s)`` of ``P_{Omega_0}(M)/p_0``; ``random_scale()`` the scale
    :math:`\sqrt{\text{mean}|M_\Omega|/k}` of the random factors.
    """
    n_clipped = 0
    if x0 is not None:
        U, V = _unpack_x0(x0, m, n, k, dtype)
        return U, V, True, n_clipped
    V = np.zeros((n, k), dtype=dtype)
    if init == "svd":
        Q, s = top_svd()
        if clip:
            mu_used = mu
            if mu_used is None:
                mu_used = max(float(np.quantile(np.linalg.norm(Q, axis=1), 0.95)) * np.sqrt(m / k), 1e-12)
            Q, n_clipped = clip_rows(Q, mu_used)
        # keep the spectrum's scale when the ridge is not scale invariant
        U = (Q * np.sqrt(np.maximum(s, 0.0))).astype(dtype) if lam > 0 else Q.astype(dtype)
    else:
        scale = random_scale()
        U = (rng.standard_normal((m, k)) * scale).astype(dtype)
    return U, V, False, n_clipped


def _solve_kw(lam, reg_scaling, solver, inner_tol, cg_steps, sketch_size, sketch_nnz, seed):
    return dict(reg=lam, reg_scaling=reg_scaling, solver=solver, inner_tol=inner_tol, cg_steps=cg_steps,
                sketch_size=sketch_size, sketch_nnz=sketch_nnz, seed=seed, check=False)


class _LocalRows:
    """Half-step backend of the single-machine solver: ``solve_rows`` over the CSR / CSC copies."""

    def __init__(self, block, csr, m, sample_split, kw):
        self.block, self.csr, self.m, self.sample_split, self.kw = block, csr, m, sample_split, kw

    def solve(self, part, by_row, fixed, warm, solver=None):
        """``(solution, residual_sq)``; ``residual_sq`` (on all of Omega) only for a U-step in theory mode.
        ``solver`` overrides the configured one (the measured choice of ``"auto"``)."""
        ip, ix, val = self.block(part, by_row)
        kw = self.kw if solver is None else dict(self.kw, solver=solver)
        # only the U-step's residuals are the objective at the new iterate
        sol = solve_rows(ip, ix, val, fixed, warm=warm, row_offset=0 if by_row else self.m,
                         want_rss=by_row and not self.sample_split, **kw)
        res = None
        if by_row and self.sample_split:          # theory mode: a separate residual pass on all of Omega
            res = K.row_residual_sq(*self.csr, sol.rows, fixed)
        return sol, res

    def sample(self, part, by_row, n_sample):
        """``(indptr, indices, values, rows)``: evenly spaced rows of the half-step's block (for "auto")."""
        return sample_block(*self.block(part, by_row), n_sample)

    def begin_iter(self):
        self.c0 = time.process_time()

    def end_iter(self, fields):
        fields["iter_cpu"] = time.process_time() - self.c0   # CPU seconds of all threads (robust to a busy machine)

    def result_extra(self):
        return {}


def _auto_sample_size(nrows):
    """Rows timed by solver="auto": 2% of the side, at least 256 and at most 2048."""
    return int(min(nrows, max(256, min(2048, nrows // 50))))


def _run(backend, problem, mon, U, V, warm_v, *, lam, dtype, reg_scaling, sample_split, maxiter, tol, xtol, atol,
         nnz, ref_norm, row_counts, col_counts, result_keys):
    """The AltMin iterations, the stopping rule and the result; ``backend.solve`` does the row solves.

    ``result_keys`` (offsets, ``n_clipped``, ``init_time``) are passed through to the result, followed by
    ``backend.result_extra()``.
    """
    m, n = problem.shape
    k = problem.rank

    dense = [0]          # FMAs of the O((m + n) k^2) work of the current iteration

    def half_step(part, by_row, fixed, current, warm_ok, gram=None):
        """Solve every row (by_row) or column of the data against ``fixed``; returns (new, solution, res).

        ``gram`` is ``fixed^T fixed`` when the caller already has it (saves the syrk of the QR)."""
        R = None
        if lam == 0.0:
            # orthonormalize the fixed factor (Cholesky QR); the matching warm start is current @ R^T
            Qf, R, w = _chol_qr(fixed.astype(np.float64), gram)
            dense[0] += w
            fixed = Qf.astype(dtype)
        warm = None
        if warm_ok:
            if R is None:
                warm = current
            else:
                warm = _times_rt(current, R).astype(dtype)
                dense[0] += current.shape[0] * k * (k + 1) // 2
        name = None
        if backend.kw["solver"] == "auto":
            side = "rows" if by_row else "cols"
            if side not in auto_choice:
                # measured choice: time the candidate solvers on a sample of this half-step's rows
                # (same fixed factor and warm start), once per side; see choose_solver
                t_choose = time.perf_counter()
                ip, ix, val, rows = backend.sample(part, by_row, _auto_sample_size(m if by_row else n))
                auto_choice[side] = choose_solver(ip, ix, val, fixed, warm=None if warm is None else warm[rows],
                                                  **backend.kw) + (time.perf_counter() - t_choose,)
            name = auto_choice[side][0]
        sol, res = backend.solve(part, by_row, fixed, warm, solver=name)
        return fixed, sol, res

    auto_choice = {}

    history_rel_error = problem.truth is not None
    f_prev = np.inf
    converged = False
    message = None
    U_prev = V_prev = None
    n_rank_def = 0
    n_cold_rows = int(np.count_nonzero(row_counts == 0))
    n_cold_cols = int(np.count_nonzero(col_counts == 0))
    k2_dense = 0
    f = rmse = np.nan
    gram_u = None        # U^T U of the current U (from the last iteration's change measure)
    xx_prev = None       # ||U_prev V_prev^T||_F^2
    for it in range(maxiter):
        t0 = time.perf_counter()
        backend.begin_iter()
        dense[0] = 0
        # V-step: columns against the fixed U
        U, sv, _ = half_step(2 * it + 1, False, U, V, warm_v, gram_u)
        V = sv.rows
        warm_v = True
        # U-step: rows against the fixed V
        V, su, res_sq = half_step(2 * it + 2, True, V, U, True)
        U = su.rows
        # objective and metrics on all of Omega: the U-step returned each row's squared residual at the
        # new iterate; only the theory mode (U-step on one part of Omega) needs a separate pass
        sse = float(np.sum(res_sq if sample_split else su.rss))
        f = 0.5 * sse
        if lam > 0:
            cu = row_counts if reg_scaling == "count" else 1.0
            cv = col_counts if reg_scaling == "count" else 1.0
            f += 0.5 * lam * (float(np.sum(cu * np.sum(U.astype(np.float64) ** 2, axis=1)))
                              + float(np.sum(cv * np.sum(V.astype(np.float64) ** 2, axis=1))))
        rmse = np.sqrt(sse / nnz)
        rel_res = np.sqrt(sse) / ref_norm
        # ||X_t - X_{t-1}||_F by the Gram formula with cached Grams: U^T U (reused by the next V-step's
        # Cholesky QR) and V^T V are two syrks, the cross terms two gemms; ||X_{t-1}||^2 is remembered
        gram_u, gram_v = _syrk(U), _syrk(V)
        dense[0] += (m + n) * k * (k + 1) // 2
        xx = float(np.sum(gram_u * gram_v))
        if U_prev is not None:
            cross = float(np.sum((U.T.astype(np.float64) @ U_prev) * (V.T.astype(np.float64) @ V_prev)))
            dense[0] += (m + n) * k * k
            d2 = xx - 2.0 * cross + xx_prev
            if not d2 > 1e-10 * max(xx, xx_prev):      # cancellation: the stable QR form (gram_distance)
                d2 = _stable_distance_sq(U, V, U_prev, V_prev)
                dense[0] += 4 * (m + n) * k * k + 8 * k ** 3
            rel_change = np.sqrt(d2 / xx_prev) if xx_prev > 0 else np.inf
        else:
            rel_change = np.inf
        U_prev, V_prev, xx_prev = U, V, xx
        work = int(sv.work.sum() + su.work.sum()) + (nnz * k if sample_split else 0)   # + residual pass
        k2_dense = dense[0]
        fields = dict(fun=f, rmse=rmse, rel_residual=rel_res, rel_change=rel_change,
                      passes=(work + dense[0]) / (nnz * k), row_passes=work / (nnz * k),
                      dense_passes=dense[0] / (nnz * k),
                      inner_steps=float(np.mean(np.concatenate([sv.inner_steps, su.inner_steps]))))
        if history_rel_error:
            Ut, Vt = problem.truth
            d2, x2 = gram_distance(U, V, Ut, Vt)
            fields["rel_error"] = np.sqrt(d2 / x2) if x2 > 0 else np.sqrt(d2)
        fields["iter_time"] = time.perf_counter() - t0
        backend.end_iter(fields)
        n_rank_def = sv.n_rank_deficient + su.n_rank_deficient
        if mon.step(np.concatenate([U.ravel(), V.ravel()]), **fields):
            break
        if not np.isfinite(f):
            message = "Numerical breakdown: the objective is not finite."
            break
        if rel_res <= atol:
            converged, message = True, f"Relative residual {rel_res:.3e} <= atol."
            break
        if rel_change <= xtol:
            converged, message = True, f"Relative change of X {rel_change:.3e} <= xtol."
            break
        if abs(f_prev - f) <= tol * max(f, np.finfo(float).tiny):
            converged, message = True, f"Relative change of f {abs(f_prev - f) / max(f, 1e-300):.3e} <= tol."
            break
        f_prev = f
    used = np.concatenate([sv.used, su.used])
    solver_counts = {USED_NAMES[c]: int(np.count_nonzero(used == c)) for c in np.unique(used)}
    if lam == 0.0:
        U, V = balance_factors(U, V)
    hist = mon.history
    status = None
    if message is not None and message.startswith("Numerical"):
        status = 3
    rk = dict(result_keys)
    return mon.result(np.concatenate([U.ravel(), V.ravel()]), converged=converged, status=status, message=message,
                      U=U, V=V, fun=float(f), rmse=float(rmse), global_mean=rk.pop("global_mean"),
                      row_bias=rk.pop("row_bias"), col_bias=rk.pop("col_bias"),
                      n_cold_rows=n_cold_rows, n_cold_cols=n_cold_cols, n_rank_deficient=int(n_rank_def),
                      n_clipped=rk.pop("n_clipped"), solver_counts=solver_counts,
                      time_per_iter=float(np.mean(hist["iter_time"])),
                      passes_per_iter=float(np.mean(hist["passes"])), init_time=rk.pop("init_time"),
                      dense_passes=k2_dense / (nnz * k),
                      auto_choice={side: dict(solver=c[0], seconds=c[1], choose_time=c[2])
                                   for side, c in auto_choice.items()},
                      **rk, **backend.result_extra())


# --------------------------------------------------------------------------------------------------
# the single-machine data preparation
# --------------------------------------------------------------------------------------------------
def _altmin(problem, x0, callback, verbose, progress, *, solver, init, clip, mu, sample_split, reg_scaling, center,
            maxiter, tol, xtol, atol, inner_tol, cg_steps, sketch_size, sketch_nnz, n_power_iter, rng):
    m, n = problem.shape
    k = problem.rank
    seed = int(rng.integers(0, 2**62))
    lam = problem.reg
    dtype = problem.dtype
    nnz = problem.nnz
    mon = Monitor("altmin", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    t_init = time.perf_counter()

    # ---- data: centred values in CSR and CSC order -----------------------------------------------
    gmean, bu, bv = _fit_biases(problem, center, lam)
    csr_ip, csr_ix = problem.csr_indptr, problem.csr_indices
    csc_ip, csc_ix = problem.csc_indptr, problem.csc_indices
    if center == "none":
        csr_val, csc_val = problem.csr_values, problem.csc_values
    else:
        off = gmean + bu[problem.rows] + bv[csr_ix]
        csr_val = (problem.csr_values - off).astype(dtype)
        csc_val = np.ascontiguousarray(csr_val[problem._csr_to_csc])
    ref_norm = float(np.sqrt(np.sum(csr_val.astype(np.float64) ** 2))) or 1.0

    if sample_split:
        nparts = 2 * maxiter + 1
        lab_csr = K.split_labels(problem.rows, csr_ix, n, seed, nparts)
        lab_csc = lab_csr[problem._csr_to_csc]

        def block(part, by_row):
            if by_row:
                return _split_block(csr_ip, lab_csr, part, csr_ix, csr_val)
            return _split_block(csc_ip, lab_csc, part, csc_ix, csc_val)
    else:
        def block(part, by_row):
            return (csr_ip, csr_ix, csr_val) if by_row else (csc_ip, csc_ix, csc_val)

    # ---- initialization ----------------------------------------------------------------------------
    def top_svd():
        ip, ix, val = block(0, True)
        p0 = max(ix.size, 1) / (m * n)
        Q, s, _ = sparse_top_svd(ip, ix, val, (m, n), k, scale=1.0 / p0, n_power_iter=n_power_iter, rng=rng)
        return Q, s

    U, V, warm_v, n_clipped = _init_factors(
        x0, m, n, k, dtype, lam, init, clip, mu, rng, top_svd,
        lambda: np.sqrt(np.mean(np.abs(csr_val)) / k) if nnz else 1.0)
    init_time = time.perf_counter() - t_init

    kw = _solve_kw(lam, reg_scaling, solver, inner_tol, cg_steps, sketch_size, sketch_nnz, seed)
    backend = _LocalRows(block, (csr_ip, csr_ix, csr_val), m, sample_split, kw)
    return _run(backend, problem, mon, U, V, warm_v, lam=lam, dtype=dtype, reg_scaling=reg_scaling,
                sample_split=sample_split, maxiter=maxiter, tol=tol, xtol=xtol, atol=atol, nnz=nnz,
                ref_norm=ref_norm, row_counts=problem.row_counts, col_counts=problem.col_counts,
                result_keys=dict(global_mean=gmean, row_bias=bu if center == "biases" else None,
                                 col_bias=bv if center == "biases" else None, n_clipped=n_clipped,
                                 init_time=init_time))
