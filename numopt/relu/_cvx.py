"""CVXPY models of the convex ReLU programs (test oracle and benchmark peer; cvxpy imported lazily)."""
from __future__ import annotations

import numpy as np

__all__ = ["cvxpy_solve"]


def cvxpy_solve(problem, solver="CLARABEL", *, active=None, **kwargs):
    """Solve ``problem`` (same patterns) with CVXPY; returns ``(fun, V, W)`` with ``V, W`` of shape ``d x P``.

    ``active`` (boolean, ``2P``, layout ``[v_1..v_P, w_1..w_P]``): the neurons allowed to be non-zero, the
    others constrained to zero (the nominal program's ``active`` option of the ADMM).

    With ``adversarial_eps > 0`` the robust program (see :mod:`numopt.relu._problem`): robust cones
    ``e_ik x_k^T v_i >= ||v_i||_{1,eps}`` and the worst-case loss with ``r_k = ||c_k||_{1,eps}``.
    """
    import cvxpy as cp

    X, D, y, beta = problem.X, problem.Dmat, problem.y, problem.beta
    n, d = X.shape
    P = D.shape[1]
    E = 2 * D - 1
    V = cp.Variable((d, P))
    W = cp.Variable((d, P))
    XV, XW = X @ V, X @ W
    yhat = cp.sum(cp.multiply(D, XV - XW), axis=1)
    reg = beta * (cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0)))
    if problem.robust:
        pert = np.flatnonzero(problem.eps_weights > 0)
        ew = problem.eps_weights[pert]
        # ||v_i||_{1,eps} per column, broadcast over the n rows of the cone
        lv = ew @ cp.abs(V[pert, :])
        lw = ew @ cp.abs(W[pert, :])
        cons = [cp.multiply(E, XV) >= np.ones((n, 1)) @ cp.reshape(lv, (1, P), order="C"),
                cp.multiply(E, XW) >= np.ones((n, 1)) @ cp.reshape(lw, (1, P), order="C")]
        Ck = D @ (V - W)[pert, :].T                       # n x m: row k = c_k (perturbable coordinates)
        r = cp.abs(Ck) @ ew
        if problem.loss == "squared":
            fit = 0.5 * cp.sum_squares(cp.abs(yhat - y) + r)
        else:
            fit = cp.sum(cp.logistic(2 * (r - cp.multiply(2 * y - 1, yhat))))
        prob = cp.Problem(cp.Minimize(fit + reg), cons)
        prob.solve(solver=solver, **kwargs)
        return float(prob.value), np.asarray(V.value), np.asarray(W.value)
    cons = [cp.multiply(E, XV) >= 0, cp.multiply(E, XW) >= 0]
    if active is not None:
        off = ~np.asarray(active, dtype=bool)
        cons += [V[:, np.flatnonzero(off[:P])] == 0] if off[:P].any() else []
        cons += [W[:, np.flatnonzero(off[P:])] == 0] if off[P:].any() else []
    if problem.loss == "squared":
        fit = 0.5 * cp.sum_squares(yhat - y)
    else:
        fit = cp.sum(cp.logistic(2 * yhat) - 2 * cp.multiply(y, yhat))
    prob = cp.Problem(cp.Minimize(fit + reg), cons)
    prob.solve(solver=solver, **kwargs)
    return float(prob.value), np.asarray(V.value), np.asarray(W.value)
