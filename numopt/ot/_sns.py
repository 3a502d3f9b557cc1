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
from ._sinkhorn import check_common, finish, stacked

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


_SAFE_LOG = 300.0     # max(log u) + max(log v) allowed on the base B (entries that underflowed stay < e^-408)
_TINY_COL = 1e-290    # a column sum of diag(u) B below this is recomputed exactly in the log domain


class _Scaled:
    """The plan P = diag(u) B diag(v) on one base matrix B (see ``_kernels.absorb``) and its passes.

    The state is the pair of POT log potentials ``(lu, lv)``; ``u = exp(lu - lu0)``, ``v = exp(lv - lv0)``
    where ``(lu0, lv0)`` are the base potentials of B. Counts the passes over the n x m data.
    """

    def __init__(self, problem):
        self.M = np.ascontiguousarray(problem.M_red)
        self.inv = 1.0 / problem.reg
        n, m = self.M.shape
        self.a, self.b = problem.a_red, problem.b_red
        self.logb = np.log(self.b)
        self.B = np.empty((n, m))
        self.lu0, self.lv0 = np.empty(n), np.empty(m)
        self.S, self.rs, self.r = np.empty(n), np.empty(n), np.empty(n)
        nchunk = kern.n_chunks(n)
        self.acc, self.acc2 = np.empty((nchunk, m)), np.empty((nchunk, m))
        self.count = np.zeros((nchunk, kern.N_KEYS), dtype=np.int64)
        self.mass = np.zeros((nchunk, kern.N_KEYS))
        self.passes = {"absorb": 0, "sweep": 0, "rc": 0, "hist": 0, "extract": 0, "final": 0}

    def absorb(self, lu, lv):
        """New base at (lu, lv) (one pass with exponentials). Returns the plan's ``(r, c)`` there and
        the column sums ``c_upd`` after an exact row update (``lu0 + log(a / S)``)."""
        kern.absorb(self.M, self.inv, lu, lv, self.a, self.B, self.lu0, self.S, self.rs, self.acc, self.acc2)
        self.lv0[:] = lv
        self.passes["absorb"] += 1
        return self.rs.copy(), self.acc.sum(0), self.acc2.sum(0)

    def scalings(self, lu, lv):
        with np.errstate(over="ignore"):
            return np.exp(lu - self.lu0), np.exp(lv - self.lv0)

    def safe(self, lu, lv):
        """True when the base B represents the plan at (lu, lv) to full accuracy."""
        s = np.max(lu - self.lu0) + np.max(lv - self.lv0)
        return bool(np.isfinite(s) and s <= _SAFE_LOG)

    def rc(self, lu, lv, hist=False):
        """Row and column sums of the plan at (lu, lv) (one pass), with the histogram if ``hist``."""
        u, v = self.scalings(lu, lv)
        kern.scaled_pass(self.B, u, v, self.a, self.r, self.acc, kern.RC_HIST if hist else kern.RC,
                         self.count, self.mass)
        self.passes["hist" if hist else "rc"] += 1
        with np.errstate(invalid="ignore", over="ignore"):
            return self.r.copy(), v * self.acc.sum(0)

    def col_update(self, lu, cB):
        """Exact column update from the column sums ``cB`` of diag(u) B; log domain where they underflow."""
        with np.errstate(divide="ignore"):
            lv = self.lv0 + self.logb - np.log(cB)
        bad = np.flatnonzero(~(cB > _TINY_COL) | ~np.isfinite(cB))
        for j in bad:                      # rare: every entry of the column underflowed in B
            lv[j] = self.logb[j] - kern.col_lse_cost(self.M, self.inv, lu, j)
        return lv

    def sweep(self, lu, lv):
        """One Sinkhorn sweep from (lu, lv) in one pass over B (an exact log-domain one if that fails).

        Returns ``(lu, lv, row_err)``: the new potentials and ``||P1 - a||_1`` on entry.
        """
        u, v = self.scalings(lu, lv)
        kern.scaled_pass(self.B, u, v, self.a, self.r, self.acc, kern.SWEEP, self.count, self.mass)
        self.passes["sweep"] += 1
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            row_err = float(np.abs(self.r - self.a).sum())
            lu_new = self.lu0 + np.log(u)
        if np.all(np.isfinite(lu_new)):
            cB = self.acc.sum(0)
        else:                              # a row sum of B v under/overflowed: redo in the log domain
            r0, c0, cB = self.absorb(lu, lv)
            with np.errstate(invalid="ignore", over="ignore"):
                row_err = float(np.abs(r0 - self.a).sum())
            lu_new = self.lu0 + np.log(self.a / self.S)
        lv_new = self.col_update(lu_new, cB)
        if not self.safe(lu_new, lv_new):
            self.absorb(lu_new, lv_new)
        return lu_new, lv_new, row_err

    def select(self, lu, lv, rule, value, density_max):
        """The sparsity pattern of the plan at (lu, lv), from the histogram of the last ``rc(hist=True)``."""
        n, m = self.B.shape
        key, _ = select_threshold(self.count.sum(0), self.mass.sum(0), rule, value, n, m, density_max)
        u, v = self.scalings(lu, lv)
        pat = kern.extract_scaled(self.B, u, v, kern.key_threshold(key), self.count[:, key:].sum(1))
        self.passes["extract"] += 1
        return pat

    def final(self, lu, lv):
        """The plan, in place of B, with its exact marginals and transport cost (one pass)."""
        u, v = self.scalings(lu, lv)
        cost = np.zeros(self.acc.shape[0])
        kern.finalize_plan(self.B, u, v, self.M, self.r, self.acc, cost)
        self.passes["final"] += 1
        return self.B, self.r, self.acc.sum(0), float(cost.sum())


def minimize_sns(problem, x0=None, *, callback=None, maxiter=1000, tol=1e-9, n_sinkhorn=20, switch_err=0.3,
                 check_every=1, sparsity=("mass", 1e-5), density_max=0.1, reselect=2.0, cg_rtol=None,
                 cg_maxiter=None, ls_armijo=1e-4, ls_min_step=1e-6, fallback_sweeps=10, verbose=False,
                 progress=False, warn=True):
    r"""Sinkhorn-Newton-Sparse on :class:`~numopt.problems.OptimalTransport` (see the module docstring).

    Parameters
    ----------
    problem : OptimalTransport
    x0 : array_like, shape (n + m,), optional
        Warm start: stacked dual potentials ``(x, y)``.
    callback : callable, optional
        ``callback(intermediate_result)`` after every check of the Sinkhorn stage and every Newton step
        (fields ``err``, ``stage`` 0/1/2, ...); may raise ``StopIteration``.

    Options
    -------
    maxiter : int
        Maximum number of iterations in all: Sinkhorn sweeps + Newton steps + fallback sweeps.
        ``nit`` counts the same (``nit = nit_sinkhorn + nit_newton + fallback sweeps``).
    tol : float
        Stop when :math:`\|P1-a\|_1 + \|P^\top 1-b\|_1 \le` ``tol`` (measured on the returned plan).
    n_sinkhorn : int
        Most Sinkhorn sweeps before the Newton stage (N1; the paper uses 20, or 700 for an L1 cost).
    switch_err : float
        The Sinkhorn stage ends early, at a check, once the L1 error is ``<= switch_err * sum(a)``
        (Newton converges from there on the benchmark cases) or ``<= tol``.
    check_every : int
        Sweeps between error checks in the Sinkhorn stage (a check is free: it rides along a sweep).
    sparsity : (str, number)
        ``("mass", delta)``: keep the largest entries of P until the dropped mass is ``<= delta * sum(P)``
        (default, 1e-5); ``("lambda", lam)``: keep about ``lam * n * m`` entries (the paper: lam = 2/n);
        ``("k", k)``: keep about ``k`` entries. One global threshold, never a per-row top-k. The kept
        count is floored at ``n + m``.
    density_max : float
        Cap on the fraction of entries of P kept (0 < density_max <= 1).
    reselect : float
        The sparsity pattern is kept across Newton steps (its values are updated exactly) until the mass
        it drops exceeds ``reselect`` times the mass dropped when it was chosen (floor 1e-12 of the total);
        then it is chosen again (one more pass over the plan). ``reselect <= 1`` chooses it every step.
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
        As ``sinkhorn_log`` plus ``nit_newton``, ``n_fallback`` (events), ``nit_fallback_sweeps``,
        ``cg_iters`` and ``density`` (per Newton step or fallback), ``passes`` (passes over the n x m
        data by kind), and ``history`` with ``err`` per check / step and ``stage`` (0 Sinkhorn, 1 Newton,
        2 fallback).
    """
    check_common(maxiter, tol, verbose, progress, warn)
    check_int(n_sinkhorn, "n_sinkhorn", min_value=0)
    check_int(check_every, "check_every", min_value=1)
    switch_err = check_positive(switch_err, "switch_err", strict=False)
    rule, value = _check_sparsity(sparsity)
    density_max = check_positive(density_max, "density_max")
    if density_max > 1:
        raise ValueError(f"density_max must be <= 1; got {density_max!r}")
    reselect = check_positive(reselect, "reselect", strict=False)
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
    sc = _Scaled(problem)
    a, b = sc.a, sc.b
    mon = Monitor("sns", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter, log_every=1)

    def l1(r, c):
        with np.errstate(invalid="ignore", over="ignore"):
            return float(np.abs(r - a).sum() + np.abs(c - b).sum())

    def report(err, n_it, **fields):
        mon.nit = nit - n_it
        x = stacked(problem, lu, lv) if callback is not None else None
        return mon.step(x, n=n_it, err=err, **fields)

    # --- 1. Sinkhorn stage: one pass with exponentials builds B, then one pass over B per sweep -----------
    nit = nit_sk = 0
    state = None
    r, c, c_upd = sc.absorb(lu, lv)          # the start point's marginals and the row update's columns
    err = l1(r, c)
    if np.isfinite(err) and report(err, 0, stage=0):
        state = "stopped"
    if err <= tol:
        state = "converged"
    elif state is None and (n_sinkhorn > 0 or not np.isfinite(err)) and maxiter > 0:
        lu = sc.lu0 + np.log(a / sc.S)       # the exact row update, then the column update: sweep 1
        lv = sc.col_update(lu, c_upd)
        if not sc.safe(lu, lv):
            sc.absorb(lu, lv)
        nit = nit_sk = 1
        while nit_sk < n_sinkhorn and nit < maxiter:
            lu_new, lv_new, err = sc.sweep(lu, lv)     # err: of (lu, lv); its columns are exact
            if not np.isfinite(err):
                state = "breakdown"
                break
            if err <= tol:
                state = "converged"              # (lu, lv) is returned; the sweep is dropped
                break
            lu, lv = lu_new, lv_new
            nit += 1
            nit_sk += 1
            if nit_sk % check_every == 0 or err <= switch_err * problem.mass:
                if report(err, 1, stage=0):
                    state = "stopped"
                    break
                if err <= switch_err * problem.mass:
                    break

    # --- 2. Newton stage -------------------------------------------------------------------------------
    nit_newton = n_fallback = nit_fb_sweeps = 0
    cg_iters, density = [], []
    pattern = None
    if state is None:
        r, c = sc.rc(lu, lv, hist=True)
        err = l1(r, c)
        if not np.isfinite(err):
            state = "breakdown"
        elif err <= tol:
            state = "converged"
    f = float(a @ lu + b @ lv - r.sum())
    while state is None and nit < maxiter:
        g = np.concatenate([a - r, b - c])
        gnorm = float(np.sqrt(g @ g))
        if pattern is None:
            pattern = sc.select(lu, lv, rule, value, density_max)
            fresh = True
        indptr, indices, bvals = pattern
        u, v = sc.scalings(lu, lv)
        vals, kept = kern.pattern_values(indptr, indices, bvals, u, v)
        total = r.sum()
        dropped = max(total - kept, 0.0) / total
        if fresh:
            drop0 = dropped
            fresh = False
        ridge = 1e-12 * max(float(r.max()), float(c.max()))
        hp, hi, hx, diag = kern.hessian_csr(indptr, indices, vals, r, c, ridge)
        rtol = cg_rtol if cg_rtol is not None else min(0.1, np.sqrt(gnorm))
        dz, it_cg, _ = kern.pcg_jacobi(hp, hi, hx, diag, g, rtol, cg_maxiter, n)
        du, dv = dz[:n], dz[n:]
        slope = float(g @ dz)
        accepted = False
        if np.all(np.isfinite(dz)) and slope > 0:
            alpha = 1.0
            while alpha >= ls_min_step:
                lu_t, lv_t = lu + alpha * du, lv + alpha * dv
                if sc.safe(lu_t, lv_t):            # else B cannot represent the trial: shorter step
                    r_t, c_t = sc.rc(lu_t, lv_t)
                    f_t = float(a @ lu_t + b @ lv_t - r_t.sum())
                    if np.isfinite(f_t):
                        with np.errstate(over="ignore", invalid="ignore"):
                            gt2 = float(np.sum((a - r_t) ** 2) + np.sum((b - c_t) ** 2))
                        if f_t >= f + ls_armijo * alpha * slope or np.sqrt(gt2) < gnorm:
                            accepted = True
                            break
                alpha *= 0.5
        rebased = False
        if accepted:
            lu, lv, f, r, c = lu_t, lv_t, f_t, r_t, c_t
            nit_newton += 1
            stage, nstep = 1, 1
            if not sc.safe(lu, lv) or np.max(lu - sc.lu0) + np.max(lv - sc.lv0) > 0.5 * _SAFE_LOG:
                r, c, _ = sc.absorb(lu, lv)         # keep room for the next trials
                rebased = True
        else:
            # fallback: Sinkhorn sweeps from the current point (the Newton model is poor here, as with
            # non-unique LP optima: several sweeps first), then fresh marginals and a fresh pattern
            nstep = max(1, min(fallback_sweeps, maxiter - nit))
            for _ in range(nstep):
                lu, lv, _ = sc.sweep(lu, lv)
            n_fallback += 1
            nit_fb_sweeps += nstep
            alpha = 0.0
            stage = 2
            rebased = True
        if rebased:
            r, c = sc.rc(lu, lv, hist=True)
            f = float(a @ lu + b @ lv - r.sum())
            pattern = None
        # re-centre the gauge (lu + t, lv - t leaves P, and the base's bound, unchanged)
        t = (lv.sum() - lu.sum()) / N
        lu = lu + t
        lv = lv - t
        f += t * (a.sum() - b.sum())
        nit += nstep
        err = l1(r, c)
        dens = indptr[-1] / (n * m)
        cg_iters.append(it_cg)
        density.append(dens)
        stop = report(err, nstep, stage=stage, step=alpha, cg_iters=it_cg, density=dens)
        if not np.isfinite(err):
            state = "breakdown"
        elif err <= tol:
            state = "converged"
        elif stop:
            state = "stopped"
        elif pattern is not None:
            u, v = sc.scalings(lu, lv)
            _, kept = kern.pattern_values(indptr, indices, bvals, u, v)
            if max(r.sum() - kept, 0.0) / r.sum() > max(reselect * drop0, 1e-12):
                r, c = sc.rc(lu, lv, hist=True)    # the pattern went stale: choose it again
                pattern = None

    # --- 3. The plan, its exact marginals and cost, in one pass --------------------------------------------
    if not sc.safe(lu, lv):
        sc.absorb(lu, lv)
    P, r, c, cost = sc.final(lu, lv)
    f = float(a @ lu + b @ lv - r.sum())
    err = l1(r, c)
    if "err" in mon.history and mon.history["err"]:
        mon.history["err"][-1] = err              # the error of the returned plan itself
    status, message = None, None
    if state == "breakdown" or not np.isfinite(err):
        status, message = STATUS_BREAKDOWN, "Non-finite marginal error (overflow in the potentials)."
    converged = state == "converged" and err <= tol
    mon.nit = nit
    return finish(problem, None, mon, lu, lv, converged=converged, status=status, message=message,
                  warn=warn, P=P, r=r, c=c, dual=f, cost=cost, nit_sinkhorn=nit_sk, nit_newton=nit_newton,
                  n_fallback=n_fallback, nit_fallback_sweeps=nit_fb_sweeps,
                  cg_iters=np.asarray(cg_iters, dtype=np.int64), density=np.asarray(density),
                  passes=dict(sc.passes))
