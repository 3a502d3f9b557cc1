"""Sampled convex program (SCP) over fixed random ReLU features, by accelerated proximal gradient.

The dual of the weight-decay problem is semi-infinite (one constraint ``|lambda^T (X u)_+| <= beta``
per unit direction ``u``). Sampling ``N`` directions ``u_1..u_N`` (scenario approach) and dualising back
gives a lasso over fixed ReLU features ``Phi = (X U_N)_+`` (Bai, Gautam, Sojoudi, 2023):

.. math::

    \\min_a \\; \\ell(\\Phi a, y) + \\beta \\|a\\|_1 .

It is the non-convex objective restricted to neurons with those directions: neuron ``k`` with output
weight ``a_k`` is ``u = u_k \\sqrt{|a_k|}``, ``alpha = sign(a_k) \\sqrt{|a_k|}`` and
``(beta/2)(||u||^2 + alpha^2) = beta |a_k|``. So its optimum upper-bounds the convex program's.

Solver: FISTA with the gradient restart of O'Donoghue and Candes (2015), step ``1 / L`` with
``L = ||Phi||_2^2`` (the loss Hessian in ``Phi a`` is ``<= I`` for both losses). Stops when the
proximal-gradient mapping ``L ||a - prox(a - grad / L)||`` is below ``tol * max(1, ||Phi^T y||_inf)``.
"""
from __future__ import annotations

import numpy as np

from .._monitor import Monitor
from .._validation import as_float_array, check_int, check_positive, check_random_state
from ._kernels import relu_features, soft_threshold

__all__ = ["minimize_scp", "scp_directions"]


def scp_directions(problem, n_neurons, random_state):
    """Unit neuron directions ``d x N``: the problem's pattern directions and their negatives when
    ``n_neurons`` is None (``N = 2P``, the width of the convex program), else ``n_neurons`` fresh
    Gaussian draws from ``random_state``."""
    if n_neurons is None and problem.directions is not None:
        H = np.hstack([problem.directions, -problem.directions])
    else:
        N = 2 * problem.n_patterns_ if n_neurons is None else n_neurons
        H = check_random_state(random_state).standard_normal((problem.dim, N))
    return H / np.linalg.norm(H, axis=0)


def minimize_scp(problem, x0=None, *, callback=None, n_neurons=None, random_state=None, tol=1e-8,
                 maxiter=20000, verbose=False, progress=False):
    """Solve the sampled convex program ``min_a l((X U)_+ a) + beta ||a||_1`` by restarted FISTA.

    Parameters
    ----------
    problem : TwoLayerReLU
        Its ``X``, ``y``, ``beta`` and ``loss`` are used (not the cone constraints).
    x0 : array_like, shape (N,), optional
        Warm start of the output weights ``a``.

    Options
    -------
    n_neurons : int, optional
        Number ``N`` of random neuron directions. Default: the problem's ``P`` pattern directions and
        their negatives (``N = 2P``); an integer draws ``N`` fresh Gaussian directions.
    random_state : None, int or Generator
        Seed of the fresh directions (only with ``n_neurons`` given or explicit patterns).
    tol : float
        Tolerance on the scaled proximal-gradient mapping.
    maxiter : int
        Maximum FISTA iterations.
    verbose, progress : bool
        Logging through ``numopt.scp`` / a tqdm bar.

    Returns
    -------
    OptimizeResult
        ``x`` (= ``a``, length ``N``), ``fun``, ``directions`` (``d x N`` unit columns),
        ``first_layer`` (``d x m``), ``second_layer`` (``m``), ``n_neurons`` (``m`` non-zeros),
        ``network_fun`` and ``history`` (``fun``, ``grad_mapping``, ``time``).
    """
    if problem.robust:
        raise NotImplementedError("method='scp' solves the nominal program only (adversarial_eps must be 0); "
                                  "use method='admm' for the robust program")
    if n_neurons is not None:
        n_neurons = check_int(n_neurons, "n_neurons", min_value=1)
    tol = check_positive(tol, "tol")
    maxiter = check_int(maxiter, "maxiter", min_value=1)
    Udir = scp_directions(problem, n_neurons, random_state)
    Phi = relu_features(problem.X, Udir)
    N = Phi.shape[1]
    a = np.zeros(N) if x0 is None else as_float_array(x0, "x0", shape=(N,), dtype=np.float64, copy=True)
    beta = problem.beta
    L = max(_spectral_norm_sq(Phi), 1e-12)
    scale = max(1.0, float(np.max(np.abs(Phi.T @ problem.loss_grad(np.zeros(problem.n_samples))))))
    mon = Monitor("scp", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    z = a.copy()
    t = 1.0
    buf = np.empty(N)
    converged = False
    gm = np.inf
    for _ in range(maxiter):
        grad = Phi.T @ problem.loss_grad(Phi @ z)
        a_new = soft_threshold(z - grad / L, beta / L, buf).copy()
        gm = L * np.linalg.norm(a_new - z)
        # gradient restart: drop the momentum when it points uphill
        if (z - a_new) @ (a_new - a) > 0:
            t = 1.0
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = a_new + ((t - 1.0) / t_new) * (a_new - a)
        a, t = a_new, t_new
        f = problem.loss_value(Phi @ a) + beta * np.abs(a).sum()
        if mon.step(a, fun=f, grad_mapping=gm):
            break
        if gm <= tol * scale:
            converged = True
            break
    nz = np.flatnonzero(a)
    root = np.sqrt(np.abs(a[nz]))
    U1, alpha = Udir[:, nz] * root, np.sign(a[nz]) * root
    fun = problem.loss_value(Phi @ a) + beta * np.abs(a).sum()
    return mon.result(a, converged=converged, fun=fun, directions=Udir, first_layer=U1, second_layer=alpha,
                      n_neurons=int(nz.size), network_fun=problem.network_objective(U1, alpha),
                      grad_mapping=float(gm), lipschitz=L)


def _spectral_norm_sq(A):
    """``||A||_2^2`` (exact SVD for small matrices, else 50 power iterations with a safety margin)."""
    if min(A.shape) <= 500:
        return float(np.linalg.norm(A, 2) ** 2)
    v = np.random.default_rng(0).standard_normal(A.shape[1])
    for _ in range(50):
        v = A.T @ (A @ v)
        v /= np.linalg.norm(v)
    return 1.05 * float(np.linalg.norm(A @ v) ** 2)
