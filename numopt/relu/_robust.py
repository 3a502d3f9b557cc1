"""ADMM for the adversarially robust (l_inf) convex two-layer ReLU program.

The program (derivation in :mod:`numopt.relu._problem`; ``||.||_{1,eps} = sum_j eps_j |.|``, bias excluded):

.. math::

    \\min_{v_i, w_i}\\; \\sum_k \\ell\\big(r_k + h_k(\\hat y_k)\\big) + \\beta \\sum_i (\\|v_i\\|_2 + \\|w_i\\|_2)
    \\quad\\text{s.t.}\\quad e_{ik} x_k^T v_i \\ge \\|v_i\\|_{1,\\epsilon},\\;
    e_{ik} x_k^T w_i \\ge \\|w_i\\|_{1,\\epsilon},

with :math:`\\hat y = \\sum_i D_i X (v_i - w_i)`, :math:`r_k = \\|c_k\\|_{1,\\epsilon}`,
:math:`c_k = \\sum_i d_{ik}(v_i - w_i)`, and (squared) :math:`\\ell(z) = z^2/2`, :math:`h_k(t) = |t - y_k|`;
(logistic) :math:`\\ell(z) = \\log(1 + e^{2z})`, :math:`h_k(t) = -(2y_k - 1)t`.

Splitting (graph form: ``x = [V W]``, ``d x 2P``; three blocks ``z_b = K_b x``, each with a cheap exact prox):

1. ``z_1 = x``: :math:`\\beta \\sum_g \\|z_{1,g}\\|_2` -- group soft-threshold.
2. ``z_2 = c_2 (E_i X x_j,\\; \\epsilon \\circ x_j)_j`` per column ``j`` of ``[V W]``: indicator of the cone
   :math:`S = \\{(g, q): \\min_k g_k \\ge \\|q\\|_1\\}` -- projection by a scalar root search
   (:func:`~numopt.relu._kernels.robust_cone_project`; ``eps = 0`` gives ``max(g, 0)``).
3. ``z_3 = c_3 (\\hat y_k,\\; \\epsilon \\circ c_k)_k``: :math:`\\sum_k \\ell(\\|q_k\\|_1 + h_k(t_k))` -- prox by a
   scalar root search on the slope :math:`\\theta = \\ell'` (:func:`~numopt.relu._kernels.robust_loss_prox`).

Presolve: a pattern whose robust cone has no interior (LP depth 0, :func:`robust_cone_margins`) forces
``v_i = w_i = 0``; it is removed before the factorisation. ADMM cannot find such an apex quickly (the range of ``K``
meets the cone in one point): that was why the solver stalled on full breast_cancer (7 of 8 such cones).

Scaled ADMM with over-relaxation ``alpha`` (Boyd et al. 2011, 3.4.3), one penalty ``rho`` for all blocks:

* ``x <- (K^T K)^{-1} K^T (z - lam)``;
* ``h = alpha K x + (1 - alpha) z``;  ``z <- prox_{f/rho}(h + lam)``;  ``lam <- lam + h - z``.

``K^T K`` does not contain ``rho``, so it is factorised **once** and residual balancing of ``rho`` (on by
default) is free. In ``a = v - w``, ``s = v + w`` it decouples (as in :mod:`numopt.relu._linsolve`):
``N s = r_V + r_W`` with ``N = I + c_2^2 (X^T X + diag(eps^2))`` (``d x d``) and
``(I_P (x) N + 2 c_3^2 (M^T M + D^T D (x) diag(eps^2))) a = r_V - r_W`` (``dP x dP`` Cholesky, memory
``(dP)^2``). Stopping on the primal residual ``||K x - z||`` and the dual residual ``rho ||K^T (z - z_old)||``
(Boyd 3.3.1, absolute + relative tolerances); the objective is never a stopping signal.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .._monitor import Monitor
from .._validation import check_bool, check_int, check_positive
from ._admm import _Anderson, admm_result_fields, check_admm_options
from ._kernels import masked_rowsum, robust_cone_project, robust_loss_prox

__all__ = ["minimize_robust"]


class _RobustOperator:
    """The stacked map ``K x = (z_1, (z_g, z_q), (z_t, z_r))``, its adjoint and ``(K^T K)^{-1}``."""

    def __init__(self, problem, c2, c3, sq, sl, D=None):
        X = problem.X
        D = problem.Dmat if D is None else D
        self.X, self.D = X, D
        n, d = X.shape
        P = D.shape[1]
        self.n, self.d, self.P = n, d, P
        self.c2, self.c3, self.sq, self.sl = c2, c3, sq, sl
        self.pert = np.flatnonzero(problem.eps_weights > 0)          # perturbable coordinates (no bias)
        # cone rows q = sq * x_pert with the weighted norm ||q||_{1, eps / sq}, loss rows sl * c_k with
        # ||.||_{1, eps / sl}: row scalings of K (they change the ADMM metric, not the program)
        self.wq = problem.eps_weights[self.pert] / sq
        self.wl = problem.eps_weights[self.pert] / sl
        self.m = self.pert.size
        self.Eb = np.tile(2.0 * D - 1.0, 2)
        e2 = np.zeros(d)
        e2[self.pert] = sq * sq
        l2 = np.zeros(d)
        l2[self.pert] = sl * sl
        XtX = X.T @ X
        N = np.eye(d) + c2 * c2 * (XtX + np.diag(e2))
        self.Nf = cho_factor(N, lower=True)
        # a-system: I_P (x) N + 2 c3^2 (M^T M + D^T D (x) diag(eps^2)), a stacked as [a_1; ...; a_P]
        M = (D[:, :, None] * X[:, None, :]).reshape(n, P * d)
        A = 2.0 * c3 * c3 * (M.T @ M)
        A += np.kron(np.eye(P), N) + 2.0 * c3 * c3 * np.kron(D.T @ D, np.diag(l2))
        self.Af = cho_factor(A, lower=True)

    def forward(self, x):
        """``K x`` as the tuple ``(z1, zg, zq, zt, zr)`` plus ``X x`` (reused by the caller)."""
        P, c2, c3 = self.P, self.c2, self.c3
        XA = self.X @ x
        zg = c2 * (self.Eb * XA)
        zq = (c2 * self.sq) * x[self.pert].T                          # 2P x m
        zt = c3 * masked_rowsum(XA, self.D)
        a = x[:, :P] - x[:, P:]
        zr = (c3 * self.sl) * (self.D @ a[self.pert].T)              # n x m: rows c_k (perturbable part)
        return [x.copy(), zg, zq, zt, zr]

    def adjoint_parts(self, z):
        """``(K_1^T z_1, K_2^T z_2, K_3^T z_3)``, each ``d x 2P``."""
        P, c2, c3 = self.P, self.c2, self.c3
        z1, zg, zq, zt, zr = z
        cone = c2 * (self.X.T @ (self.Eb * zg))
        cone[self.pert] += (c2 * self.sq) * zq.T
        B = self.X.T @ (self.D * zt[:, None])
        B[self.pert] += self.sl * (zr.T @ self.D)
        B *= c3
        return z1, cone, np.hstack([B, -B])

    def adjoint(self, z):
        """``K^T z`` (``d x 2P``)."""
        a, b, c = self.adjoint_parts(z)
        return a + b + c

    def solve(self, R):
        """``(K^T K)^{-1} R`` for ``R = [R_V R_W]``."""
        P, d = self.P, self.d
        rV, rW = R[:, :P], R[:, P:]
        s = cho_solve(self.Nf, rV + rW, check_finite=False)
        a = cho_solve(self.Af, (rV - rW).T.ravel(), check_finite=False).reshape(P, d).T
        return np.hstack([0.5 * (s + a), 0.5 * (s - a)])


class _Layout:
    """Offsets of the blocks of a flat state vector."""

    def __init__(self, shapes):
        self.shapes = shapes
        self.offsets = np.concatenate([[0], np.cumsum([int(np.prod(sh)) for sh in shapes])]).astype(int)

    def views(self, v):
        return [v[self.offsets[i]:self.offsets[i + 1]].reshape(sh) for i, sh in enumerate(self.shapes)]

    def pack(self, blocks):
        return np.concatenate([np.ravel(b) for b in blocks])


def robust_cone_margins(X, Dmat, eps_weights):
    """Depth of every robust cone: ``m_i = max_{||v||_inf <= 1} min_k (e_ik x_k^T v - ||v||_{1,eps})``.

    One small LP per pattern (HiGHS; ``v = v^+ - v^-``, ``0 <= v^+-, v^- <= 1``, so ``||v||_{1,eps}`` is
    over-estimated only where both parts are positive, which the maximisation never prefers). ``m_i >= 0``
    always (``v = 0``); ``m_i > 0`` iff the cone ``{v: e_ik x_k^T v >= ||v||_{1,eps} for all k}`` has an
    interior. ``m_i = 0`` means the cone is ``{0}`` or flat (no interior; a measure-zero event for data in
    general position), which happens as soon as eps exceeds the pattern's l_inf margin -- e.g. for 7 of the 8
    patterns of breast_cancer (n = 569) at eps = 0.02.
    """
    from scipy.optimize import linprog

    n, d = X.shape
    E = 2.0 * Dmat - 1.0
    c = np.zeros(2 * d + 1)
    c[-1] = -1.0
    bounds = [(0.0, 1.0)] * (2 * d) + [(None, None)]
    out = np.empty(Dmat.shape[1])
    for i in range(Dmat.shape[1]):      # P LPs of size n x (2d + 1): negligible next to the factorisation
        A = E[:, i:i + 1] * X
        A_ub = np.hstack([eps_weights - A, A + eps_weights, np.ones((n, 1))])
        r = linprog(c, A_ub=A_ub, b_ub=np.zeros(n), bounds=bounds, method="highs")
        out[i] = max(-r.fun, 0.0) if r.status == 0 else np.inf    # LP trouble: keep the pattern
    return out


def _act_scale(X, V, W):
    return float(max(np.abs(X @ V).max(initial=0.0), np.abs(X @ W).max(initial=0.0)))


def _group_soft(Z, thr):
    nz = np.linalg.norm(Z, axis=0)
    return Z * np.maximum(1.0 - thr / np.maximum(nz, 1e-300), 0.0)


def _sq(blocks):
    # einsum reads strided views in place (vdot copies non-contiguous blocks: 40% of an iteration at n = 569)
    return sum(float(np.einsum("ij,ij->", b, b)) if b.ndim == 2 else float(b @ b) for b in blocks)


def minimize_robust(problem, x0=None, *, callback=None, rho=None, cone_scale=1.0, loss_scale=1.0, l1_scale=1.0,
                    loss_l1_scale=1.0,
                    relaxation=1.6,
                    rtol=1e-5, atol=1e-8, maxiter=20000, adaptive_rho=False, rho_mu=5.0,
                    rho_update_every=25, anderson=0, presolve=True, presolve_tol=1e-7, initial_state=None,
                    verbose=False, progress=False):
    """Solve the robust (``adversarial_eps > 0``) :class:`~numopt.problems.TwoLayerReLU` program by ADMM.

    ``minimize(problem, method="admm")`` calls it when ``problem.adversarial_eps > 0`` (it also solves the
    nominal program for ``eps = 0``). See the module docstring for the program and the splitting.

    Parameters
    ----------
    problem : TwoLayerReLU
    x0 : array_like, shape (2 * P * d,), optional
        Warm start of ``x = z_1`` (layout ``[v_1..v_P, w_1..w_P]``); the other blocks start at ``K x0``,
        duals at zero.

    Options
    -------
    rho : float, optional
        Initial ADMM penalty (default: ``beta`` clipped to ``[1e-2, 1e2]``).
    cone_scale, loss_scale : float
        Row scalings ``c_2``, ``c_3`` of the cone and loss blocks of ``K`` (fixed: they enter the factorisation).
    l1_scale, loss_l1_scale : float
        Extra scalings of the l1 rows (``x_pert`` in the cone block, ``c_k`` in the loss block; the weights of the
        norms are divided by the same factor, so the program is unchanged). Scalings change the ADMM metric only;
        the defaults (all 1) were not beaten consistently by any setting tried (0.3 to 10) on small instances.
    relaxation : float
        Over-relaxation ``alpha`` in ``(0, 2)`` (1.8 took 10-12% fewer iterations than 1.6 on the instances measured;
        ``minimize(method="admm")`` passes its own default, 1.6).
    rtol, atol : float
        Relative and absolute tolerances of the residual stopping rule.
    maxiter : int
        Maximum ADMM iterations.
    adaptive_rho : bool
        Residual balancing (Boyd 3.4.1) every ``rho_update_every`` iterations; free here (``K^T K`` has no ``rho``),
        but off by default: on breast_cancer (n = 150, P = 8, eps = 0.02) it drove rho from 1 to 0.19 and needed
        > 6000 iterations where the fixed ``rho = 1`` reached a 1e-4 gap in 704 and ``rtol = 1e-6`` in 5539.
    rho_mu : float
        Balancing threshold (``> 1``): when the ratio ``q`` of the primal to the dual residual (each relative to
        its tolerance) has ``sqrt(q) > rho_mu`` or ``< 1 / rho_mu``, ``rho <- rho sqrt(q)``.
    rho_update_every : int
        Balancing period.
    anderson : int
        Memory of the (safeguarded, type-II) Anderson acceleration of the ADMM fixed-point map (0: off). An
        extrapolated point is kept only if its fixed-point residual is below the plain step's.
    presolve : bool
        Drop the patterns whose robust cone has no interior (:func:`robust_cone_margins` ``<= presolve_tol``
        times the largest ``||x_k||_1``): their ``v_i, w_i`` are 0 in every feasible point (for data in general
        position), so the program is unchanged, and ADMM no longer has to crawl to the apex of a cone ``{0}``.
        Without it the solver did not converge on breast_cancer (n = 569, eps = 0.02: 7 of 8 cones are
        ``{0}``) in 20000 iterations. Costs ``P`` small LPs, cached on the problem.
    presolve_tol : float
        Relative depth below which a cone counts as empty of interior (the LP's feasibility tolerance is 1e-7).
    initial_state : dict, optional
        ``res.state`` of an earlier robust run on the same problem (patterns and eps): full warm start.
    verbose, progress : bool
        Logging through ``numopt.admm-robust`` / a tqdm bar.

    Returns
    -------
    OptimizeResult
        As :func:`numopt.relu._admm.minimize_admm`: ``x``, ``v``, ``w``, ``fun`` (robust objective at the group-
        sparse ``v``), ``nominal_fun``, ``first_layer``, ``second_layer``, ``n_neurons``, ``network_fun``,
        ``network_gap``, ``cone_violation`` (robust cones), ``primal_residual``, ``dual_residual``, ``rho``,
        ``factor_time``, ``n_patterns_kept`` (after the presolve), ``state`` and ``history`` (``fun``, ``primal_residual``, ``dual_residual``, ``rho``).
    """

    rho = float(np.clip(problem.beta, 1e-2, 1e2)) if rho is None else check_positive(rho, "rho")
    c2 = check_positive(cone_scale, "cone_scale")
    c3 = check_positive(loss_scale, "loss_scale")
    sq = check_positive(l1_scale, "l1_scale")
    sl = check_positive(loss_l1_scale, "loss_l1_scale")
    alpha, rtol, atol, maxiter = check_admm_options(relaxation, rtol, atol, maxiter)
    adaptive_rho = check_bool(adaptive_rho, "adaptive_rho")
    rho_mu = check_positive(rho_mu, "rho_mu")
    if rho_mu <= 1:
        raise ValueError(f"rho_mu must be > 1; got {rho_mu!r}")
    rho_update_every = check_int(rho_update_every, "rho_update_every", min_value=1)
    anderson = check_int(anderson, "anderson", min_value=0)
    presolve = check_bool(presolve, "presolve")
    presolve_tol = check_positive(presolve_tol, "presolve_tol", strict=False)

    P_all, d, beta = problem.n_patterns_, problem.dim, problem.beta
    logistic = problem.loss == "logistic"
    mon = Monitor("admm-robust", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    t0 = time.perf_counter()
    keep = np.ones(P_all, dtype=bool)
    if presolve and problem.robust:
        mkey = ("robust-margins", problem.eps_weights.tobytes())
        if mkey not in problem._cache:
            problem._cache[mkey] = robust_cone_margins(problem.X, problem.Dmat, problem.eps_weights)
        margins = problem._cache[mkey]
        keep = margins > presolve_tol * max(1.0, float(np.abs(problem.X).sum(axis=1).max()))
    P = int(keep.sum())

    def embed(Z1):
        """Full ``(V, W)`` (``d x P_all``) from the reduced ``[V W]`` (dropped patterns are 0)."""
        V, W = np.zeros((d, P_all)), np.zeros((d, P_all))
        V[:, keep], W[:, keep] = Z1[:, :P], Z1[:, P:]
        return V, W

    if P == 0:      # every robust cone is {0}: the only feasible point is 0
        V, W = embed(np.zeros((d, 0)))
        mon.step(problem.pack(V, W), fun=problem.objective(V, W), primal_residual=0.0, dual_residual=0.0, rho=rho)
        extra = admm_result_fields(problem, V, W)
        extra["nominal_fun"] = problem.nominal_objective(V, W)
        return mon.result(problem.pack(V, W), converged=True, primal_residual=0.0, dual_residual=0.0, rho=rho,
                          linear_solver="cholesky-robust", factor_time=time.perf_counter() - t0, n_rho_updates=0,
                          n_aa_rejected=0, n_patterns_kept=0, state=None, **extra)
    key = ("robust", c2, c3, sq, sl, problem.eps_weights.tobytes(), keep.tobytes())
    if key not in problem._cache:
        problem._cache[key] = _RobustOperator(problem, c2, c3, sq, sl, D=problem.Dmat[:, keep])
    K = problem._cache[key]
    factor_time = time.perf_counter() - t0

    # --- state: x (d x 2P), z and scaled duals lam as block lists ------------------------------------
    start = problem.check_x0(x0)
    if initial_state is not None:
        if isinstance(initial_state, dict) and "keep" in initial_state and \
                not np.array_equal(np.asarray(initial_state["keep"], dtype=bool), keep):
            raise ValueError("initial_state does not match this problem (other patterns kept by the presolve)")
        z, lam, rho = _load_state(initial_state, K)
    else:
        x = np.zeros((d, 2 * P)) if start is None else np.hstack([start[0][:, keep], start[1][:, keep]])
        z = K.forward(x)
        lam = [np.zeros_like(b) for b in z]
    y = problem.y
    n_dual = np.sqrt(2 * P * d)
    n_pri = np.sqrt(sum(b.size for b in z))
    # flat state [z, lam | K^T z, K^T lam]: the last two are linear in the first, so Anderson combinations
    # carry them along without products; residuals of the fixed-point map use the first part only
    lay = _Layout([b.shape for b in z] * 2 + [(d, 2 * P)] * 2)
    n_acc = lay.offsets[10]
    state = lay.pack(z + lam + [K.adjoint(z), K.adjoint(lam)])

    def admm_map(state, rho):
        """One ADMM iteration on the flat state; returns the new state and the residuals."""
        blocks = lay.views(state)
        z, lam, KtZ, KtL = blocks[:5], blocks[5:10], blocks[10], blocks[11]
        # 1. x-step: one solve with the constant factor
        x = K.solve(KtZ - KtL)
        Kx = K.forward(x)
        # 2. relaxed point, the three proximal maps, dual step
        h = [alpha * a + (1.0 - alpha) * b for a, b in zip(Kx, z)]
        w = [a + b for a, b in zip(h, lam)]
        z_new = [None] * 5
        z_new[0] = _group_soft(w[0], beta / rho)
        z_new[1], z_new[2] = robust_cone_project(w[1], w[2], K.wq, np.empty_like(w[1]), np.empty_like(w[2]))
        zt, zr = np.empty_like(w[3]), np.empty_like(w[4])
        robust_loss_prox(w[3] / c3, w[4] / c3, K.wl, y, logistic, 1.0 / (rho * c3 * c3), zt, zr)
        z_new[3], z_new[4] = c3 * zt, c3 * zr
        lam_new = [lb + hb - zb for lb, hb, zb in zip(lam, h, z_new)]
        KtZ_new = K.adjoint(z_new)
        parts = K.adjoint_parts(lam_new)
        # 3. residuals (primal: K x - z; dual: rho K^T (z - z_old)). At the optimum sum_b K_b^T y_b = 0 (x has
        # no objective of its own), so the dual scale is the largest block term ||K_b^T y_b|| (as OSQP's).
        r_pri = np.sqrt(_sq([a - b for a, b in zip(Kx, z_new)]))
        r_dual = rho * np.linalg.norm(KtZ_new - KtZ)
        eps_pri = n_pri * atol + rtol * max(np.sqrt(_sq(Kx)), np.sqrt(_sq(z_new)))
        eps_dual = n_dual * atol + rtol * rho * max(np.linalg.norm(p) for p in parts)
        out = lay.pack(z_new + lam_new + [KtZ_new, parts[0] + parts[1] + parts[2]])
        return out, (r_pri, r_dual, eps_pri, eps_dual)

    aa = _Anderson(anderson, n_acc, state.size) if anderson > 0 else None
    converged = False
    r_pri = r_dual = np.inf
    n_rho_updates = n_rejected = 0
    Ts, res = admm_map(state, rho)
    for k in range(1, maxiter + 1):
        r_pri, r_dual, eps_pri, eps_dual = res
        V, W = embed(lay.views(Ts)[0])
        if mon.step(problem.pack(V, W), fun=problem.objective(V, W), primal_residual=r_pri, dual_residual=r_dual,
                    rho=rho):
            break
        # the residuals are relative to ||K x||, dominated by the large cone rows: also ask the returned copy
        # (V, W) to satisfy the robust cones to rtol of its own activations (a thin cone's violation lags)
        if r_pri <= eps_pri and r_dual <= eps_dual and \
                problem.cone_violation(V, W) <= max(rtol, atol) * max(1.0, _act_scale(problem.X, V, W)):
            converged = True
            break
        if k == maxiter:
            break
        # residual balancing: no refactorisation needed, the scaled duals (and K^T lam) follow 1 / rho
        if adaptive_rho and k % rho_update_every == 0:
            ratio = np.sqrt((r_pri / max(eps_pri, 1e-300)) / max(r_dual / max(eps_dual, 1e-300), 1e-300))
            if ratio > rho_mu or ratio < 1.0 / rho_mu:
                new_rho = float(np.clip(rho * ratio, 1e-6, 1e6))
                Ts[lay.offsets[5]:lay.offsets[10]] *= rho / new_rho
                Ts[lay.offsets[11]:] *= rho / new_rho
                rho = new_rho
                n_rho_updates += 1
                if aa is not None:
                    aa.reset()
                state = Ts
                Ts, res = admm_map(state, rho)
                continue
        if aa is None:
            state = Ts
            Ts, res = admm_map(state, rho)
            continue
        # Anderson extrapolation of the fixed-point map, kept only if it shrinks the fixed-point residual
        g = Ts[:n_acc] - state[:n_acc]
        s_aa = aa.update(g, Ts)
        if s_aa is None:
            state = Ts
            Ts, res = admm_map(state, rho)
            continue
        Ts_aa, res_aa = admm_map(s_aa, rho)
        if np.linalg.norm(Ts_aa[:n_acc] - s_aa[:n_acc]) <= np.linalg.norm(g):
            state, Ts, res = s_aa, Ts_aa, res_aa
        else:
            n_rejected += 1
            aa.reset()
            aa.update(g, Ts)
            state = Ts
            Ts, res = admm_map(state, rho)
    blocks = lay.views(Ts)
    z, lam = blocks[:5], blocks[5:10]
    V, W = embed(z[0])
    state = {"z": [b.copy() for b in z], "lam": [b.copy() for b in lam], "rho": rho, "keep": keep.copy()}
    del Ts
    extra = admm_result_fields(problem, V, W)
    extra["nominal_fun"] = problem.nominal_objective(V, W)
    return mon.result(problem.pack(V, W), converged=converged, primal_residual=float(r_pri),
                      dual_residual=float(r_dual), rho=rho, linear_solver="cholesky-robust",
                      factor_time=factor_time, n_rho_updates=n_rho_updates, n_aa_rejected=n_rejected,
                      n_patterns_kept=P, state=state,
                      **extra)


def _load_state(state, K):
    if not isinstance(state, dict):
        raise TypeError(f"initial_state must be a dict (res.state); got {type(state).__name__}")
    for key in ("z", "lam"):
        if key not in state:
            raise ValueError(f"initial_state is missing {key!r} (was it produced by the robust solver?)")
    ref = K.forward(np.zeros((K.d, 2 * K.P)))
    out = []
    for key in ("z", "lam"):
        blocks = state[key]
        if not isinstance(blocks, (list, tuple)) or len(blocks) != len(ref):
            raise ValueError(f"initial_state[{key!r}] must be a list of {len(ref)} arrays")
        arrs = []
        for b, r in zip(blocks, ref):
            b = np.array(b, dtype=np.float64)
            if b.shape != r.shape or not np.all(np.isfinite(b)):
                raise ValueError(f"initial_state[{key!r}] does not match this problem (shapes or non-finite values)")
            arrs.append(b)
        out.append(arrs)
    return out[0], out[1], check_positive(state.get("rho", 1.0), "initial_state['rho']")
