r"""Sinkhorn-Newton-Sparse (Tang et al., ICLR 2024): Sinkhorn warm start, then sparse Newton on the dual.

In POT's scaled log-potentials :math:`z = (lu, lv)` and with :math:`K = -M/\mathrm{reg}`, the scaled dual

.. math::

    \tilde f(lu, lv) = a^\top lu + b^\top lv - \sum_{ij} P_{ij}, \qquad P_{ij} = e^{lu_i + K_{ij} + lv_j},

is concave with gradient :math:`g = (a - P1,\; b - P^\top 1)` (the marginal residual) and Hessian
:math:`-H`, :math:`H = \begin{pmatrix}\mathrm{diag}(P1) & P\\ P^\top & \mathrm{diag}(P^\top 1)\end{pmatrix}`.
(The brief's :math:`f(x, y)` is :math:`\mathrm{reg}\,(\tilde f + \sum a)` with :math:`x = \mathrm{reg}(lu+1)`,
:math:`y = \mathrm{reg}\, lv`.) Algorithm, one Newton iteration:

1. fused pass: P, P1, P^T 1, f and g; stop when :math:`\|g\|_1 \le` ``tol``;
2. sparsify P by one global threshold :math:`\rho` (mass rule by default) into :math:`P_s`, and form
   :math:`H_s` with the *dense* marginals on the diagonal plus a tiny ridge;
3. solve :math:`H_s\,\Delta z = g` by Jacobi-preconditioned CG, orthogonally to the gauge (1, -1);
4. backtracking line search from :math:`\alpha = 1` accepting :math:`\tilde f(z + \alpha\Delta z)` finite and
   either an Armijo increase or a smaller :math:`\|g\|_2` (plain Armijo stalls near 1e-10 because the
   gain :math:`\approx \|g\|^2` falls below the rounding of an ``n*m``-term sum);
5. if no step :math:`\alpha \ge` ``ls_min_step`` is accepted, do ``fallback_sweeps`` Sinkhorn sweeps
   instead (a fallback);
6. re-centre the gauge.
"""
from __future__ import annotations

import numpy as np

from .._monitor import STATUS_BREAKDOWN, Monitor
from .._validation import check_int, check_positive
from . import _kernels as kern
from ._sinkhorn import Workspace, check_common, finish, sinkhorn_stage, stacked

__all__ = ["minimize_sns", "select_threshold"]


def _check_sparsity(sparsity):
    if not (isinstance(sparsity, (tuple, list)) and len(sparsity) == 2 and isinstance(sparsity[0], str)):
        raise TypeError(f"sparsity must be a pair like ('mass', 1e-5), ('lambda', lam) or ('k', k); got {sparsity!r}")
    rule, value = sparsity[0].lower(), sparsity[1]
    if rule == "mass":
        value = check_positive(value, "sparsity[1] (mass fraction)", strict=False)
        if value >= 1:
            raise ValueError(f"sparsity mass fraction must be < 1; got {value!r}")
    elif rule == "lambda":
        value = check_positive(value, "sparsity[1] (lambda)")
    elif rule == "k":
        value = check_int(value, "sparsity[1] (k)", min_value=1)
    else:
        raise ValueError(f"sparsity rule must be 'mass', 'lambda' or 'k'; got {sparsity[0]!r}")
    return rule, value


def select_threshold(count, mass, rule, value, n, m, density_max):
    """Pick the histogram key k so that the entries with key >= k form P_s.

    ``count``/``mass`` are the per-key totals (length ``N_KEYS``, keys increasing with the value).
    Rules: ``"mass"`` keeps the largest entries until the dropped mass is <= value * sum(P);
    ``"lambda"`` keeps about value * n * m entries (the paper's rule; value = 2/n gives 2m);
    ``"k"`` keeps about ``value`` entries. Then at least ``n + m`` entries and at most
    ``density_max * n * m`` (but at least one key) are kept. Counts are exact multiples of whole keys
    (a key is a quarter octave), so the kept number can exceed the target by one key's entries.
    Returns ``(key, kept count)``.
    """
    cnt = np.cumsum(count[::-1])          # cnt[q]: entries with key >= N_KEYS - 1 - q
    cm = np.cumsum(mass[::-1])
    total = cm[-1]
    if rule == "mass":
        q = int(np.searchsorted(cm, (1.0 - value) * total, side="left"))
    else:
        target = value * n * m if rule == "lambda" else value
        q = int(np.searchsorted(cnt, target, side="left"))
    q = min(q, cnt.size - 1)
    floor = min(n + m, n * m)
    if cnt[q] < floor:
        q = int(np.searchsorted(cnt, floor, side="left"))
    cap = max(density_max * n * m, 1.0)
    if cnt[q] > cap:
        q = max(int(np.searchsorted(cnt, cap, side="right")) - 1, int(np.flatnonzero(cnt)[0]))
    return kern.N_KEYS - 1 - q, int(cnt[q])


def minimize_sns(problem, x0=None, *, callback=None, maxiter=1000, tol=1e-9, n_sinkhorn=20, switch_err=0.1,
                 check_every=5,
                 sparsity=("mass", 1e-5), density_max=0.1, cg_rtol=None, cg_maxiter=None, ls_armijo=1e-4,
                 ls_min_step=1e-6, fallback_sweeps=10, verbose=False, progress=False, warn=True):
    r"""Sinkhorn-Newton-Sparse on :class:`~numopt.problems.OptimalTransport` (see the module docstring).

    Parameters
    ----------
    problem : OptimalTransport
    x0 : array_like, shape (n + m,), optional
        Warm start: stacked dual potentials ``(x, y)``.
    callback : callable, optional
        ``callback(intermediate_result)`` after every check of the Sinkhorn stage and every Newton step
        (fields ``err``, ``stage`` 0/1, ...); may raise ``StopIteration``.

    Options
    -------
    maxiter : int
        Maximum number of iterations in all: Sinkhorn sweeps + Newton steps + fallback sweeps.
        ``nit`` counts the same (``nit = nit_sinkhorn + nit_newton + fallback sweeps``).
    tol : float
        Stop when :math:`\|P1-a\|_1 + \|P^\top 1-b\|_1 \le` ``tol``.
    n_sinkhorn : int
        Sinkhorn sweeps before the Newton stage (N1; the paper uses 20, or 700 for an L1 cost).
    switch_err : float
        The Sinkhorn stage also ends early, at a check, once the L1 error is ``<= switch_err * sum(a)``
        (Newton converges from there; measured on the benchmark cases) or ``<= tol``.
    check_every : int
        Sweeps between error checks in the Sinkhorn stage (a check costs no extra exponentials).
    sparsity : (str, number)
        ``("mass", delta)``: keep the largest entries of P until the dropped mass is ``<= delta * sum(P)``
        (default, 1e-5); ``("lambda", lam)``: keep about ``lam * n * m`` entries (the paper: lam = 2/n);
        ``("k", k)``: keep about ``k`` entries. One global threshold, never a per-row top-k. The kept
        count is floored at ``n + m``.
    density_max : float
        Cap on the fraction of entries of P kept (0 < density_max <= 1).
    cg_rtol : float or None
        Relative residual of the CG solve; ``None``: :math:`\min(0.1, \sqrt{\|g\|_2})`.
    cg_maxiter : int or None
        CG iteration cap; ``None``: ``n + m``.
    ls_armijo : float
        Armijo constant of the line search (sufficient increase of the dual).
    ls_min_step : float
        Smallest step tried before falling back to Sinkhorn sweeps.
    fallback_sweeps : int
        Sinkhorn sweeps done by one fallback (a rejected Newton step). Several sweeps give the next
        Newton step a better start, which matters with non-unique LP optima (W1 costs).
    verbose, progress : bool
        Log lines through ``logging.getLogger("numopt.sns")`` / a tqdm bar.
    warn : bool
        Emit a ``ConvergenceWarning`` when ``tol`` is not reached.

    Returns
    -------
    OptimizeResult
        As ``sinkhorn_log`` plus ``nit_newton``, ``n_fallback`` (events), ``nit_fallback_sweeps``, ``cg_iters`` and ``density`` (per Newton
        step), and ``history`` with ``err`` per check / step and ``stage`` (0 Sinkhorn, 1 Newton, 2 fallback).
    """
    check_common(maxiter, tol, verbose, progress, warn)
    check_int(n_sinkhorn, "n_sinkhorn", min_value=0)
    check_int(check_every, "check_every", min_value=1)
    switch_err = check_positive(switch_err, "switch_err", strict=False)
    rule, value = _check_sparsity(sparsity)
    density_max = check_positive(density_max, "density_max")
    if density_max > 1:
        raise ValueError(f"density_max must be <= 1; got {density_max!r}")
    if cg_rtol is not None:
        cg_rtol = check_positive(cg_rtol, "cg_rtol")
    cg_maxiter = check_int(cg_maxiter, "cg_maxiter", min_value=1, allow_none=True)
    ls_armijo = check_positive(ls_armijo, "ls_armijo", strict=False)
    ls_min_step = check_positive(ls_min_step, "ls_min_step")
    check_int(fallback_sweeps, "fallback_sweeps", min_value=1)
    if ls_armijo >= 0.5 or ls_min_step >= 1:
        raise ValueError("ls_armijo must be < 0.5 and ls_min_step < 1")

    lu, lv = problem.log_potentials(x0)
    n, m = lu.size, lv.size
    N = n + m
    cg_maxiter = N if cg_maxiter is None else cg_maxiter
    ws = Workspace(problem, n_plans=2)
    mon = Monitor("sns", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter, log_every=1)

    # --- 1. Sinkhorn stage ------------------------------------------------------------------------------
    nit_sk, err, state = sinkhorn_stage(ws, mon, lu, lv, 0, min(n_sinkhorn, maxiter), tol, check_every,
                                        switch=switch_err * problem.mass)
    nit = nit_sk
    nit_newton = n_fallback = nit_fb_sweeps = 0
    cg_iters, density = [], []
    nchunk = ws.acc.shape[0]
    hcount = np.empty((nchunk, kern.N_KEYS), dtype=np.int64)
    hmass = np.empty((nchunk, kern.N_KEYS))

    # --- 2. Newton stage ----------------------------------------------------------------------------------
    P, Pt = ws.plans
    r, c = ws.r, ws.c
    rt, ct = np.empty(n), np.empty(m)
    f = ws.dual_pass(lu, lv, P, r, c)
    err = ws.error(r, c)
    if state not in ("converged", "stopped", "breakdown"):
        state = None
        if not np.isfinite(err):
            state = "breakdown"
        elif err <= tol:
            state = "converged"
    while state is None and nit < maxiter:
        g = np.concatenate([ws.a - r, ws.b - c])
        gnorm = float(np.sqrt(g @ g))
        # sparsify P by one global threshold read off a histogram of its float64 keys
        kern.log2_histogram(P, hcount, hmass)
        key, _ = select_threshold(hcount.sum(0), hmass.sum(0), rule, value, n, m, density_max)
        indptr, indices, data = kern.extract_csr(P, kern.key_threshold(key), hcount[:, key:].sum(1))
        ridge = 1e-12 * max(float(r.max()), float(c.max()))
        hp, hi, hx, diag = kern.hessian_csr(indptr, indices, data, r, c, ridge)
        rtol = cg_rtol if cg_rtol is not None else min(0.1, np.sqrt(gnorm))
        dz, it_cg, _ = kern.pcg_jacobi(hp, hi, hx, diag, g, rtol, cg_maxiter, n)
        du, dv = dz[:n], dz[n:]
        slope = float(g @ dz)
        accepted = False
        if np.all(np.isfinite(dz)) and slope > 0:
            alpha = 1.0
            while alpha >= ls_min_step:
                lu_t, lv_t = lu + alpha * du, lv + alpha * dv
                f_t = ws.dual_pass(lu_t, lv_t, Pt, rt, ct)
                if np.isfinite(f_t):
                    with np.errstate(over="ignore"):      # a huge residual is a plain rejection
                        gt2 = float(np.sum((ws.a - rt) ** 2) + np.sum((ws.b - ct) ** 2))
                    if f_t >= f + ls_armijo * alpha * slope or np.sqrt(gt2) < gnorm:
                        accepted = True
                        break
                alpha *= 0.5
        if accepted:
            lu, lv, f = lu_t, lv_t, f_t
            P, Pt = Pt, P
            r, rt = rt, r
            c, ct = ct, c
            nit_newton += 1
            stage = 1
        else:
            # fallback: exact Sinkhorn sweeps from the current point (the Newton model is poor here, as
            # with non-unique LP optima: more sweeps first), then a fresh fused pass
            nsw = max(1, min(fallback_sweeps, maxiter - nit))
            kern.sinkhorn_block(ws.K, ws.a, ws.b, ws.loga, ws.logb, lu, lv, nsw, -1.0, r, c, ws.acc)
            f = ws.dual_pass(lu, lv, P, r, c)
            n_fallback += 1
            nit_fb_sweeps += nsw
            alpha = 0.0
            stage = 2
        # re-centre the gauge (lu + t, lv - t leaves P unchanged)
        t = (lv.sum() - lu.sum()) / N
        lu += t
        lv -= t
        f += t * (ws.a.sum() - ws.b.sum())
        nit += 1 if stage == 1 else nsw
        err = ws.error(r, c)
        cg_iters.append(it_cg)
        density.append(indptr[-1] / (n * m))
        mon.nit = nit - 1
        stop = mon.step(stacked(problem, lu, lv) if callback is not None else None, err=err, stage=stage,
                        step=alpha, cg_iters=it_cg, density=indptr[-1] / (n * m))
        if not np.isfinite(err):
            state = "breakdown"
        elif err <= tol:
            state = "converged"
        elif stop:
            state = "stopped"

    mon.nit = nit
    status, message = None, None
    if state == "breakdown":
        status, message = STATUS_BREAKDOWN, "Non-finite marginal error (overflow in the potentials)."
    return finish(problem, ws, mon, lu, lv, converged=state == "converged", status=status, message=message,
                  warn=warn, P=P, r=r, c=c, dual=f, nit_sinkhorn=nit_sk, nit_newton=nit_newton,
                  n_fallback=n_fallback, nit_fallback_sweeps=nit_fb_sweeps,
                  cg_iters=np.asarray(cg_iters, dtype=np.int64),
                  density=np.asarray(density))
