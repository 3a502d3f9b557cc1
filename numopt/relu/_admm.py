"""ADMM for the convex two-layer ReLU program (Bai, Gautam, Sojoudi, arXiv 2201.01965, Alg. 3.1).

Splitting (``u = (v_1..v_P, w_1..w_P)`` stacked as the ``d x 2P`` matrix ``[U Z]``):

.. math::

    \\min_{u, v, s}\\; \\ell(F u) + \\beta \\sum_g \\|v_g\\|_2 + \\mathbb 1(s \\ge 0)
    \\quad\\text{s.t.}\\quad u = v,\\; G u = s,

with ``F u = sum_i D_i X (u_i - z_i)`` and ``G u = (E_i X u_i, E_i X z_i)_i``, ``E_i = 2 D_i - I``.
Scaled ADMM with penalty ``rho`` and over-relaxation ``alpha`` (Boyd et al. 2011, 3.4.3):

1. ``u <- argmin l(Fu) + rho/2 ||u - v + lam||^2 + rho/2 ||G u - s + nu||^2``. For the squared loss
   this is the linear system ``A u = b``, ``A = I + G^T G + F^T F / rho`` (constant: factorised once,
   see :mod:`numopt.relu._linsolve`), ``b = F^T y / rho + v - lam + G^T (s - nu)``. For the logistic
   loss, whose Hessian in ``Fu`` is ``<= I``, ``rho A`` majorises the subproblem's Hessian, so
   ``u <- u - A^{-1} grad(u) / rho`` (``inner_iter`` such majorise-minimise steps) decreases it
   monotonically with the same cached factor.
2. ``v_g <- (1 - (beta/rho)/||uh_g + lam_g||)_+ (uh_g + lam_g)``, ``uh = alpha u + (1 - alpha) v``.
3. ``s <- (gh + nu)_+``, ``gh = alpha G u + (1 - alpha) s``.
4. ``lam <- lam + uh - v``, ``nu <- nu + gh - s``.

**One-state (Douglas-Rachford) form.** Steps 2-4 depend on the past only through ``q = (v + lam,
s + nu)``: ``v = shrink(q_v)``, ``lam = q_v - v``, ``s = (q_s)_+``, ``nu = (q_s)_-`` (so ``s - nu = |q_s|``),
and one iteration is ``q <- q + alpha ((u, G u) - (v, s))``. The solver iterates on ``q`` alone: half the
state of the textbook form, fewer passes over the ``n x 2P`` slack arrays, and a shorter vector for
Anderson acceleration. ``G^T q_s`` is linear in ``q_s`` and carried along, so one product
``X^T (e o |q_s|)`` per iteration yields ``G^T s`` and ``G^T nu`` too. The iterates are those of the
textbook ADMM (tested).

Stopping (Boyd et al. 2011, 3.3.1) on the primal residual ``r = ||(u - v, G u - s)||`` at the current
point and the dual residual ``d = rho ||(v - v_prev) + G^T (s - s_prev)||`` between consecutive points:
``r <= sqrt(2P(d + n)) atol + rtol max(||(u, Gu)||, ||(v, s)||)`` and
``d <= sqrt(2Pd) atol + rtol max(||F^T l'(0)||, rho ||lam + G^T nu||)``. The dual scale includes the loss
gradient at the zero network (``F^T y`` for the squared loss; OSQP and SCS scale by the linear term the
same way): Boyd's ``rho ||lam + G^T nu||`` alone is the *difference* of two large terms at the optimum,
30-50x smaller, and made the dual test 100x stricter than the primal one. Measured at the first
iterate that stays within 1e-4 of the CVXPY optimum (breast_cancer P = 8, 32 with beta = 1 and 10,
binary digits, a synthetic teacher): ``d / ||F^T y||`` = 0.5e-4 to 1.7e-4 and ``r / scale`` = 1e-5 to
3e-5, so ``rtol`` is roughly the relative objective accuracy reached. The objective is *not* a
stopping signal: it can undershoot the optimum while the iterates are infeasible.

Per iteration (squared loss): two passes over ``X`` (``X^T (e o |q_s|)`` and ``X [U Z]``), the u-solve
(Woodbury: one more masked pass each way and an ``n``-vector GEMV), and fused Numba passes over the
``n x 2P`` arrays (:mod:`numopt.relu._kernels`).

Acceleration (default): safeguarded Anderson acceleration of the ``K``-fold map ``q -> T^K(q)`` (``K = 10``
plain steps per extrapolation, memory 10; options ``anderson``, ``anderson_every``). Measured against the
restarted Nesterov momentum of the previous default it halves the iterations on breast_cancer at P = 32
(2,138 -> 1,081 to stay within 1e-4 of CVXPY, both at relaxation 1.6; 885 with the default 1.9) and cuts them
30-45% on three other sets; momentum remains available with ``anderson=0``.
"""
from __future__ import annotations

import time

import numpy as np

from .._monitor import Monitor
from .._threads import single_thread_blas
from .._validation import check_bool, check_choice, check_int, check_positive
from ._kernels import (aa_combine, aa_push, cone_abs, diff_norm, diff_norm2, dr_dual_step, dr_group_step, dr_slack_step, half_sq_dist,
                       masked_outer, masked_rowsum, momentum_point, shrink_rhs)
from ._linsolve import PATHS, USolver

_DEFAULT_ANDERSON = 10
_DEFAULT_RELAXATION = 1.9
# float32 iterations: measured (breast_cancer, binary digits; both losses) the same iterations and objective
# as float64 at rtol = 1e-3, up to 17% more iterations at 1e-4, and no convergence on breast_cancer at 1e-5
_F32_MIN_RTOL = 1e-4
# n d 2P up to which the iteration pins BLAS to one thread. Measured (2 cores, 100 iterations, float32 / float64):
# n d 2P = 1.1e6 (breast_cancer-sized) 0.027 vs 0.044 s / 0.037 vs 0.034 s with one vs two threads; 6e6 (digits)
# 0.112 vs 0.114 / 0.224 vs 0.206; 1e7 0.159 vs 0.116 / 0.266 vs 0.247: two threads pay from about 1e7 on
_SINGLE_THREAD_WORK = 4e6

__all__ = ["minimize_admm", "admm_result_fields", "residual_tolerances"]


def _default_rho(problem):
    # rho = beta makes the group threshold beta / rho = 1 and the scaled duals of active groups unit
    # norm (||rho lam_g|| = beta), whatever beta. Sweeps over rho in {0.1, 0.3, 1, 3, 10} (iterations to a
    # sustained 1e-4 objective gap vs CVXPY, relaxation 1.6) put the best rho at beta or within 3x of it on
    # every problem tried: breast_cancer P = 32 with beta = 0.1 (best 0.1), 1 (best 1) and 10 (best 10),
    # a planted-teacher synthetic set (beta = 1: best 1), binary digits (beta = 1: best 0.3, 3x fewer
    # iterations than at 1). Clipped for extreme beta.
    return float(np.clip(problem.beta, 1e-3, 1e2)) if problem.beta > 0 else 1e-2


def _default_cone_scale(problem):
    # G = c E X: scale the cone block so that c^2 X^T X has unit mean eigenvalue, i.e. the two
    # splittings (u = v and G u = s) weigh the same in the u-step. Without it the cone block dominates
    # A by a factor ~ n on standardised data and ADMM crawls (verified: thousands of iterations).
    X = problem.X
    return float(np.sqrt(X.shape[1] / max(np.sum(X * X), 1e-300)))


def residual_tolerances(problem, rtol, atol):
    """The stopping rule's tolerances (module docstring), shared by ``"admm"`` and ``"admm-rbcd"``.

    Returns ``tolerances(pri_scale, dual_scale) -> (eps_pri, eps_dual)`` with ``pri_scale =
    max(||(u, Gu)||, ||(v, s)||)`` and ``dual_scale = rho ||lam + G^T nu||``. The dual scale is floored by the loss
    gradient at the zero network, ``||F^T l'(0)||`` (for the squared loss ``||F^T y||``), the "q" term of
    OSQP/SCS-style relative tolerances.
    """
    n, d = problem.X.shape
    m = 2 * problem.Dmat.shape[1]
    g0 = problem.loss_grad(np.zeros(n))
    dual_ref = np.sqrt(2.0) * np.linalg.norm(problem.X.T @ (problem.Dmat * g0[:, None]))
    abs_pri, abs_dual = np.sqrt(m * (d + n)) * atol, np.sqrt(m * d) * atol

    def tolerances(pri_scale, dual_scale):
        return abs_pri + rtol * pri_scale, abs_dual + rtol * max(dual_ref, dual_scale)

    return tolerances


def check_admm_options(relaxation, rtol, atol, maxiter):
    """The options both ADMMs (nominal and robust) share, checked: ``(relaxation, rtol, atol, maxiter)``."""
    relaxation = check_positive(relaxation, "relaxation")
    if relaxation >= 2:
        raise ValueError(f"relaxation must lie in (0, 2); got {relaxation!r}")
    rtol = check_positive(rtol, "rtol", strict=False)
    atol = check_positive(atol, "atol", strict=False)
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol cannot both be 0")
    return relaxation, rtol, atol, check_int(maxiter, "maxiter", min_value=1)


def minimize_admm(problem, x0=None, *, callback=None, rho=None, cone_scale=1.0, relaxation=None, rtol=1e-6, atol=1e-8,
                  maxiter=20000, linear_solver="auto", adaptive_rho=False, rho_mu=10.0, rho_tau=2.0,
                  rho_update_every=10, max_rho_updates=30, momentum=True, restart_factor=1.0, anderson=None,
                  anderson_every=10, aa_safeguard=1.0, inner_iter=1, presolve=True,
                  initial_state=None, dtype=np.float64, active=None,
                  verbose=False, progress=False):
    """Solve :class:`~numopt.problems.TwoLayerReLU` by ADMM with a pre-factorised u-step.

    Solves the sampled convex program

    .. math::

        \\min_{v_i, w_i} \\ell\\Big(\\sum_i D_i X (v_i - w_i), y\\Big) + \\beta \\sum_i (\\|v_i\\|_2 + \\|w_i\\|_2)
        \\quad\\text{s.t.}\\quad (2D_i - I) X v_i \\ge 0,\\; (2D_i - I) X w_i \\ge 0

    by the splitting ``u = v``, ``G u = s >= 0`` (see the module docstring for the iteration). The
    u-system ``I + G^T G + F^T F / rho`` is factorised **once** per ``rho`` (decoupled into a ``d x d``
    and a ``dP x dP`` Cholesky, or the ``n x n`` Woodbury form, whichever a flop model of the solve
    finds cheaper: :func:`numopt.relu._linsolve.path_flops`).

    Parameters
    ----------
    problem : TwoLayerReLU
    x0 : array_like, shape (2 * P * d,), optional
        Warm start of ``u = v`` (layout ``[v_1..v_P, w_1..w_P]``); duals start at zero.

    Options
    -------
    rho : float, optional
        ADMM penalty. Default: ``beta`` clipped to ``[1e-3, 1e2]`` (standardised data; the measured
        sweeps behind this rule are in ``_default_rho``).
    cone_scale : float or None
        Constant ``c`` in ``G u = c (E_i X u_i)_i``. ``None`` scales the cone block so that ``c^2 X^T X``
        has unit mean eigenvalue. Measured on breast_cancer (P = 32, beta = 1) that was *slower* than
        ``c = 1`` (the paper's splitting), which is the default.
    relaxation : float or None
        Over-relaxation ``alpha`` in ``(0, 2)`` (Boyd et al. 3.4.3): the v-, s- and dual steps use
        ``alpha u + (1 - alpha) v_old`` and ``alpha G u + (1 - alpha) s_old``. The dual step is 1 (the
        one-state form needs it). ``None`` (default): 1.9 for the nominal program, the robust program's own
        default (1.6) when ``adversarial_eps > 0``. Measured with the default Anderson acceleration (iterations
        until the objective stays within 1e-4 of CVXPY, alpha = 1.6 -> 1.9): breast_cancer P = 8: 647 -> 650,
        P = 32: 1,081 -> 885; binary digits: 601 -> 511; synthetic teacher: 1,831 -> 1,436; breast_cancer P = 32
        with beta = 0.1: 1,501 -> 1,291, beta = 10: 771 -> 651, no bias: 846 -> 739; logistic loss: 2,742 -> 2,371;
        digits n = 300, P = 32: 363 -> 323 (1.3: 21% more than 1.6; 1.7, 1.8 in between). Any ``alpha < 2`` keeps
        plain relaxed ADMM convergent, the fallback of the safeguarded acceleration.
    rtol, atol : float
        Relative and absolute tolerances of the residual stopping rule (module docstring); ``rtol`` is
        about the relative objective accuracy reached (measured 1e-4 -> within ~1e-4 of CVXPY).
    maxiter : int
        Maximum ADMM iterations.
    linear_solver : {"auto", "cholesky", "woodbury"}
        u-step path; ``"auto"`` takes the one with fewer flops for a solve of ~1000 iterations
        (``"cholesky"`` roughly while ``dP`` is below ``n``, ``"woodbury"`` beyond).
    adaptive_rho : bool
        Residual balancing (Boyd 3.4.1): every ``rho_update_every`` iterations, if one residual exceeds
        ``rho_mu`` times the other (each divided by its tolerance), ``rho`` is multiplied or divided by
        ``rho_tau``. **A new rho means a new factorisation** (one ``n x n`` or ``dP x dP`` Cholesky),
        so it is limited to ``max_rho_updates`` changes; factors are cached per ``rho`` on the problem.
    rho_mu, rho_tau : float
        Balancing thresholds (``> 1``).
    rho_update_every, max_rho_updates : int
        Balancing period and budget.
    momentum : bool
        Nesterov momentum on the one-state iteration with adaptive restart (the "fast ADMM" of Goldstein,
        O'Donoghue, Setzer and Baraniuk, SIAM J. Imaging Sci. 2014): the map is evaluated at
        ``q_k + theta_k (q_k - q_{k-1})``, ``theta_k = (j - 1) / (j + 2)`` with ``j`` the steps since the
        last restart, and ``j`` is reset to 0 whenever the fixed-point residual ``||T(q) - q||`` grows by
        more than ``restart_factor``. One fused pass per iteration. **Only used with** ``anderson=0`` (the
        default Anderson acceleration replaces it). Safeguard:
        if the residual ever exceeds 10x its best value, momentum is switched off for the rest of the run
        (``res.momentum_dropped``), and plain relaxed ADMM, convergent from any point, takes over.
        Measured (rtol = 1e-5, six problems: breast_cancer P = 8, 32 with beta 0.1, 1, 10, binary
        digits, a synthetic teacher): 17-25% fewer iterations than plain ADMM at the same accuracy.
    restart_factor : float
        Restart threshold of the momentum (``>= 1`` keeps momentum while the residual does not grow).
    anderson : int or None
        Memory ``m`` of the Anderson (type-II) acceleration of the one-state fixed-point map (0: plain ADMM, or
        momentum). ``None`` (default): 10 for the nominal program; the robust program (``adversarial_eps > 0``)
        keeps its own default (off). The acceleration is applied to the ``K``-fold map ``T^K``
        (``K = anderson_every``): from a start ``z0`` the solver takes ``K`` plain ADMM steps (each one a
        monitored iteration with its own stopping test), then extrapolates from the pairs ``(z0, T^K(z0))`` of
        the last ``m`` chains. The extrapolated start is kept only if its chain's residual ``||T^K(z) - z||`` is
        at most ``aa_safeguard`` times the previous chain's; otherwise the solver continues from the plain point
        ``T^K(z0)`` with a fresh memory (``res.n_aa_rejected``): the accepted iterates converge as plain relaxed
        ADMM does, and a rejected trial chain costs ``K`` iterations (measured: 0-9% of the chains rejected on nine
        problems; the worst case, every other chain rejected, would double the iterations of plain ADMM).
        ``T^K`` has the fixed points of ``T`` (``T`` is averaged), so the solution is unchanged.
    anderson_every : int
        ``K`` above. ``K = 1`` is classic Anderson on ``T``. Why ``K > 1``: the bookkeeping of Anderson(m)
        reads ``2 m`` state-sized vectors per step (the state is ``n x 2P`` slacks, 40k numbers at ``n = 569,
        P = 32``), as much memory traffic as an ADMM iteration; on ``T^K`` it is paid once per ``K``
        iterations, and the extrapolation over the longer chains removed as many iterations as classic
        Anderson(20-30) did. Measured (iterations until the objective stays within 1e-4 of CVXPY; momentum
        vs Anderson ``m = 10, K = 10``, both at relaxation 1.6): breast_cancer beta = 1 P = 8: 999 vs 647, P = 32: 2,138 vs 1,081;
        binary digits n = 600 P = 16: 1,071 vs 601; synthetic teacher P = 32: 2,625 vs 1,831 (``m`` in 6-15,
        ``K`` in 6-12 all within 10% of these). More settings in docs/relu.md.
    aa_safeguard : float
        Safeguard factor of the Anderson step.
    inner_iter : int
        Majorise-minimise steps of the u-subproblem per iteration (logistic loss only).
    presolve : bool
        Robust program (``adversarial_eps > 0``) only: drop the patterns whose robust cone is ``{0}`` before
        factorising (see :func:`numopt.relu._robust.minimize_robust`).
    initial_state : dict, optional
        ``res.state`` of an earlier run on the same problem (patterns): full warm start, duals included.
    dtype : {numpy.float64, numpy.float32}
        Precision of the iteration: the state, ``X``, the patterns and the cached factors (the residual
        norms, the objective and the result are always float64; the factors are computed in float64 and
        rounded, except a well-conditioned Woodbury ``S``, inverted in float32: :class:`~numopt.relu._linsolve.USolver`).
        float32 halves the memory traffic of every product and pass (measured: the products of one
        iteration 2.5x faster at ``n = 1437, d = 65, P = 32``). Its rounding, about ``1e-7`` relative
        times the conditioning of the u-system (``cond S <= 1 + 2P / (rho c^2)``), bounds how far the iterates
        can settle: ``rtol < 1e-4`` raises ``ValueError`` (measured on breast_cancer and binary digits, both
        losses: at ``rtol = 1e-3`` the same iteration counts and objective as float64; at ``1e-4`` up to 17%
        more iterations; at ``1e-5`` breast_cancer never met the tolerance). The estimators use it at
        ``tol >= 1e-3``. Nominal program only.
    active : array_like of bool, shape (2 * P,), optional
        Which neurons may be non-zero (layout ``[v_1..v_P, w_1..w_P]``); the others are fixed at zero, i.e. the
        program gains the constraints ``v_i = 0`` / ``w_i = 0`` for them. In the splitting this only changes the
        v-step: the prox of ``beta ||v_g|| + 1(v_g = 0)`` is the projection onto ``{0}`` (a group threshold of
        ``+inf``). The u-system, hence the cached factorisation, is the same, so a width-capped refit
        (:class:`~numopt.relu.ConvexReLUClassifier`'s ``max_width``) reuses it and warm-starts from the uncapped
        ``res.state``. ``None``: every neuron. Nominal program only.
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
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32; got {dtype!r}")
    if problem.robust:  # adversarial_eps > 0: the robust program has its own splitting (numopt.relu._robust)
        if active is not None:
            raise ValueError("active (neurons fixed at zero) is supported for the nominal program only "
                             "(adversarial_eps = 0)")
        if dt != np.float64:
            raise ValueError("dtype=float32 is supported for the nominal program only (adversarial_eps = 0)")
        from ._robust import minimize_robust
        return minimize_robust(problem, x0, callback=callback, rho=rho, relaxation=1.6 if relaxation is None else relaxation,
                               rtol=rtol, atol=atol,
                               maxiter=maxiter, adaptive_rho=adaptive_rho,
                               anderson=0 if anderson is None else anderson,
                               presolve=presolve, initial_state=initial_state, verbose=verbose,
                               progress=progress)
    rho = _default_rho(problem) if rho is None else check_positive(rho, "rho")
    c = _default_cone_scale(problem) if cone_scale is None else check_positive(cone_scale, "cone_scale")
    relaxation = _DEFAULT_RELAXATION if relaxation is None else relaxation
    relaxation, rtol, atol, maxiter = check_admm_options(relaxation, rtol, atol, maxiter)
    if dt == np.float32 and rtol < _F32_MIN_RTOL:
        raise ValueError(f"dtype=float32 needs rtol >= {_F32_MIN_RTOL:g} (its rounding keeps tighter tolerances "
                         f"out of reach); got rtol={rtol:g}")
    linear_solver = check_choice(linear_solver, "linear_solver", PATHS)
    adaptive_rho = check_bool(adaptive_rho, "adaptive_rho")
    rho_mu = check_positive(rho_mu, "rho_mu")
    rho_tau = check_positive(rho_tau, "rho_tau")
    if rho_mu <= 1 or rho_tau <= 1:
        raise ValueError("rho_mu and rho_tau must be > 1")
    rho_update_every = check_int(rho_update_every, "rho_update_every", min_value=1)
    max_rho_updates = check_int(max_rho_updates, "max_rho_updates", min_value=0)
    inner_iter = check_int(inner_iter, "inner_iter", min_value=1)
    anderson = _DEFAULT_ANDERSON if anderson is None else check_int(anderson, "anderson", min_value=0)
    anderson_every = check_int(anderson_every, "anderson_every", min_value=1)
    momentum = check_bool(momentum, "momentum") and anderson == 0
    restart_factor = check_positive(restart_factor, "restart_factor")
    aa_safeguard = check_positive(aa_safeguard, "aa_safeguard")

    y, beta = problem.y, problem.beta
    n, d = problem.X.shape
    P = problem.Dmat.shape[1]
    m = 2 * P
    squared = problem.loss == "squared"
    if active is not None:
        active = np.asarray(active)
        if active.dtype != np.bool_:
            raise TypeError(f"active must be a boolean array; got dtype {active.dtype}")
        if active.shape != (m,):
            raise ValueError(f"active must have shape ({m},) (one flag per neuron, [v_1..v_P, w_1..w_P]); "
                             f"got {active.shape}")
    if dt == np.float32 and not np.max(np.abs(problem.X), initial=0.0) < 1e18:
        # products of X in float32 overflow long before X itself does: keep well inside the range
        raise ValueError("X has entries beyond 1e18, too large for dtype=float32; standardise X or use float64")
    start = problem.check_x0(x0)
    state0 = None if initial_state is None else _load_state(initial_state, d, n, P)
    if state0 is not None:
        rho = state0[-1]                            # the state's rho goes on

    def thresholds(rho):
        # per-group v-step thresholds: beta / rho, +inf (the projection onto {0}) for a neuron fixed at zero
        return np.full(m, beta / rho) if active is None else np.where(active, beta / rho, np.inf)

    thr = thresholds(rho)
    # the Monitor starts before the factorisation so that res.time includes it
    mon = Monitor("admm", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    t0 = time.perf_counter()
    solver = USolver(problem, rho, linear_solver, c, dt)
    factor_time = time.perf_counter() - t0
    X, D = solver.X, solver.D                   # problem.X, problem.Dmat in the iteration's precision (cached)

    # --- Douglas-Rachford state z = [Qv, Qs, (U), GQ, (XU)] ---------------------------------------
    # Qv = v + lam (d x 2P) and Qs = s + nu (n x 2P): the relaxed ADMM is a fixed-point iteration on
    # q = (Qv, Qs) alone (v = shrink(Qv), lam = Qv - v, s = (Qs)_+, nu = -(Qs)_-). GQ = G^T Qs is linear
    # in Qs and carried along so that G^T s and G^T nu come for free: one GEMM gives G^T (s - nu) =
    # G^T |Qs|. The logistic u-step starts from the last u, so U (and XU = X U) join the state.
    lay = _Layout(d, n, m, squared)
    z = np.zeros(lay.size, dt)
    blk = lay.views(z)
    E2 = np.tile(2.0 * D - 1.0, 2)              # e_i = 2 d_i - 1 for both families (n x 2P)
    if state0 is not None:
        UZ0, V0, L0, N0, ES0, _ = state0
        blk["Qv"][:] = V0 + L0
        blk["Qs"][:] = E2 * ES0 + N0
        if not squared:
            blk["U"][:] = UZ0
    elif start is not None:
        blk["Qv"][:] = np.hstack(start)
        blk["Qs"][:] = np.maximum(c * E2 * (X @ blk["Qv"]), 0.0)
        if not squared:
            blk["U"][:] = blk["Qv"]
    blk["GQ"][:] = c * (X.T @ (E2 * blk["Qs"]))
    if not squared:
        blk["XU"][:] = X @ blk["U"]
    n_acc = lay.n_acc

    FtYr = None
    if squared:
        Fty = problem.X.T @ (problem.Dmat * y[:, None])
        FtYr = np.hstack([Fty, -Fty]).astype(dt, copy=False)
    tolerances = residual_tolerances(problem, rtol, atol)
    c2XtX = (c * c) * solver.XtX
    # scratch buffers of the map (reused every evaluation); V and GS are fresh per evaluation because the
    # dual residual compares them with the previous iterate's
    Tb, XUb, Ub, yhat = np.empty((n, m), dt), np.empty((n, m), dt), np.empty((d, m), dt), np.empty(n)
    GAb, rhsb, GGUb = np.empty((d, m), dt), np.empty((d, m), dt), np.empty((d, m), dt)
    XT = X.T
    b0 = [None, np.zeros((d, m), dt)]                 # [rho, F^T y / rho] (squared loss; zeros otherwise)
    n_evals = [0]

    def fixed_point_map(z, Tz):
        """One relaxed ADMM step ``Tz = T(z)``; returns the iterate's certificates at ``z``."""
        n_evals[0] += 1
        b, Tb_ = lay.views(z), lay.views(Tz)
        Qv, Qs, GQ = b["Qv"], b["Qs"], b["GQ"]
        GA = np.matmul(XT, cone_abs(Qs, D, c, Tb), out=GAb)      # G^T (s - nu)
        if squared and b0[0] != rho:                            # F^T y / rho, recomputed only when rho changes
            b0[:] = [rho, FtYr / rho]
        V = np.empty((d, m), dt)
        shrink_rhs(Qv, GA, b0[1], thr, V, rhsb)                 # v = prox(Qv); rhs = (v - lam) + G^T (s - nu) [+ F^T y / rho]
        if squared:
            U = solver.solve(rhsb, out=Ub)
            XU = np.matmul(X, U, out=XUb)
        else:
            U, XU = Ub, XUb
            U[:], XU[:] = b["U"], b["XU"]
            for _ in range(inner_iter):
                g = problem.loss_grad(masked_rowsum(XU, D))
                grad = (XT @ masked_outer(D, g, Tb)) / rho + U + c2XtX @ U - rhsb
                U -= solver.solve(grad)
                np.matmul(X, U, out=XU)
            Tb_["U"][:], Tb_["XU"][:] = U, XU
        r2u, u2, v2, l2, unorm = dr_group_step(U, Qv, V, relaxation, Tb_["Qv"])
        r2s, g2, s2 = dr_slack_step(XU, D, Qs, c, relaxation, Tb_["Qs"], yhat)
        GS = np.empty((d, m), dt)                                   # G^T s; Tz's G^T Qs = GQ + alpha (G^T G u - G^T s)
        lgn2 = dr_dual_step(GQ, GA, np.matmul(c2XtX, U, out=GGUb), Qv, V, relaxation, Tb_["GQ"], GS)
        fun_u = (half_sq_dist(yhat, y) if squared else problem.loss_value(yhat)) + beta * unorm
        return {"V": V, "GS": GS, "U": U, "r2": r2u + r2s, "lam_gn": np.sqrt(lgn2),
                "nu_pri": max(np.sqrt(u2 + g2), np.sqrt(v2 + s2)), "fun": fun_u}

    def certificates(info, prev):
        """Primal residual at z and dual residual between the previous accepted iterate and z."""
        r_pri = np.sqrt(info["r2"])
        r_dual = np.inf if prev is None else rho * diff_norm(info["V"], prev["V"], info["GS"], prev["GS"])
        eps_pri, eps_dual = tolerances(info["nu_pri"], rho * info["lam_gn"])
        return r_pri, r_dual, eps_pri, eps_dual

    # a small program's products are too small for threaded BLAS (measured below _SINGLE_THREAD_WORK)
    with single_thread_blas(n * d * m <= _SINGLE_THREAD_WORK):
        aa = _Anderson(anderson, n_acc, lay.size, dt) if anderson > 0 else None
        if aa is not None:
            # Anderson on the K-fold map T^K (K = anderson_every): chains of K plain steps from a start Z0, written
            # alternately into A and B; the memory keeps the plain continuation T^K(z0) while an extrapolation is on trial
            Z0, A_, B_ = (np.empty_like(z) for _ in range(3))
            Z0[:] = z
            z = Z0
            chain_pos, checking, g_ref = 0, False, np.inf
        if momentum:
            T_prev = np.empty_like(z)
            n_mom = 0                                   # steps since the last (re)start of the momentum
            r_last = np.inf
        r_best, n_momentum_off = np.inf, 0
        converged = False
        n_rho_updates = n_rejected = 0
        r_pri = r_dual = np.inf
        Tz = np.empty_like(z) if aa is None else A_
        info = fixed_point_map(z, Tz)
        prev = None
        k = 0
        while True:
            k += 1
            r_pri, r_dual, eps_pri, eps_dual = certificates(info, prev)
            if mon.step(info["U"], fun=info["fun"], primal_residual=r_pri, dual_residual=r_dual, rho=rho):
                break
            if r_pri <= eps_pri and r_dual <= eps_dual:
                converged = True
                break
            if k >= maxiter:
                break
            prev = info
            # residual balancing (each residual relative to its own tolerance)
            if adaptive_rho and n_rho_updates < max_rho_updates and k % rho_update_every == 0 and np.isfinite(r_dual):
                rp, rd = r_pri / max(eps_pri, 1e-300), r_dual / max(eps_dual, 1e-300)
                new_rho = rho * rho_tau if rp > rho_mu * rd else rho / rho_tau if rd > rho_mu * rp else rho
                if new_rho != rho:
                    # continue from the current iterate with the scaled duals rescaled by rho_old / rho_new
                    blk = lay.views(z)
                    sc = rho / new_rho
                    Qs = blk["Qs"]
                    Sp = np.maximum(Qs, 0.0)
                    blk["Qv"][:] = info["V"] + sc * (blk["Qv"] - info["V"])          # v + (rho_old / rho_new) lam
                    blk["Qs"][:] = Sp + sc * (Qs - Sp)
                    blk["GQ"][:] = info["GS"] + sc * (blk["GQ"] - info["GS"])
                    rho, thr = new_rho, thresholds(new_rho)
                    t1 = time.perf_counter()
                    solver = USolver(problem, rho, linear_solver, c, dt)
                    factor_time += time.perf_counter() - t1
                    n_rho_updates += 1
                    if aa is not None:                  # a fresh chain from the rescaled point, fresh memory
                        aa.reset()
                        if z is not Z0:
                            Z0[:] = z
                        z, Tz, chain_pos, checking = Z0, A_, 0, False
                    if momentum:
                        n_mom, r_last = 0, np.inf
                    info = fixed_point_map(z, Tz)
                    prev = None
                    continue
            if momentum and r_pri > 10.0 * r_best:
                # momentum has no convergence guarantee here: if the residual ever climbs an order of magnitude
                # above its best, drop it for good; plain relaxed ADMM converges from any point (alpha < 2)
                momentum = False
                n_momentum_off += 1
            r_best = min(r_best, r_pri)
            if momentum:
                # restart when the fixed-point residual ||T(z) - z|| = alpha r_pri grows
                if r_pri > restart_factor * r_last:
                    n_mom = 0
                r_last = r_pri
                theta = (n_mom - 1.0) / (n_mom + 2.0) if n_mom > 0 else 0.0
                momentum_point(Tz, T_prev, z, theta)            # z is spent: T(z) is in Tz
                Tz, T_prev = T_prev, Tz                         # T(z) becomes the previous image; no copy
                n_mom += 1
                info = fixed_point_map(z, Tz)
                continue
            # next point: the plain step T(z), or (Anderson) the next step of the chain / an extrapolation of T^K
            if aa is None:
                z, Tz = Tz, z
                info = fixed_point_map(z, Tz)
                continue
            chain_pos += 1
            if chain_pos < anderson_every:                  # inside a chain: plain step, ping-pong buffers
                z, Tz = Tz, (B_ if Tz is A_ else A_)
                info = fixed_point_map(z, Tz)
                continue
            chain_pos = 0                                   # Tz = T^K(z0): one Anderson step on the map T^K
            g_norm = np.sqrt(diff_norm2(Tz, Z0, n_acc))
            if checking and g_norm > aa_safeguard * g_ref:
                n_rejected += 1                             # rejected: continue plainly from T^K of the last accepted start
                aa.reset(keep_last=True)
                Z0[:] = aa.T_prev
                checking = False
            else:
                aa.push(Z0, Tz)
                g_ref = g_norm
                checking = aa.extrapolate(Z0)               # try the extrapolation (the plain continuation stays in aa)
                if not checking:
                    Z0[:] = Tz
            z, Tz = Z0, A_
            info = fixed_point_map(z, Tz)
    blk = lay.views(z)
    f64 = np.float64
    V, Qs = info["V"].astype(f64), blk["Qs"].astype(f64)
    Lam = blk["Qv"].astype(f64) - V
    S = np.maximum(Qs, 0.0)
    state = {"UZ": info["U"].astype(f64), "V": V.copy(), "Lam": Lam, "Nu": Qs - S,
             "ES": E2.astype(f64) * S, "rho": rho}
    extra = admm_result_fields(problem, V[:, :P], V[:, P:])
    return mon.result(problem.pack(V[:, :P], V[:, P:]), converged=converged, primal_residual=float(r_pri),
                      dual_residual=float(r_dual), rho=rho, linear_solver=solver.path, factor_time=factor_time,
                      n_rho_updates=n_rho_updates, n_aa_rejected=n_rejected, momentum_dropped=bool(n_momentum_off),
                      n_map_evals=n_evals[0], state=state, dtype=dt.name, **extra)


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
    """Named blocks of the flat Douglas-Rachford state vector (accelerated blocks first)."""

    def __init__(self, d, n, m, squared):
        names = ["Qv", "Qs"] + ([] if squared else ["U"])
        acc = {"Qv": (d, m), "Qs": (n, m), "U": (d, m)}
        self.shapes = [(k, acc[k]) for k in names] + [("GQ", (d, m))] + ([] if squared else [("XU", (n, m))])
        sizes = [a * b for _, (a, b) in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.size = int(self.offsets[-1])
        self.n_acc = int(self.offsets[len(names)])

        self._cache = {}

    def views(self, z):
        """``{name: block view}`` of ``z``; cached per buffer (the hot loop cycles through a few buffers)."""
        key = id(z)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is z:
            return hit[1]
        views = {k: z[self.offsets[i]:self.offsets[i + 1]].reshape(shp) for i, (k, shp) in enumerate(self.shapes)}
        if len(self._cache) >= 8:               # Anderson allocates fresh points: keep the cache small
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (z, views)           # holding z keeps its id from being reused while cached
        return views


class _Anderson:
    """Type-II Anderson acceleration (Walker and Ni 2011) with a ring memory of ``m`` differences.

    Given pairs ``(z_k, T_k)`` (``T_k`` the image of ``z_k`` under the accelerated map) with residuals
    ``g_k = T_k - z_k`` on the first ``n_acc`` entries, the next point is ``T_k - dT gamma`` with
    ``gamma = argmin ||g_k - dG gamma||`` (a small Tikhonov term keeps the ``m x m`` normal equations well
    posed). The Gram matrix gains one row per step and the right-hand side ``dG^T g_k`` is updated from
    ``dG^T g_{k-1}``. Per step: one fused pass that forms the new differences in place (:func:`aa_push`), one
    ``m x n_acc`` GEMV for the Gram row and ``m`` axpys for the combination (:func:`aa_combine`), all into
    preallocated buffers.
    """

    def __init__(self, m, n_acc, size, dtype=np.float64):
        self.m, self.n_acc = m, n_acc
        # residual differences (the Gram matrix) in float64 whatever the state's dtype: the m x m normal
        # equations are ill-conditioned; the state-sized differences follow the state
        self.dG = np.empty((m, n_acc))
        self.dT = np.empty((m, size), dtype)
        self.gram = np.zeros((m, m))
        self.rhs = np.zeros(m)
        self.g_prev = np.empty(n_acc)
        self.T_prev = np.empty(size, dtype)
        self.has_prev = False
        self.reset()

    def reset(self, keep_last=False):
        """Forget the differences; ``keep_last`` keeps the last pair (the next push then forms a difference)."""
        self.k = self.pos = 0
        if not keep_last:
            self.has_prev = False

    def push(self, z, Tz):
        """Add the pair ``(z, T(z))`` (one fused pass over the state)."""
        if not self.has_prev:
            aa_push(Tz, z, self.n_acc, self.g_prev, self.T_prev, self.g_prev, self.T_prev, True)
            self.has_prev = True
            return
        j = self.pos
        self._record(j, aa_push(Tz, z, self.n_acc, self.g_prev, self.T_prev, self.dG[j], self.dT[j], False))

    def update(self, g, Tz):
        """Add the pair given by its residual ``g`` and image ``Tz``; return the Anderson point (new array) or None."""
        if self.has_prev:
            j = self.pos
            np.subtract(g, self.g_prev, out=self.dG[j])
            np.subtract(Tz, self.T_prev, out=self.dT[j])
            self._record(j, self.dG[j] @ g)
        self.g_prev[:] = g
        self.T_prev[:] = Tz
        self.has_prev = True
        out = np.empty_like(Tz)
        return out if self.extrapolate(out) else None

    def _record(self, j, dg_g):
        """Gram row and right-hand side once ``dG[j]`` holds the new difference ``dg`` (``dg_g = dg^T g_new``)."""
        k = min(self.k + 1, self.m)
        row = self.dG[:k] @ self.dG[j]
        self.gram[j, :k] = row
        self.gram[:k, j] = row
        # dG_i^T g_new = dG_i^T g_prev + dG_i^T dg for the kept columns; the new one is dg^T g_new
        rhs = self.rhs[:k] + row
        rhs[j] = dg_g
        self.rhs[:k] = rhs
        self.k, self.pos = k, (j + 1) % self.m

    def extrapolate(self, out):
        """Write the Anderson point ``T_last - dT gamma`` into ``out``; ``False`` (``out`` untouched) without one."""
        k = self.k
        if k == 0:
            return False
        gram = self.gram[:k, :k]
        reg = 1e-10 * np.trace(gram) + 1e-300
        try:
            coef = np.linalg.solve(gram + reg * np.eye(k), self.rhs[:k])
        except np.linalg.LinAlgError:
            return False
        if not np.all(np.isfinite(coef)):
            return False
        aa_combine(self.T_prev, self.dT[:k], coef, out)
        return True
