"""ADMM with randomized block coordinate descent u-steps (``method="admm-rbcd"``): no factorisation.

The splitting is the one of :mod:`numopt.relu._admm` (``u = v``, ``G u = s >= 0``, ``u = [v_1..v_P, w_1..w_P]``
stacked as the ``d x 2P`` matrix ``U``), but the u-step

.. math::

    \\min_U \\; \\varphi(U) = \\ell(F U) + \\frac{\\rho}{2}\\|U - Z + \\Lambda\\|^2
        + \\frac{\\rho}{2}\\|E \\circ (X U) - S + N\\|^2

is not solved through a cached factor of its ``2dP x 2dP`` system. It is minimised approximately by randomized
block coordinate descent over blocks of patterns (Bai, Gautam & Sojoudi's route for large problems): for a block
``B`` (``b`` patterns, both families), with ``r = l'(F U)``,

.. math::

    g_B = s \\circ X^T (D_B \\circ r) + \\rho (C U_B - Z_B + \\Lambda_B - X^T (E_B \\circ (S_B - N_B))),
    \\qquad C = I + X^T X,

(``s = +1`` on the ``v`` columns, ``-1`` on the ``w`` columns; ``E_i^2 = I`` makes the cone block's Hessian
``rho X^T X`` for every column). Two changes to the paper's steps, both derived, both tested:

* **Preconditioned direction** ``p_B = C^{-1} g_B``. The ``rho``-part of the Hessian is ``rho (I (x) C)``
  exactly, so in the ``C``-metric it is ``rho I``; the loss part ``F_B C^{-1} F_B^T`` has eigenvalues at most
  ``2b`` (``X C^{-1} X^T`` has spectrum in ``[0, 1)``). The block condition number is at most ``1 + 2b/rho``,
  whatever the scaling of ``X``: plain gradient steps crawl at ``cond(X^T X)``. ``C`` is ``d x d``: the memory
  stays ``O(n P + d P + d^2)``, no ``n x n`` or ``dP x dP`` matrix.
* **Step without backtracking** instead of Armijo's: ``t = <g_B, p_B> / kappa`` with
  ``kappa = ||F_B p_B||^2 + rho (||p_B||^2 + ||X p_B||^2)``, the exact minimiser along ``p_B`` for the squared
  loss and the minimiser of a quadratic majoriser for the logistic loss (its Hessian in ``F U`` is ``<= I``),
  so every block step decreases ``phi`` and needs no trial evaluations.

Each ADMM iteration runs ``inner_epochs`` passes over the blocks in a fresh random order, warm-started from the
last ``U`` (an inexact ADMM whose u-step error shrinks with the residuals). Then the over-relaxed v-, s- and dual
steps of the textbook scaled ADMM, and the stopping rule of ``"admm"`` on the primal and dual residuals.

Cost per epoch: about three passes of ``X`` over the ``2P`` columns (the block gradients, ``X p_B``, and one
``X^T (E o (S - N))`` per iteration), as one exact ADMM iteration, but no ``n^3`` / ``(dP)^3`` factorisation
and no ``n^2`` memory: the method for problems whose u-system does not fit (the ``"admm"`` Woodbury path needs
an ``n x n`` matrix, its Cholesky path a ``dP x dP`` one). On problems where a factor fits, ``"admm"`` is faster.
"""
from __future__ import annotations

import numpy as np

from .._monitor import Monitor
from .._validation import check_int, check_positive, check_random_state
from .._threads import single_thread_blas
from ._admm import (_SINGLE_THREAD_WORK, _default_rho, admm_result_fields, check_admm_options,
                    residual_tolerances)
from ._kernels import group_shrink, masked_rowsum
from ._linsolve import spd_inverse

__all__ = ["minimize_admm_rbcd"]


def minimize_admm_rbcd(problem, x0=None, *, callback=None, rho=None, relaxation=1.6, rtol=1e-4, atol=1e-8,
                       maxiter=5000, block_size=4, inner_epochs=1, max_inner_epochs=None, random_state=None, verbose=False,
                       progress=False):
    """Solve :class:`~numopt.problems.TwoLayerReLU` by ADMM whose u-steps are randomized block coordinate descent.

    Same convex program and certificates as ``method="admm"``, without factorising the u-system (see the
    module docstring for the block steps).

    Parameters
    ----------
    problem : TwoLayerReLU
        Nominal program (``adversarial_eps = 0``).
    x0 : array_like, shape (2 * P * d,), optional
        Warm start of ``u = v`` (layout ``[v_1..v_P, w_1..w_P]``); duals start at zero.

    Options
    -------
    rho : float, optional
        ADMM penalty. Default: ``beta`` clipped to ``[1e-3, 1e2]`` (as ``"admm"``).
    relaxation : float
        Over-relaxation ``alpha`` in ``(0, 2)`` of the v-, s- and dual steps.
    rtol, atol : float
        Tolerances of the residual stopping rule of ``"admm"``.
    maxiter : int
        Maximum ADMM iterations.
    block_size : int
        Patterns per block ``b`` (each block carries ``2b`` neurons). The block condition number is at most
        ``1 + 2b / rho``; larger blocks mean fewer, better-vectorised steps.
    inner_epochs, max_inner_epochs : int
        Passes over all blocks per ADMM iteration: ``inner_epochs``, then, if ``max_inner_epochs`` (default: the
        same) is larger, more while the u-subproblem's gradient norm exceeds the ADMM's dual residual (or its
        tolerance, if larger). That gradient norm is also a stopping certificate, checked when both residuals
        pass (``<=`` the dual tolerance; ``res.u_residual``), so the returned point solves its last u-step to
        the dual tolerance. Measured on breast_cancer (P = 16, both losses) extra epochs changed neither the
        iterations nor the gap to the optimum by much, so they are off by default.
    random_state : None, int or Generator
        Seed of the block order.
    verbose, progress : bool
        Log lines through ``logging.getLogger("numopt.admm-rbcd")`` / a tqdm bar.

    Returns
    -------
    OptimizeResult
        The fields of ``"admm"`` (``v``, ``w``, ``fun``, ``first_layer``, ``second_layer``, ``n_neurons``,
        ``network_fun``, ``network_gap``, ``cone_violation``, ``primal_residual``, ``dual_residual``, ``rho``,
        ``history``) plus ``n_block_steps``.
    """
    if problem.robust:
        raise ValueError("method='admm-rbcd' solves the nominal program only (adversarial_eps = 0); "
                         "use method='admm' for the robust program")
    rho = _default_rho(problem) if rho is None else check_positive(rho, "rho")
    relaxation, rtol, atol, maxiter = check_admm_options(relaxation, rtol, atol, maxiter)
    block_size = check_int(block_size, "block_size", min_value=1)
    inner_epochs = check_int(inner_epochs, "inner_epochs", min_value=1)
    max_inner_epochs = inner_epochs if max_inner_epochs is None else max(
        inner_epochs, check_int(max_inner_epochs, "max_inner_epochs", min_value=1))
    rng = check_random_state(random_state)

    X, D, y, beta = problem.X, problem.Dmat, problem.y, problem.beta
    n, d = X.shape
    P = D.shape[1]
    m = 2 * P
    E2 = np.tile(2.0 * D - 1.0, 2)                       # cone signs e_i = 2 d_i - 1, both families (n x 2P)
    C = np.eye(d) + X.T @ X                             # d x d, cond <= 1 + ||X||^2
    Cinv = spd_inverse(C.copy())

    start = problem.check_x0(x0)
    U = np.zeros((d, m)) if start is None else np.hstack(start)
    Z = U.copy()
    XU = X @ U
    S = np.maximum(E2 * XU, 0.0)
    Lam = np.zeros((d, m))
    N = np.zeros((n, m))
    GS, GN = X.T @ (E2 * S), np.zeros((d, m))          # G^T s, G^T nu (G^T is linear: carried along)
    yhat = masked_rowsum(np.ascontiguousarray(XU), D)
    tolerances = residual_tolerances(problem, rtol, atol)
    thr = np.full(m, beta / rho)
    g_u = [np.inf]

    def u_gradient_norm(Q, R):
        """``||grad phi(U)||`` over all blocks (the u-subproblem's optimality error); kept for the result."""
        XtDr = X.T @ (D * problem.loss_grad(yhat)[:, None])
        G = rho * (C @ U - Q - R)
        G[:, :P] += XtDr
        G[:, P:] -= XtDr
        g_u[0] = float(np.linalg.norm(G))
        return g_u[0]

    eps_dual = r_dual = np.inf                            # no inexactness test before the first residuals
    mon = Monitor("admm-rbcd", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    converged = False
    n_steps = 0
    r_pri = np.inf
    # the block products (n x d x 2b) are small: threaded BLAS only spins on them (as in "admm")
    with single_thread_blas(n * d * 2 * block_size <= _SINGLE_THREAD_WORK):
        for k in range(1, maxiter + 1):
            # --- u-step: block coordinate descent on phi, warm-started from the last U -----------------------
            Q = Z - Lam                                       # phi's proximal centre of U
            R = GS - GN                                       # X^T (E o (S - N)): the cone block's linear term
            for epoch in range(max_inner_epochs):
                if epoch >= inner_epochs:
                    # inexact u-step: stop once its gradient is below the ADMM's own residual level
                    if u_gradient_norm(Q, R) <= max(eps_dual, r_dual):
                        break
                order = rng.permutation(P)
                for lo in range(0, P, block_size):
                    pat = order[lo:lo + block_size]
                    cols = np.concatenate([pat, pat + P])
                    r = problem.loss_grad(yhat)
                    XtDr = X.T @ (D[:, pat] * r[:, None])     # d x b
                    UB = U[:, cols]
                    g = rho * (C @ UB - Q[:, cols] - R[:, cols])
                    g[:, :pat.size] += XtDr
                    g[:, pat.size:] -= XtDr
                    p = Cinv @ g
                    gp = float(np.vdot(g, p))
                    if gp <= 0.0:
                        continue
                    Xp = X @ p                                # n x 2b
                    dy = np.einsum("ki,ki->k", D[:, pat], Xp[:, :pat.size] - Xp[:, pat.size:])
                    kappa = float(dy @ dy) + rho * (float(np.vdot(p, p)) + float(np.vdot(Xp, Xp)))
                    t = gp / kappa
                    U[:, cols] = UB - t * p
                    XU[:, cols] -= t * Xp
                    yhat -= t * dy
                    n_steps += 1
            # --- v-, s- and dual steps (over-relaxed), textbook scaled ADMM -----------------------------------
            GU = E2 * XU
            Uh = relaxation * U + (1.0 - relaxation) * Z
            Gh = relaxation * GU + (1.0 - relaxation) * S
            Z_old, GS_old = Z, GS
            Z = group_shrink(Uh + Lam, thr, np.empty((d, m)))
            S = np.maximum(Gh + N, 0.0)
            Lam = Lam + Uh - Z
            N = N + Gh - S
            GS, GN = X.T @ (E2 * S), X.T @ (E2 * N)           # G^T s and G^T nu: the only two full passes here
            # --- certificates (the stopping rule of "admm") ---------------------------------------------------
            r_pri = np.sqrt(np.sum((U - Z) ** 2) + np.sum((GU - S) ** 2))
            r_dual = rho * np.linalg.norm((Z - Z_old) + (GS - GS_old))
            eps_pri, eps_dual = tolerances(max(np.sqrt(np.sum(U ** 2) + np.sum(GU ** 2)),
                                               np.sqrt(np.sum(Z ** 2) + np.sum(S ** 2))),
                                           rho * np.linalg.norm(Lam + GN))
            fun = problem.loss_value(yhat) + beta * float(np.sum(np.linalg.norm(U, axis=0)))
            if mon.step(U, fun=fun, primal_residual=r_pri, dual_residual=r_dual, rho=rho):
                break
            # at a candidate stop, the u-step's optimality error ||grad phi(U)|| is the third certificate
            if r_pri <= eps_pri and r_dual <= eps_dual and u_gradient_norm(Q, R) <= eps_dual:
                converged = True
                break
    V, W = Z[:, :P], Z[:, P:]
    extra = admm_result_fields(problem, V, W)
    return mon.result(problem.pack(V, W), converged=converged, primal_residual=float(r_pri),
                      dual_residual=float(r_dual), u_residual=g_u[0], rho=rho, n_block_steps=n_steps,
                      **extra)
