"""The entropic optimal-transport problem (validated once, solved by ``sns``, ``sinkhorn_log``, ``sinkhorn``)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._validation import as_float_array, check_finite, check_positive
from ..problems import Problem

__all__ = ["OptimalTransport"]


_POOL = None


def _min_max(M):
    """``(M.min(), M.max())``; for a large M the two reductions run side by side on two threads (NumPy
    releases the GIL in them), which halves the validation time of the solvers' biggest input."""
    global _POOL
    if M.size < (1 << 20) or (os.cpu_count() or 1) < 2:
        return float(M.min()), float(M.max())
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="numopt-ot-minmax")
    lo = _POOL.submit(M.min)
    hi = float(M.max())
    return float(lo.result()), hi


def _histogram(v, name, length, other_len_name):
    arr = np.asarray(v) if not isinstance(v, np.ndarray) else v
    if arr.ndim == 1 and arr.size == 0:
        return np.full(length, 1.0 / length), True
    arr = as_float_array(v, name, ndim=1)
    if arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length} (= {other_len_name}); got {arr.shape[0]}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be nonnegative; min is {float(arr.min())!r}")
    if not arr.sum() > 0:
        raise ValueError(f"{name} must have positive total mass")
    return arr, False


class OptimalTransport(Problem):
    r"""Entropic optimal transport between two histograms.

    .. math::

        \min_{P \ge 0,\; P 1 = a,\; P^\top 1 = b} \langle M, P\rangle + \mathrm{reg} \sum_{ij} P_{ij}\log P_{ij}

    solved through its concave dual in the potentials :math:`(x, y)`, with :math:`\eta = 1/\mathrm{reg}`,

    .. math::

        f(x, y) = a^\top x + b^\top y - \frac{1}{\eta}\sum_{ij} e^{\eta(x_i + y_j - M_{ij}) - 1},
        \qquad P_{ij} = e^{\eta(x_i + y_j - M_{ij}) - 1}.

    Parameters
    ----------
    a : array_like, shape (n,)
        Source histogram, nonnegative; an empty list means uniform ``1/n``.
    b : array_like, shape (m,)
        Target histogram, nonnegative; empty means uniform. Its total must equal ``sum(a)`` to a relative
        1e-8 (1e-5 when every input is float32); ``b`` is then rescaled to ``sum(a)`` exactly, which makes
        the Newton system consistent.
    M : array_like, shape (n, m)
        Finite cost matrix.
    reg : float
        Entropic regularization, > 0 (POT's ``reg``; the paper's :math:`\eta = 1/\mathrm{reg}`).

    Notes
    -----
    Rows with ``a_i = 0`` and columns with ``b_j = 0`` are removed before solving; the plan gets zero
    rows/columns there and the potentials are ``-inf`` (as POT's ``log_u``/``log_v``).
    Everything is computed in float64; results are cast back to ``dtype`` (float32 only if every array
    input is float32).
    """

    def __init__(self, a, b, M, reg):
        # finiteness is checked below from min and max (they propagate NaN): two passes over M, not four
        M = as_float_array(M, "M", ndim=2, allow_nan=True, allow_inf=True)
        if 0 in M.shape:
            raise ValueError(f"M must be non-empty; got shape {M.shape}")
        n, m = M.shape
        a, a_uniform = _histogram(a, "a", n, "M.shape[0]")
        b, b_uniform = _histogram(b, "b", m, "M.shape[1]")
        self.reg = check_positive(reg, "reg")
        dtypes = [M.dtype] + [v.dtype for v, u in ((a, a_uniform), (b, b_uniform)) if not u]
        self.dtype = np.dtype(np.float32) if all(d == np.float32 for d in dtypes) else np.dtype(np.float64)
        a64 = a.astype(np.float64)
        b64 = b.astype(np.float64)
        sa, sb = float(np.sum(a64)), float(np.sum(b64))
        rtol = 1e-5 if self.dtype == np.float32 else 1e-8
        if abs(sa - sb) > rtol * sa:
            raise ValueError(f"a and b must have the same total mass (balanced OT); got sum(a)={sa!r}, "
                             f"sum(b)={sb!r} (relative tolerance {rtol:g})")
        lo, hi = _min_max(M)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            check_finite(M, "M")                              # raises, naming NaN or inf
        if not np.isfinite(max(hi, -lo) / self.reg):         # max |M|, no temporary
            raise ValueError(f"reg={reg!r} is too small to represent M / reg in float64")
        self.a, self.b, self.M = a, b, M
        self.n, self.m = n, m
        self.mass = sa
        # the reduced problem the solvers see: positive masses only, b rescaled to sum(a) exactly
        self.rows = np.flatnonzero(a64 > 0)
        self.cols = np.flatnonzero(b64 > 0)
        self.a_red = np.ascontiguousarray(a64[self.rows])
        b_red = b64[self.cols]
        self.b_red = np.ascontiguousarray(b_red * (sa / np.sum(b_red)))
        full = self.rows.size == n and self.cols.size == m
        M64 = M.astype(np.float64, copy=False)
        self.M_red = M64 if full else np.ascontiguousarray(M64[np.ix_(self.rows, self.cols)])

    # --- conversions between the full and the reduced problem ---------------------------------------
    def log_potentials(self, x0):
        """Reduced scaled log-potentials ``(lu, lv)`` from stacked dual potentials ``x0 = (x, y)``.

        ``lu = x / reg - 1`` and ``lv = y / reg`` (POT's ``log_u``, ``log_v``). Entries at zero-mass rows or
        columns are ignored (they may be ``-inf``); the others must be finite.
        """
        n, m = self.n, self.m
        if x0 is None:
            return np.zeros(self.rows.size), np.zeros(self.cols.size)
        x0 = as_float_array(x0, "x0", ndim=1, dtype=np.float64, allow_inf=True, allow_nan=False)
        if x0.shape[0] != n + m:
            raise ValueError(f"x0 must stack the potentials (x, y): length {n + m}; got {x0.shape[0]}")
        x, y = x0[:n][self.rows], x0[n:][self.cols]
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("x0 must be finite where a > 0 and b > 0")
        return x / self.reg - 1.0, y / self.reg

    def from_log_potentials(self, log_u, log_v):
        """Stacked dual potentials ``x0`` from POT's ``(log_u, log_v)`` (warm start)."""
        n, m = self.n, self.m
        log_u = as_float_array(log_u, "warmstart[0] (log_u)", ndim=1, dtype=np.float64, allow_inf=True)
        log_v = as_float_array(log_v, "warmstart[1] (log_v)", ndim=1, dtype=np.float64, allow_inf=True)
        if log_u.shape[0] != n or log_v.shape[0] != m:
            raise ValueError(f"warmstart must be (log_u, log_v) of lengths ({n}, {m}); "
                             f"got ({log_u.shape[0]}, {log_v.shape[0]})")
        return np.concatenate([(log_u + 1.0) * self.reg, log_v * self.reg])

    def expand(self, lu, lv, P_red):
        """Full-size ``(log_u, log_v, plan)`` from the reduced solution (zeros / -inf where the mass is 0)."""
        log_u = np.full(self.n, -np.inf)
        log_v = np.full(self.m, -np.inf)
        log_u[self.rows] = lu
        log_v[self.cols] = lv
        if self.rows.size == self.n and self.cols.size == self.m:
            P = P_red
        else:
            P = np.zeros((self.n, self.m))
            P[np.ix_(self.rows, self.cols)] = P_red
        return log_u, log_v, P
