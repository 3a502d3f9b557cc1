r"""Sinkhorn's algorithm: compiled log-domain sweeps (``sinkhorn_log``) and the kernel form (``sinkhorn``).

Sinkhorn is exact block ascent on the concave dual of entropic OT. In POT's scaled log-potentials
``lu = log u``, ``lv = log v`` and with :math:`K_{ij} = -M_{ij}/\mathrm{reg}`, one sweep is

.. math::

    lu_i \leftarrow \log a_i - \log\sum_j e^{K_{ij} + lv_j}, \qquad
    lv_j \leftarrow \log b_j - \log\sum_i e^{lu_i + K_{ij}},

and the plan is :math:`P_{ij} = e^{lu_i + K_{ij} + lv_j}`. Both solvers stop on the **full L1 marginal
error** :math:`\|P1 - a\|_1 + \|P^\top 1 - b\|_1` (POT stops on :math:`\|P^\top 1 - b\|_2` only).
"""
from __future__ import annotations

import numpy as np

from .._monitor import STATUS_BREAKDOWN, Monitor
from .._validation import check_bool, check_int, check_positive
from . import _kernels as kern

__all__ = ["minimize_sinkhorn_log", "minimize_sinkhorn"]


class Workspace:
    """Buffers of one solve on the reduced problem: the cost buffer K = -M/reg, the plan, the marginals."""

    def __init__(self, problem, n_plans=1):
        M = problem.M_red
        n, m = M.shape
        self.problem = problem
        self.a, self.b = problem.a_red, problem.b_red
        self.loga, self.logb = np.log(self.a), np.log(self.b)
        self.K = kern.neg_scaled_cost(M, problem.reg, np.empty((n, m)))
        self.plans = [np.empty((n, m)) for _ in range(n_plans)]
        self.r, self.c = np.empty(n), np.empty(m)
        self.acc = np.empty((kern.n_chunks(n), m))

    def dual_pass(self, lu, lv, P=None, r=None, c=None):
        """Fill P, r = P1, c = P^T 1 at (lu, lv); return the scaled dual a.lu + b.lv - sum(P)."""
        P = self.plans[0] if P is None else P
        r = self.r if r is None else r
        c = self.c if c is None else c
        return kern.dual_pass(self.K, lu, lv, self.a, self.b, P, r, c, self.acc)

    def error(self, r, c):
        return float(np.abs(r - self.a).sum() + np.abs(c - self.b).sum())


def check_common(maxiter, tol, verbose, progress, warn):
    check_int(maxiter, "maxiter", min_value=0)
    check_positive(tol, "tol", strict=False)
    check_bool(progress, "progress")
    check_bool(warn, "warn")
    if not isinstance(verbose, (bool, int, np.integer)):
        raise TypeError(f"verbose must be a bool or an int; got {verbose!r}")


def stacked(problem, lu, lv):
    """The dual potentials (x, y) of the full problem, stacked (-inf at zero-mass entries)."""
    x = np.full(problem.n, -np.inf)
    y = np.full(problem.m, -np.inf)
    x[problem.rows] = (lu + 1.0) * problem.reg
    y[problem.cols] = lv * problem.reg
    return np.concatenate([x, y])


def finish(problem, ws, mon, lu, lv, *, converged, status=None, message=None, warn=True, P=None, r=None,
           c=None, dual=None, cost=None, **extra):
    """Build the OptimizeResult: plan, cost, primal/dual values and the L1 marginal error at (lu, lv).

    Without ``P`` the plan is computed from (lu, lv) by a fused pass of ``ws``; otherwise ``P``, its
    marginals ``r``, ``c`` and the scaled ``dual`` are taken as given (``cost`` too, when not None).
    """
    if P is None:
        P = ws.plans[0]
        dual = ws.dual_pass(lu, lv, P)
        r, c = ws.r, ws.c
    err = float(np.abs(r - problem.a_red).sum() + np.abs(c - problem.b_red).sum())
    reg = problem.reg
    cost = float(np.vdot(problem.M_red, P)) if cost is None else float(cost)
    # sum P log P = lu.r + lv.c + sum P K and sum P K = -cost / reg, so the primal value needs no log(0)
    fun = float(reg * (np.dot(lu, r) + np.dot(lv, c)))
    log_u, log_v, plan = problem.expand(lu, lv, P)
    dt = problem.dtype
    return mon.result(stacked(problem, lu, lv).astype(dt), converged=converged, status=status, message=message,
                      warn=warn, fun=fun, plan=plan.astype(dt, copy=False), cost=cost,
                      dual=float(reg * (dual + problem.mass)), marginal_error=err,
                      log_u=log_u.astype(dt), log_v=log_v.astype(dt), **extra)


def sinkhorn_stage(ws, mon, lu, lv, nit, maxiter, tol, check_every, switch=-1.0):
    """Log-domain sweeps until the L1 error <= tol or ``maxiter`` sweeps in all; updates lu, lv in place.

    With ``switch >= 0`` the stage also returns (status None) at the first check where the error is
    ``<= switch`` (SNS hands over to Newton there).

    Returns ``(nit, err, status)`` where ``err`` is the last measured error and status is None,
    ``"converged"``, ``"breakdown"`` or ``"stopped"`` (callback).
    """
    while True:
        nsw = min(check_every, maxiter - nit)
        done, err = kern.sinkhorn_block(ws.K, ws.a, ws.b, ws.loga, ws.logb, lu, lv, nsw, max(tol, switch), ws.r,
                                        ws.c, ws.acc)
        mon.nit = nit
        stop = mon.step(None if mon.callback is None else stacked(ws.problem, lu, lv), n=0, err=err, stage=0)
        nit += done
        if not np.isfinite(err):
            return nit, err, "breakdown"
        if err <= tol:
            return nit, err, "converged"
        if stop:
            return nit, err, "stopped"
        if done == 0:
            return nit, err, None


def minimize_sinkhorn_log(problem, x0=None, *, callback=None, maxiter=1000, tol=1e-9, check_every=10,
                          verbose=False, progress=False, warn=True):
    r"""Compiled log-domain Sinkhorn on :class:`~numopt.problems.OptimalTransport`.

    Alternates the exact row and column updates of the dual (see the module docstring) with fused
    log-sum-exp passes (Numba, parallel over rows, one ``n x m`` cost buffer). Stable at any ``reg``.

    Parameters
    ----------
    problem : OptimalTransport
    x0 : array_like, shape (n + m,), optional
        Warm start: stacked dual potentials ``(x, y)`` (``-inf`` allowed at zero-mass entries).
    callback : callable, optional
        ``callback(intermediate_result)`` every ``check_every`` sweeps (``err`` field); may raise
        ``StopIteration``.

    Options
    -------
    maxiter : int
        Maximum number of sweeps (POT's ``numItermax``).
    tol : float
        Stop when :math:`\|P1-a\|_1 + \|P^\top 1-b\|_1 \le` ``tol`` (POT's ``stopThr``).
    check_every : int
        Sweeps between error checks (the check rides along a row pass: no extra exponentials).
    verbose, progress : bool
        Log lines through ``logging.getLogger("numopt.sinkhorn_log")`` / a tqdm bar.
    warn : bool
        Emit a ``ConvergenceWarning`` when ``tol`` is not reached.

    Returns
    -------
    OptimizeResult
        ``x`` (stacked potentials), ``plan``, ``cost`` :math:`\langle M, P\rangle`, ``fun`` (primal
        objective), ``dual``, ``marginal_error``, ``log_u``, ``log_v``, ``nit``, ``nit_sinkhorn``,
        ``history["err"]`` (error at every check).
    """
    check_common(maxiter, tol, verbose, progress, warn)
    check_int(check_every, "check_every", min_value=1)
    lu, lv = problem.log_potentials(x0)
    ws = Workspace(problem)
    mon = Monitor("sinkhorn_log", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter,
                  log_every=1)
    nit, err, state = sinkhorn_stage(ws, mon, lu, lv, 0, maxiter, tol, check_every)
    mon.nit = nit
    status, message = None, None
    if state == "breakdown":
        status, message = STATUS_BREAKDOWN, "Non-finite marginal error (overflow in the potentials)."
    return finish(problem, ws, mon, lu, lv, converged=state == "converged", status=status, message=message,
                  warn=warn, nit_sinkhorn=nit, nit_newton=0)


def minimize_sinkhorn(problem, x0=None, *, callback=None, maxiter=1000, tol=1e-9, check_every=10,
                      verbose=False, progress=False, warn=True):
    r"""Kernel-form Sinkhorn (Cuturi 2013): :math:`u \leftarrow a / (Kv)`, :math:`v \leftarrow b / (K^\top u)`.

    :math:`K = e^{-M/\mathrm{reg}}` is formed once and each sweep is two BLAS matrix-vector products, the
    fastest option at large ``reg``. At small ``reg`` the kernel underflows (``M/reg > 708`` in float64):
    the solver then stops with ``status=3`` (breakdown) instead of returning NaN; use ``"sinkhorn_log"``
    or ``"sns"`` there.

    Options
    -------
    maxiter : int
        Maximum number of sweeps.
    tol : float
        Stop when the full L1 marginal error is ``<= tol``.
    check_every : int
        Sweeps between error checks.
    verbose, progress, warn : bool
        As for ``sinkhorn_log``.
    """
    check_common(maxiter, tol, verbose, progress, warn)
    check_int(check_every, "check_every", min_value=1)
    lu, lv = problem.log_potentials(x0)
    ws = Workspace(problem)
    Kmat = np.exp(ws.K)
    u, v = np.exp(lu), np.exp(lv)
    a, b = ws.a, ws.b
    mon = Monitor("sinkhorn", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter, log_every=1)
    nit, state = 0, None
    with np.errstate(all="ignore"):
        while True:
            Ktu = Kmat.T @ u
            err = float(np.abs(u * (Kmat @ v) - a).sum() + np.abs(v * Ktu - b).sum())
            mon.nit = nit
            stop = mon.step(None if mon.callback is None else stacked(problem, np.log(u), np.log(v)), n=0,
                            err=err, stage=0)
            if not np.isfinite(err) or not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))):
                state = "breakdown"
                break
            if err <= tol:
                state = "converged"
                break
            if stop or nit >= maxiter:
                break
            for _ in range(min(check_every, maxiter - nit)):
                u = a / (Kmat @ v)
                v = b / (Kmat.T @ u)
                nit += 1
    mon.nit = nit
    del Kmat
    status, message = None, None
    if state == "breakdown":
        status = STATUS_BREAKDOWN
        message = ("Kernel underflow or overflow at this reg (exp(-M/reg) is 0 somewhere it matters): "
                   "use method='sinkhorn_log' or 'sns'.")
        with np.errstate(all="ignore"):
            lu, lv = np.log(u), np.log(v)
        if not (np.all(np.isfinite(lu)) and np.all(np.isfinite(lv))):
            lu, lv = problem.log_potentials(x0)   # return the start point rather than NaN
    else:
        lu, lv = np.log(u), np.log(v)
    # the error above is the kernel's; the plan returned is recomputed from (lu, lv) in the log domain,
    # where entries that underflowed in K count again: success must hold for that plan
    dual = ws.dual_pass(lu, lv)
    if state == "converged":
        err = ws.error(ws.r, ws.c)
        if not err <= tol:
            state = "breakdown"
            status = STATUS_BREAKDOWN
            message = (f"The kernel iteration met tol, but the plan of its potentials has L1 marginal error "
                       f"{err:.1e} (exp(-M/reg) underflowed where it matters): use method='sinkhorn_log' or 'sns'.")
    return finish(problem, ws, mon, lu, lv, converged=state == "converged", status=status, message=message,
                  warn=warn, P=ws.plans[0], r=ws.r, c=ws.c, dual=dual, nit_sinkhorn=nit, nit_newton=0)
