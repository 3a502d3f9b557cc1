"""CVXPY models of the convex ReLU programs (test oracle and benchmark peer; cvxpy imported lazily)."""
from __future__ import annotations

import numpy as np

__all__ = ["cvxpy_solve"]


def cvxpy_solve(problem, solver="CLARABEL", **kwargs):
    """Solve ``problem`` (same patterns) with CVXPY; returns ``(fun, V, W)`` with ``V, W`` of shape ``d x P``.

    Nominal program only (``adversarial_eps`` must be 0).
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
    if problem.adversarial_eps > 0:
        raise NotImplementedError("the robust (adversarial_eps > 0) program has no CVXPY model here")
    cons = [cp.multiply(E, XV) >= 0, cp.multiply(E, XW) >= 0]
    if problem.loss == "squared":
        fit = 0.5 * cp.sum_squares(yhat - y)
    else:
        fit = cp.sum(cp.logistic(2 * yhat) - 2 * cp.multiply(y, yhat))
    prob = cp.Problem(cp.Minimize(fit + reg), cons)
    prob.solve(solver=solver, **kwargs)
    return float(prob.value), np.asarray(V.value), np.asarray(W.value)
