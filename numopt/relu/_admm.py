"""ADMM for the convex two-layer ReLU program (Bai, Gautam, Sojoudi, arXiv 2201.01965, Alg. 3.1).

Splitting (``u = (v_1..v_P, w_1..w_P)`` stacked as the ``d x 2P`` matrix ``[U Z]``):

.. math::

    \\min_{u, v, s}\\; \\ell(F u) + \\beta \\sum_g \\|v_g\\|_2 + \\mathbb 1(s \\ge 0)
    \\quad\\text{s.t.}\\quad u = v,\\; G u = s,

with ``F u = sum_i D_i X (u_i - z_i)`` and ``G u = (E_i X u_i, E_i X z_i)_i``, ``E_i = 2 D_i - I``.
Scaled ADMM with penalty ``rho`` and dual step ``gamma``:

1. ``u <- argmin l(Fu) + rho/2 ||u - v + lam||^2 + rho/2 ||G u - s + nu||^2``. For the squared loss
   this is the linear system ``A u = b``, ``A = I + G^T G + F^T F / rho`` (constant: factorised once,
   see :mod:`numopt.relu._linsolve`), ``b = F^T y / rho + v - lam + G^T (s - nu)``. For the logistic
   loss, whose Hessian in ``Fu`` is ``<= I``, ``rho A`` majorises the subproblem's Hessian, so
   ``u <- u - A^{-1} grad(u) / rho`` (``inner_iter`` such majorise-minimise steps) decreases it
   monotonically with the same cached factor.
2. ``v_g <- (1 - (beta/rho)/||u_g + lam_g||)_+ (u_g + lam_g)`` (group soft-threshold).
3. ``s <- (G u + nu)_+``.
4. ``lam <- lam + gamma (u - v)``, ``nu <- nu + gamma (G u - s)``.

Stopping (Boyd et al. 2011, 3.3.1) on the primal residual
``r = ||(u - v, G u - s)||`` and the dual residual ``d = rho ||(v - v_old) + G^T (s - s_old)||``:
``r <= sqrt(2P(d + n)) atol + rtol max(||(u, Gu)||, ||(v, s)||)`` and
``d <= sqrt(2Pd) atol + rtol rho ||lam + G^T nu||``. The objective is *not* a stopping signal: it can
undershoot the optimum while the iterates are infeasible.

Per iteration: two BLAS products with ``X`` (``X [U Z]`` and ``X^T (E o s)``), the u-solve, and fused
Numba passes over the ``n x 2P`` slack arrays (:mod:`numopt.relu._kernels`). ``G^T nu`` is carried
by the recursion ``G^T nu <- G^T nu + gamma (X^T X u - G^T s)`` so no third product is needed.
"""
from __future__ import annotations

import time

import numpy as np

from .._monitor import Monitor
from .._validation import check_bool, check_choice, check_int, check_positive
from ._kernels import group_prox_dual_update, masked_outer, masked_rowsum, slack_dual_update
from ._linsolve import PATHS, USolver

__all__ = ["minimize_admm", "admm_result_fields"]


def _default_rho(problem):
    # The u-step weighs the loss curvature (1 for both losses) against rho (I + G^T G); the group prox
    # thresholds at beta / rho. rho = beta (threshold 1 on standardised data) reached a sustained 1e-4
    # objective gap fastest of rho in {0.1, 0.3, 0.6, 1, 1.5, 2, 3} on standardised breast_cancer
    # (beta = 1; P = 8: 1290 iterations, P = 32: 2752, 0.6 gave 1408 there); clipped for extreme beta.
    return float(np.clip(problem.beta, 1e-3, 1e2)) if problem.beta > 0 else 1e-2


def _default_cone_scale(problem):
    # G = c E X: scale the cone block so that c^2 X^T X has unit mean eigenvalue, i.e. the two
    # splittings (u = v and G u = s) weigh the same in the u-step. Without it the cone block dominates
    # A by a factor ~ n on standardised data and ADMM crawls (verified: thousands of iterations).
    X = problem.X
    return float(np.sqrt(X.shape[1] / max(np.sum(X * X), 1e-300)))


def minimize_admm(problem, x0=None, *, callback=None, rho=None, cone_scale=1.0, gamma=1.0, relaxation=1.6, rtol=1e-6, atol=1e-8,
                  maxiter=20000, linear_solver="auto", adaptive_rho=False, rho_mu=10.0, rho_tau=2.0,
                  rho_update_every=10, max_rho_updates=30, anderson=0, aa_safeguard=1.0, inner_iter=1,
                  initial_state=None,
                  verbose=False, progress=False):
    """Solve :class:`~numopt.problems.TwoLayerReLU` by ADMM with a pre-factorised u-step.

    Solves the sampled convex program

    .. math::

        \\min_{v_i, w_i} \\ell\\Big(\\sum_i D_i X (v_i - w_i), y\\Big) + \\beta \\sum_i (\\|v_i\\|_2 + \\|w_i\\|_2)
        \\quad\\text{s.t.}\\quad (2D_i - I) X v_i \\ge 0,\\; (2D_i - I) X w_i \\ge 0

    by the splitting ``u = v``, ``G u = s >= 0`` (see the module docstring for the iteration). The
    u-system ``I + G^T G + F^T F / rho`` is factorised **once** per ``rho`` (decoupled into a ``d x d``
    and a ``dP x dP`` Cholesky, or the ``n x n`` Woodbury form when ``dP > n``).

    Parameters
    ----------
    problem : TwoLayerReLU
    x0 : array_like, shape (2 * P * d,), optional
        Warm start of ``u = v`` (layout ``[v_1..v_P, w_1..w_P]``); duals start at zero.

    Options
    -------
    rho : float, optional
        ADMM penalty. Default: ``beta`` clipped to ``[1e-3, 1e2]`` (standardised data).
    cone_scale : float or None
        Constant ``c`` in ``G u = c (E_i X u_i)_i``. ``None`` scales the cone block so that ``c^2 X^T X``
        has unit mean eigenvalue. Measured on breast_cancer (P = 32, beta = 1) that was *slower* than
        ``c = 1`` (the paper's splitting), which is the default.
    gamma : float
        Dual step ratio (1: standard scaled ADMM). Must lie in ``(0, 1.618)``.
    relaxation : float
        Over-relaxation ``alpha`` in ``(0, 2)`` (Boyd et al. 3.4.3): the v-, s- and dual steps use
        ``alpha u + (1 - alpha) v_old`` and ``alpha G u + (1 - alpha) s_old``.
    rtol, atol : float
        Relative and absolute tolerances of the residual stopping rule.
    maxiter : int
        Maximum ADMM iterations.
    linear_solver : {"auto", "cholesky", "woodbury"}
        u-step path; ``"auto"`` takes ``"cholesky"`` when ``dP <= n`` else ``"woodbury"``.
    adaptive_rho : bool
        Residual balancing (Boyd 3.4.1): every ``rho_update_every`` iterations, if one residual exceeds
        ``rho_mu`` times the other (each divided by its tolerance), ``rho`` is multiplied or divided by
        ``rho_tau``. **A new rho means a new factorisation** (one ``n x n`` or ``dP x dP`` Cholesky),
        so it is limited to ``max_rho_updates`` changes; factors are cached per ``rho`` on the problem.
    rho_mu, rho_tau : float
        Balancing thresholds (``> 1``).
    rho_update_every, max_rho_updates : int
        Balancing period and budget.
    anderson : int
        Memory of the Anderson (type-II) acceleration of the ADMM fixed-point map (0: plain ADMM).
        Off by default: on breast_cancer it cut iterations by < 20% at twice the cost per iteration.
        An extrapolated point is kept only if its fixed-point residual ``||T(z) - z||`` is at most
        ``aa_safeguard`` times the previous one; otherwise the plain step is taken and the memory reset.
    aa_safeguard : float
        Safeguard factor of the Anderson step.
    inner_iter : int
        Majorise-minimise steps of the u-subproblem per iteration (logistic loss only).
    initial_state : dict, optional
        ``res.state`` of an earlier run on the same problem (patterns): full warm start, duals included.
    verbose : bool or int
        Log progress through ``logging.getLogger("numopt.admm")``.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    OptimizeResult
        ``x`` (``[v; w]`` flat), ``v``, ``w`` (``d x P``), ``fun`` (convex objective at ``v``),
        ``first_layer`` (``d x m``) and ``second_layer`` (``m``) of the recovered network,
        ``network_fun`` (its non-convex objective), ``n_neurons``, ``cone_violation``,
        ``primal_residual``, ``dual_residual``, ``rho``, ``linear_solver``, ``n_patterns``,
        ``factor_time``, ``state`` (warm start) and ``history`` (``fun``, ``primal_residual``,
        ``dual_residual``, ``rho``, ``time`` per iteration; ``fun`` is evaluated at ``u``).
    """
    if problem.robust:  # adversarial_eps > 0: the robust program has its own splitting (numopt.relu._robust)
        from ._robust import minimize_robust
        return minimize_robust(problem, x0, callback=callback, rho=rho, relaxation=relaxation, rtol=rtol, atol=atol,
                               maxiter=maxiter, adaptive_rho=adaptive_rho, anderson=anderson,
                               initial_state=initial_state, verbose=verbose, progress=progress)
    rho = _default_rho(problem) if rho is None else check_positive(rho, "rho")
    c = _default_cone_scale(problem) if cone_scale is None else check_positive(cone_scale, "cone_scale")
    gamma = check_positive(gamma, "gamma")
    if gamma >= 1.618:
        raise ValueError(f"gamma must lie in (0, 1.618); got {gamma!r}")
    relaxation = check_positive(relaxation, "relaxation")
    if relaxation >= 2:
        raise ValueError(f"relaxation must lie in (0, 2); got {relaxation!r}")
    rtol = check_positive(rtol, "rtol", strict=False)
    atol = check_positive(atol, "atol", strict=False)
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol cannot both be 0")
    maxiter = check_int(maxiter, "maxiter", min_value=1)
    linear_solver = check_choice(linear_solver, "linear_solver", PATHS)
    adaptive_rho = check_bool(adaptive_rho, "adaptive_rho")
    rho_mu = check_positive(rho_mu, "rho_mu")
    rho_tau = check_positive(rho_tau, "rho_tau")
    if rho_mu <= 1 or rho_tau <= 1:
        raise ValueError("rho_mu and rho_tau must be > 1")
    rho_update_every = check_int(rho_update_every, "rho_update_every", min_value=1)
    max_rho_updates = check_int(max_rho_updates, "max_rho_updates", min_value=0)
    inner_iter = check_int(inner_iter, "inner_iter", min_value=1)
    anderson = check_int(anderson, "anderson", min_value=0)
    aa_safeguard = check_positive(aa_safeguard, "aa_safeguard")

    X, D, y, beta = problem.X, problem.Dmat, problem.y, problem.beta
    n, d = X.shape
    P = D.shape[1]
    squared = problem.loss == "squared"

    # --- state: one flat vector z = [V, Lam, ES, Nu | UZ, XA, GTs, GTnu] ----------------------------
    # V, Lam, UZ, GTs = G^T s, GTnu = G^T nu are d x 2P; ES = E o s, Nu, XA = X UZ are n x 2P. The first
    # four blocks are the ADMM state (and UZ too for the logistic loss, whose u-step starts from the
    # last u); the rest are linear in it, so Anderson combinations carry them along without products.
    Eb = np.tile(2.0 * D - 1.0, 2)
    lay = _Layout(d, n, P)
    z = np.zeros(lay.size)
    Vz, Lz, ESz, Nz, UZz, XAz, GSz, GNz = lay.views(z)
    start = problem.check_x0(x0)
    if initial_state is not None:
        UZ0, V0, L0, N0, ES0, rho = _load_state(initial_state, d, n, P)
        Vz[:], Lz[:], Nz[:], ESz[:], UZz[:] = V0, L0, N0, ES0, UZ0
    elif start is not None:
        UZz[:] = np.hstack(start)
        Vz[:] = UZz
        ESz[:] = np.maximum(c * Eb * (X @ UZz), 0.0) * Eb
    XAz[:] = X @ UZz
    GSz[:] = c * (X.T @ ESz)
    GNz[:] = c * (X.T @ (Eb * Nz))
    n_acc = lay.n_state + (0 if squared else lay.n_uz)   # accelerated (state) length

    FtY = None
    if squared:
        Fty = X.T @ (D * y[:, None])
        FtY = np.hstack([Fty, -Fty])
    # the Monitor starts before the factorisation so that res.time includes it
    mon = Monitor("admm", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    t0 = time.perf_counter()
    solver = USolver(problem, rho, linear_solver, c)
    factor_time = time.perf_counter() - t0
    c2XtX = (c * c) * solver.XtX
    Tbuf = np.empty((n, 2 * P))
    sq_pri = np.sqrt(2 * P * (d + n))
    sq_dual = np.sqrt(2 * P * d)

    n_evals = [0]

    def fixed_point_map(z):
        """One ADMM iteration z -> T(z) and its residuals."""
        n_evals[0] += 1
        V, Lam, ES, Nu, UZ, XA, GTs, GTnu = lay.views(z)
        zn = np.empty_like(z)
        Vn, Ln, ESn, Nn, UZn, XAn, GSn, GNn = lay.views(zn)
        # 1. u-step
        if squared:
            UZn[:] = solver.solve(FtY / rho + V - Lam + GTs - GTnu)
            XAn[:] = X @ UZn
        else:
            UZn[:], XAn[:] = UZ, XA
            for _ in range(inner_iter):
                g = problem.loss_grad(masked_rowsum(XAn, D))
                grad = (X.T @ masked_outer(D, g, Tbuf)) / rho + (UZn - V + Lam) + c2XtX @ UZn - (GTs - GTnu)
                UZn -= solver.solve(grad)
                XAn[:] = X @ UZn
        # 2.+4a. group prox and lam step
        Vn[:], Ln[:] = V, Lam
        r2u, _, u2, v2, _, _ = group_prox_dual_update(UZn, Ln, Vn, beta / rho, gamma, relaxation)
        # 3.+4b. slack projection and nu step, fused
        Nn[:], ESn[:] = Nu, ES
        r2s, g2, s2, _ = slack_dual_update(XAn, D, Nn, ESn, gamma, c, relaxation)
        GSn[:] = c * (X.T @ ESn)
        # G^T nu_new = G^T nu + gamma (alpha G^T G u + (1 - alpha) G^T s_old - G^T s_new)
        GNn[:] = GTnu + gamma * (relaxation * (c2XtX @ UZn) + (1.0 - relaxation) * GTs - GSn)
        r_pri = np.sqrt(r2u + r2s)
        r_dual = rho * np.linalg.norm((Vn - V) + (GSn - GTs))
        eps_pri = sq_pri * atol + rtol * max(np.sqrt(u2 + g2), np.sqrt(v2 + s2))
        eps_dual = sq_dual * atol + rtol * rho * np.linalg.norm(Ln + GNn)
        return zn, (r_pri, r_dual, eps_pri, eps_dual)

    aa = _Anderson(anderson, n_acc) if anderson > 0 else None
    converged = False
    n_rho_updates = n_rejected = 0
    r_pri = r_dual = np.inf
    Tz, res = fixed_point_map(z)
    k = 0
    while True:
        k += 1
        r_pri, r_dual, eps_pri, eps_dual = res
        UZn, XAn = lay.views(Tz)[4:6]
        fu = problem.loss_value(masked_rowsum(XAn, D)) + beta * np.linalg.norm(UZn, axis=0).sum()
        if mon.step(UZn, fun=fu, primal_residual=r_pri, dual_residual=r_dual, rho=rho):
            break
        if r_pri <= eps_pri and r_dual <= eps_dual:
            converged = True
            break
        if k >= maxiter:
            break
        # residual balancing (each residual relative to its own tolerance)
        if adaptive_rho and n_rho_updates < max_rho_updates and k % rho_update_every == 0:
            rp, rd = r_pri / max(eps_pri, 1e-300), r_dual / max(eps_dual, 1e-300)
            new_rho = rho * rho_tau if rp > rho_mu * rd else rho / rho_tau if rd > rho_mu * rp else rho
            if new_rho != rho:
                for blk in (1, 3, 7):           # scaled duals lam, nu and G^T nu follow 1/rho
                    lay.views(Tz)[blk][:] *= rho / new_rho
                rho = new_rho
                t1 = time.perf_counter()
                solver = USolver(problem, rho, linear_solver, c)
                factor_time += time.perf_counter() - t1
                n_rho_updates += 1
                if aa is not None:
                    aa.reset()
                z = Tz
                Tz, res = fixed_point_map(z)
                continue
        # next point: plain ADMM step T(z), or its Anderson extrapolation (safeguarded)
        if aa is None:
            z = Tz
            Tz, res = fixed_point_map(z)
            continue
        g = Tz[:n_acc] - z[:n_acc]
        z_aa = aa.update(g, Tz)
        if z_aa is None:
            z = Tz
            Tz, res = fixed_point_map(z)
            continue
        Tz_aa, res_aa = fixed_point_map(z_aa)
        if np.linalg.norm(Tz_aa[:n_acc] - z_aa[:n_acc]) <= aa_safeguard * np.linalg.norm(g):
            z, Tz, res = z_aa, Tz_aa, res_aa
        else:                                   # rejected: plain step, fresh memory
            n_rejected += 1
            aa.reset()
            aa.update(g, Tz)
            z = Tz
            Tz, res = fixed_point_map(z)
    V, Lam, ES, Nu, UZ = (a.copy() for a in lay.views(Tz)[:5])

    state = {"UZ": UZ.copy(), "V": V.copy(), "Lam": Lam.copy(), "Nu": Nu.copy(), "ES": ES.copy(), "rho": rho}
    extra = admm_result_fields(problem, V[:, :P], V[:, P:])
    return mon.result(problem.pack(V[:, :P], V[:, P:]), converged=converged, primal_residual=float(r_pri),
                      dual_residual=float(r_dual), rho=rho, linear_solver=solver.path, factor_time=factor_time,
                      n_rho_updates=n_rho_updates, n_aa_rejected=n_rejected, n_map_evals=n_evals[0], state=state, **extra)


def admm_result_fields(problem, V, W):
    """Certificates shared by the solvers: objective, recovered network and its agreement."""
    U1, alpha = problem.network_from(V, W)
    fun = problem.objective(V, W)
    net_out = np.maximum(problem.X @ U1, 0.0) @ alpha
    return {"v": V, "w": W, "fun": fun, "first_layer": U1, "second_layer": alpha, "n_neurons": int(alpha.size),
            "network_fun": problem.network_objective(U1, alpha),
            "network_gap": float(np.max(np.abs(net_out - problem.predict_convex(V, W)), initial=0.0)),
            "cone_violation": problem.cone_violation(V, W), "n_patterns": int(problem.n_patterns_)}


def _load_state(state, d, n, P):
    if not isinstance(state, dict):
        raise TypeError(f"initial_state must be a dict (res.state); got {type(state).__name__}")
    need = {"UZ": (d, 2 * P), "V": (d, 2 * P), "Lam": (d, 2 * P), "Nu": (n, 2 * P), "ES": (n, 2 * P)}
    out = []
    for key, shape in need.items():
        if key not in state:
            raise ValueError(f"initial_state is missing {key!r}")
        arr = np.array(state[key], dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"initial_state[{key!r}] must have shape {shape}; got {arr.shape} "
                             "(was it computed for another problem?)")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"initial_state[{key!r}] contains non-finite values")
        out.append(np.ascontiguousarray(arr))
    out.append(check_positive(state.get("rho", 1.0), "initial_state['rho']"))
    return tuple(out)


class _Layout:
    """Offsets of the blocks of the flat ADMM state vector."""

    def __init__(self, d, n, P):
        m = 2 * P
        self.shapes = [(d, m), (d, m), (n, m), (n, m), (d, m), (n, m), (d, m), (d, m)]
        sizes = [a * b for a, b in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.size = int(self.offsets[-1])
        self.n_state = int(self.offsets[4])
        self.n_uz = d * m

    def views(self, z):
        return [z[self.offsets[i]:self.offsets[i + 1]].reshape(shp) for i, shp in enumerate(self.shapes)]


class _Anderson:
    """Type-II Anderson acceleration (Walker and Ni 2011) with a ring memory.

    Given residuals ``g_k = T(z_k) - z_k`` (on the first ``n_acc`` entries) and images ``T(z_k)``, the
    next point is ``T(z_k) - dT gamma`` with ``gamma = argmin ||g_k - dG gamma||`` (a small Tikhonov term
    keeps the ``m x m`` normal equations well posed). The Gram matrix is updated one column at a time.
    """

    def __init__(self, m, n_acc):
        self.m, self.n_acc = m, n_acc
        self.reset()

    def reset(self):
        self.dG, self.dT = [], []
        self.g_prev = self.T_prev = None
        self.gram = np.zeros((0, 0))

    def update(self, g, Tz):
        if self.g_prev is not None:
            dg, dT = g - self.g_prev, Tz - self.T_prev
            if len(self.dG) == self.m:
                self.dG.pop(0)
                self.dT.pop(0)
                self.gram = self.gram[1:, 1:]
            row = np.array([a @ dg for a in self.dG] + [dg @ dg])
            k = len(self.dG)
            gram = np.empty((k + 1, k + 1))
            gram[:k, :k] = self.gram
            gram[k, :] = row
            gram[:, k] = row
            self.gram = gram
            self.dG.append(dg)
            self.dT.append(dT)
        self.g_prev, self.T_prev = g, Tz
        if not self.dG:
            return None
        rhs = np.array([a @ g for a in self.dG])
        reg = 1e-10 * np.trace(self.gram) + 1e-300
        try:
            coef = np.linalg.solve(self.gram + reg * np.eye(len(rhs)), rhs)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(coef)):
            return None
        z = Tz.copy()
        for c_j, dT in zip(coef, self.dT):
            z -= c_j * dT
        return z
