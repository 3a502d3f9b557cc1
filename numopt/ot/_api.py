r"""POT-compatible front doors: ``numopt.ot.sinkhorn`` and ``numopt.ot.sinkhorn2``.

Same positional order, defaults and return conventions as ``ot.sinkhorn`` / ``ot.sinkhorn2``, so a POT
user changes one import. Differences, on purpose:

* the stopping measure ``stopThr`` applies to the **full L1 marginal error**
  :math:`\|P1-a\|_1 + \|P^\top 1-b\|_1`; POT's is :math:`\|P^\top 1-b\|_2` (always smaller), so our
  plans at the same ``stopThr`` are at least as converged;
* ``log["err"]`` holds that L1 error at every check (Sinkhorn) and Newton step (SNS);
* the default method is ``"sns"`` (Sinkhorn-Newton-Sparse), and masses must balance
  (``|sum a - sum b| <= 1e-8 sum a``); unbalanced inputs raise ``ValueError``.
"""
from __future__ import annotations

import numpy as np

from .._methods import check_options, get_method
from .._validation import as_float_array
from ._problem import OptimalTransport

__all__ = ["sinkhorn", "sinkhorn2"]

_METHODS = ("sns", "sinkhorn_log", "sinkhorn")


def _solve_one(a, b, M, reg, method, numItermax, stopThr, verbose, warn, warmstart, options):
    problem = OptimalTransport(a, b, M, reg)
    x0 = None if warmstart is None else problem.from_log_potentials(*_unpack_warmstart(warmstart))
    m = get_method(method, "minimize")
    opts = check_options(m, {**options, "maxiter": numItermax, "tol": stopThr, "verbose": verbose, "warn": warn})
    return problem, m.load()(problem, x0, **opts)


def _unpack_warmstart(warmstart):
    if not (isinstance(warmstart, (tuple, list)) and len(warmstart) == 2):
        raise TypeError("warmstart must be a pair (log_u, log_v) of dual vectors, as in POT")
    return warmstart


def _log_dict(res):
    log = {
        "niter": int(res.nit),
        "err": list(np.asarray(res.history.get("err", []), dtype=float)),
        "log_u": res.log_u,
        "log_v": res.log_v,
        "u": np.exp(res.log_u),
        "v": np.exp(res.log_v),
        "marginal_error": res.marginal_error,
        "nit_sinkhorn": res.nit_sinkhorn,
        "nit_newton": res.nit_newton,
        "cost": res.cost,
        "result": res,
    }
    for key in ("n_fallback", "nit_rescue", "cg_iters", "density"):
        if key in res:
            log[key] = res[key]
    return log


def _check_method(method):
    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ValueError(f"Unknown method {method!r}; numopt.ot.sinkhorn methods are {list(_METHODS)}")
    return method.lower()


def _multi(a, b, M, reg, method, numItermax, stopThr, verbose, warn, warmstart, options):
    """One solve per column of a 2-D b (POT's multi-histogram mode): losses and logs."""
    losses, logs = [], []
    for k in range(b.shape[1]):
        ws = None if warmstart is None else (warmstart[0], np.asarray(warmstart[1])[:, k])
        problem, res = _solve_one(a, b[:, k], M, reg, method, numItermax, stopThr, verbose, warn, ws, options)
        losses.append(res.cost)
        logs.append(_log_dict(res))
    dt = problem.dtype
    log = {key: [lg[key] for lg in logs] for key in logs[0]}
    log["niter"] = max(lg["niter"] for lg in logs)
    return np.asarray(losses, dtype=dt), log


def sinkhorn(a, b, M, reg, method="sns", numItermax=1000, stopThr=1e-9, verbose=False, log=False, warn=True,
             warmstart=None, **options):
    r"""Entropic OT plan, a drop-in for ``ot.sinkhorn``.

    .. math::

        \gamma = \arg\min_{\gamma \ge 0,\ \gamma 1 = a,\ \gamma^\top 1 = b}
        \langle \gamma, M\rangle + \mathrm{reg} \sum_{ij} \gamma_{ij} \log \gamma_{ij}

    Parameters
    ----------
    a : array_like, shape (n,)
        Source histogram (empty list: uniform).
    b : array_like, shape (m,) or (m, k)
        Target histogram(s) (empty list: uniform). With k columns, one solve per column and the
        transport costs are returned (as POT does).
    M : array_like, shape (n, m)
        Cost matrix.
    reg : float
        Entropic regularization > 0.
    method : {"sns", "sinkhorn_log", "sinkhorn"}
        ``"sns"``: Sinkhorn-Newton-Sparse (default; fast to high accuracy at small reg);
        ``"sinkhorn_log"``: compiled log-domain Sinkhorn; ``"sinkhorn"``: kernel form (large reg).
    numItermax : int
        Maximum number of iterations (Sinkhorn sweeps + Newton steps for SNS).
    stopThr : float
        Tolerance on the full L1 marginal error :math:`\|\gamma 1-a\|_1 + \|\gamma^\top 1-b\|_1`
        (POT: :math:`\|\gamma^\top 1-b\|_2`, which is smaller).
    verbose : bool
        Log progress through ``logging.getLogger("numopt.<method>")``.
    log : bool
        Also return a dict with ``niter``, ``err``, ``u``, ``v``, ``log_u``, ``log_v`` and numopt extras
        (``marginal_error``, ``nit_sinkhorn``, ``nit_newton``, ``n_fallback``, ``cost``, ``result``).
    warn : bool
        Warn (``ConvergenceWarning``, a ``UserWarning``) when ``stopThr`` is not reached.
    warmstart : tuple of arrays, optional
        ``(log_u, log_v)`` as returned in POT's or our log.
    **options
        Method options (see ``numopt.show_options(method)``), e.g. ``sparsity=("mass", 1e-5)``.

    Returns
    -------
    gamma : ndarray, shape (n, m)
        The plan, in the input dtype (float32 only if every input is float32); zero rows/columns where
        the mass is zero. With a 2-D ``b``: the costs, shape (k,).
    log : dict
        Only if ``log=True``.
    """
    return _front(a, b, M, reg, method, numItermax, stopThr, verbose, log, warn, warmstart, options, plan=True)


def sinkhorn2(a, b, M, reg, method="sns", numItermax=1000, stopThr=1e-9, verbose=False, log=False, warn=True,
              warmstart=None, **options):
    r"""Entropic OT loss :math:`\langle \gamma^*, M\rangle` (without the entropy term), a drop-in for
    ``ot.sinkhorn2``.

    Same parameters as :func:`sinkhorn`. Returns a float (an array of shape (k,) for a 2-D ``b``) in the
    input dtype, and the log dict when ``log=True``.
    """
    return _front(a, b, M, reg, method, numItermax, stopThr, verbose, log, warn, warmstart, options, plan=False)


def _front(a, b, M, reg, method, numItermax, stopThr, verbose, log, warn, warmstart, options, *, plan):
    """Shared body of sinkhorn (``plan=True``: the plan) and sinkhorn2 (the cost); 2-D b: the costs."""
    method = _check_method(method)
    b_arr = np.asarray(b) if not isinstance(b, np.ndarray) else b
    if b_arr.ndim == 2:
        b2 = as_float_array(b, "b", ndim=2)
        losses, lg = _multi(a, b2, M, reg, method, numItermax, stopThr, verbose, warn, warmstart, options)
        return (losses, lg) if log else losses
    problem, res = _solve_one(a, b, M, reg, method, numItermax, stopThr, verbose, warn, warmstart, options)
    out = res.plan if plan else problem.dtype.type(res.cost)
    return (out, _log_dict(res)) if log else out
