"""Numba kernels of the entropic-OT solvers: fused log-domain passes, histogram selection, sparse CG.

All kernels work in POT's scaled log potentials ``lu, lv`` and the one cost buffer ``K = -M / reg``:
the plan is ``P_ij = exp(E_ij)`` with the exponent ``E_ij = lu_i + K_ij + lv_j``.
They trust their inputs (shapes, finiteness): :class:`numopt.problems.OptimalTransport` checks them.

Speed notes
-----------
* ``fexp`` is a branch-free ``exp`` (Cody-Waite reduction and a degree-12 Taylor polynomial, relative
  error below 5e-16 on [-708, 709]) that LLVM vectorises; ``math.exp`` calls libm once per entry
  and is about 20x slower here (no SVML).
* Row sums are taken in-thread; column sums go to one buffer per chunk of rows and are reduced after,
  so no two threads write the same column sum.
* Sinkhorn sums skip the max-shift of the log-sum-exp: after a column update every ``E_ij <= log b_j``
  (and after a row update ``E_ij <= log a_i``), so the plain sum cannot overflow. Only the rare row or
  column whose sum leaves the normal range is recomputed with the max shift.
"""
from __future__ import annotations

import math
import types as pytypes

import numba as nb
import numpy as np
from numba import njit, prange, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

__all__ = ["fexp", "neg_scaled_cost", "sinkhorn_block", "dual_pass", "log2_histogram", "key_threshold",
           "schur_matvec", "pcg_schur", "N_KEYS", "absorb", "scaled_pass", "extract_scaled",
           "filter_candidates", "pattern_sums", "window_counts", "value_histogram", "filter_pattern",
           "absorb_sparse", "plan_from_cost", "shift_range", "bracket", "finalize_plan", "col_lse_cost"]

_FM = {"reassoc", "contract", "nsz", "arcp"}     # no "nnan"/"ninf": inf and NaN must survive as values
_LOG2E = 1.4426950408889634
_LN2HI = 0.6931471803691238
_LN2LO = 1.9082149292705877e-10
_TINY = 1e-290          # below this a plain sum has lost digits to underflow: recompute with a max shift
N_KEYS = 8192           # float64 bit pattern >> 50: sign(0) + 11 exponent bits + 2 mantissa bits
_KEY_SHIFT = 50


_PAR_MIN = 1 << 18     # below this many entries a pass runs serially: a parallel launch costs more


def _twins(fastmath=False):
    """Compile ``f`` twice, parallel and serial (``prange`` acts as ``range``); returns ``(par, ser)``.

    The serial twin is a copy under another qualified name so that the two have separate cache files.
    """
    def deco(f):
        g = pytypes.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__,
                                 f.__closure__)
        g.__qualname__ = f.__qualname__ + "_serial"
        par = njit(cache=True, nogil=True, parallel=True, fastmath=fastmath)(f)
        ser = njit(cache=True, nogil=True, fastmath=fastmath)(g)
        return par, ser
    return deco


@intrinsic
def _i64_as_f64(typingctx, x):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return sig, codegen


@intrinsic
def _f64_as_i64(typingctx, x):
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return sig, codegen


@njit(inline="always", fastmath={"contract"})
def fexp(x):
    """exp(x) without a libm call: exact 0 below -708, inf above 709, NaN stays NaN."""
    xc = min(max(x, -708.0), 709.0)
    kf = math.floor(xc * _LOG2E + 0.5)
    r = (xc - kf * _LN2HI) - kf * _LN2LO          # |r| <= ln2 / 2
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    v = p * _i64_as_f64((np.int64(kf) + 1023) << 52)
    if x < -708.0:
        v = 0.0
    if x > 709.0:
        v = np.inf
    if x != x:
        v = x
    return v


@njit(cache=True, nogil=True)
def fexp_array(x):
    """``fexp`` over an array (for the tests)."""
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = fexp(x[i])
    return out


@_twins()
def _neg_scaled_cost_impl(M, reg, K):
    n, m = M.shape
    inv = 1.0 / reg
    for i in prange(n):
        for j in range(m):
            K[i, j] = -M[i, j] * inv
    return K


_neg_scaled_cost_par, _neg_scaled_cost_ser = _neg_scaled_cost_impl


@njit(cache=True, nogil=True)
def neg_scaled_cost(M, reg, K):
    """K = -M / reg (float64), rows in parallel for large M."""
    if M.size >= _PAR_MIN:
        _neg_scaled_cost_par(M, reg, K)
    else:
        _neg_scaled_cost_ser(M, reg, K)
    return K


@njit(cache=True, nogil=True, fastmath=_FM)
def _row_lse_shifted(K, i, lui, lv):
    """log sum_j exp(lui + K_ij + lv_j) with the max shift (rare path)."""
    m = K.shape[1]
    mx = -np.inf
    for j in range(m):
        e = lui + K[i, j] + lv[j]
        if e > mx:
            mx = e
    s = 0.0
    for j in range(m):
        s += fexp(lui + K[i, j] + lv[j] - mx)
    return mx + math.log(s)


@njit(cache=True, nogil=True, fastmath=_FM)
def _col_lse_shifted(K, j, lu, lvj):
    """log sum_i exp(lu_i + K_ij + lvj) with the max shift (rare path)."""
    n = K.shape[0]
    mx = -np.inf
    for i in range(n):
        e = lu[i] + K[i, j] + lvj
        if e > mx:
            mx = e
    s = 0.0
    for i in range(n):
        s += fexp(lu[i] + K[i, j] + lvj - mx)
    return mx + math.log(s)


ROWS, ROWS_COLS, PLAN = 0, 1, 2     # what a fused pass produces


@_twins(_FM)
def _pass_impl(K, lu, lv, P, r, acc, mode):
    """One pass over E_ij = lu_i + K_ij + lv_j, rows in chunks.

    Always r_i = sum_j P_ij (in-thread); with ``mode >= ROWS_COLS`` also acc[t, j] = column sums over the
    rows of chunk t (one buffer per chunk: no two threads write the same sum); with ``mode == PLAN``
    also stores P_ij.
    """
    n, m = K.shape
    nchunk = acc.shape[0]
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        if mode != ROWS:
            for j in range(m):
                acc[t, j] = 0.0
        for i in range(lo, hi):
            lui = lu[i]
            s = 0.0
            if mode == ROWS:
                for j in range(m):
                    s += fexp(lui + K[i, j] + lv[j])
            elif mode == ROWS_COLS:
                for j in range(m):
                    e = fexp(lui + K[i, j] + lv[j])
                    s += e
                    acc[t, j] += e
            else:
                for j in range(m):
                    e = fexp(lui + K[i, j] + lv[j])
                    P[i, j] = e
                    s += e
                    acc[t, j] += e
            r[i] = s


_pass_par, _pass_ser = _pass_impl


@njit(cache=True, nogil=True)
def fused_pass(K, lu, lv, P, r, acc, mode):
    """``_pass_impl`` in parallel for large K, serially below ``_PAR_MIN`` entries."""
    if K.size >= _PAR_MIN:
        _pass_par(K, lu, lv, P, r, acc, mode)
    else:
        _pass_ser(K, lu, lv, P, r, acc, mode)


@njit(cache=True, nogil=True)
def _reduce_cols(acc, c):
    nchunk, m = acc.shape
    for j in range(m):
        c[j] = acc[0, j]
    for t in range(1, nchunk):
        for j in range(m):
            c[j] += acc[t, j]


@njit(cache=True, nogil=True)
def _update_rows(K, lu, lv, loga, r):
    n = lu.shape[0]
    for i in range(n):
        s = r[i]
        if s > _TINY and s < np.inf:
            lu[i] += loga[i] - math.log(s)
        else:
            lu[i] = loga[i] - (_row_lse_shifted(K, i, lu[i], lv) - lu[i])


@njit(cache=True, nogil=True)
def _update_cols(K, lu, lv, logb, c):
    m = lv.shape[0]
    for j in range(m):
        s = c[j]
        if s > _TINY and s < np.inf:
            lv[j] += logb[j] - math.log(s)
        else:
            lv[j] = logb[j] - (_col_lse_shifted(K, j, lu, lv[j]) - lv[j])


@njit(cache=True, nogil=True)
def _l1_error(a, r, b, c):
    e = 0.0
    for i in range(a.shape[0]):
        e += abs(r[i] - a[i])
    for j in range(b.shape[0]):
        e += abs(c[j] - b[j])
    return e


@njit(cache=True, nogil=True)
def sinkhorn_block(K, a, b, loga, logb, lu, lv, nsweeps, tol, r, c, acc):
    """Measure the L1 marginal error of (lu, lv), then, unless it is <= tol, do ``nsweeps`` sweeps.

    A sweep is the exact row update (lu) followed by the exact column update (lv). The error is
    measured in the first row pass of the block (column sums ride along), so checking costs no extra
    exponentials. Returns ``(sweeps_done, err)`` where ``err`` is the error of the state on entry.
    A non-finite error stops the block with 0 sweeps done.
    """
    fused_pass(K, lu, lv, K, r, acc, ROWS_COLS)
    _reduce_cols(acc, c)
    err = _l1_error(a, r, b, c)
    if not (err > tol) or not np.isfinite(err) or nsweeps == 0:
        return 0, err
    for k in range(nsweeps):
        if k > 0:
            fused_pass(K, lu, lv, K, r, acc, ROWS)
        _update_rows(K, lu, lv, loga, r)
        fused_pass(K, lu, lv, K, r, acc, ROWS_COLS)     # r is free again after the row update
        _reduce_cols(acc, c)
        _update_cols(K, lu, lv, logb, c)
    return nsweeps, err


@njit(cache=True, nogil=True)
def dual_pass(K, lu, lv, a, b, P, r, c, acc):
    """One fused pass: P = exp(E), r = P1, c = P^T 1; returns the scaled dual a.lu + b.lv - sum P.

    (The dual potential of the brief is ``reg * (returned value + sum(a))``.)
    """
    fused_pass(K, lu, lv, P, r, acc, PLAN)
    _reduce_cols(acc, c)
    # sums of n terms, done with the pairwise-accurate np.sum
    return np.sum(a * lu) + np.sum(b * lv) - np.sum(r)


@njit(inline="always")
def _rows_of(t, n, nchunk):
    """Rows ``lo:hi`` of the t-th of ``nchunk`` equal row chunks."""
    return t * n // nchunk, (t + 1) * n // nchunk


@njit(inline="always")
def _zero_chunk(t, acc, count, mass, hist):
    """Zero chunk t's column sums (and its histogram, with ``hist``)."""
    for j in range(acc.shape[1]):
        acc[t, j] = 0.0
    if hist:
        for k in range(N_KEYS):
            count[t, k] = 0
            mass[t, k] = 0.0


@_twins()
def _log2_histogram_impl(P, count, mass):
    n, m = P.shape
    nchunk = count.shape[0]
    for t in prange(nchunk):
        lo, hi = _rows_of(t, n, nchunk)
        _zero_chunk(t, mass, count, mass, True)      # no column sums here: mass stands in for them
        for i in range(lo, hi):
            for j in range(m):
                p = P[i, j]
                k = _f64_as_i64(p) >> _KEY_SHIFT
                count[t, k] += 1
                mass[t, k] += p


_log2_histogram_par, _log2_histogram_ser = _log2_histogram_impl


@njit(cache=True, nogil=True)
def log2_histogram(P, count, mass):
    """Histogram of the entries of P >= 0 by the top 13 bits of their float64 pattern.

    Key ``bits(P_ij) >> 50`` is monotone in P_ij and splits every octave into 4 bins, so one O(nm)
    pass serves both the count rule and the mass rule. ``count``/``mass`` have shape (nchunk, N_KEYS).
    """
    if P.size >= _PAR_MIN:
        _log2_histogram_par(P, count, mass)
    else:
        _log2_histogram_ser(P, count, mass)


@njit(cache=True, nogil=True)
def key_threshold(key):
    """The smallest float64 with histogram key ``key``: P >= key_threshold(k) <=> key(P) >= k."""
    return _i64_as_f64(np.int64(key) << _KEY_SHIFT)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _schur_mv(indptr, indices, vals, dr, dc, x, out):
    """out = S x for the Schur complement S = diag(dc) - P_s^T diag(1/dr) P_s, in one sweep of the CSR
    of P_s (each row is gathered, then scattered while it is in cache)."""
    n = dr.shape[0]
    m = dc.shape[0]
    for j in range(m):
        out[j] = dc[j] * x[j]
    for i in range(n):
        k0, k1 = indptr[i], indptr[i + 1]
        s0 = 0.0
        s1 = 0.0
        k = k0
        while k + 2 <= k1:                   # two partial sums: the gathers overlap
            s0 += vals[k] * x[indices[k]]
            s1 += vals[k + 1] * x[indices[k + 1]]
            k += 2
        if k < k1:
            s0 += vals[k] * x[indices[k]]
        yi = (s0 + s1) / dr[i]
        for k in range(k0, k1):
            out[indices[k]] -= vals[k] * yi


_SPARSE_PAR_MIN = 1 << 15    # nonzeros from which the sparse kernels split their rows over the threads


@njit(inline="always")
def _nnz_rows(indptr, t, nchunk):
    """Rows ``lo:hi`` of the t-th of ``nchunk`` row chunks holding about equal numbers of nonzeros."""
    n = indptr.shape[0] - 1
    nnz = indptr[n]
    lo = 0 if t == 0 else np.searchsorted(indptr, nnz * t // nchunk)
    hi = n if t == nchunk - 1 else np.searchsorted(indptr, nnz * (t + 1) // nchunk)
    return min(lo, n), min(hi, n)


@njit(cache=True, nogil=True, parallel=True, fastmath={"contract"})
def _schur_mv_par(indptr, indices, vals, dr, dc, x, out, cbuf):
    """``_schur_mv`` with the rows split over the threads (chunk t scatters into ``cbuf[t]``)."""
    m = dc.shape[0]
    nchunk = cbuf.shape[0]
    for t in prange(nchunk):
        lo, hi = _nnz_rows(indptr, t, nchunk)
        _zero_chunk(t, cbuf, cbuf, cbuf, False)
        for i in range(lo, hi):
            k0, k1 = indptr[i], indptr[i + 1]
            s0 = 0.0
            s1 = 0.0
            k = k0
            while k + 2 <= k1:
                s0 += vals[k] * x[indices[k]]
                s1 += vals[k + 1] * x[indices[k + 1]]
                k += 2
            if k < k1:
                s0 += vals[k] * x[indices[k]]
            yi = (s0 + s1) / dr[i]
            for k in range(k0, k1):
                cbuf[t, indices[k]] += vals[k] * yi
    for j in range(m):
        s = dc[j] * x[j]
        for t in range(nchunk):
            s -= cbuf[t, j]
        out[j] = s


@njit(cache=True, nogil=True, parallel=True, fastmath={"contract"})
def _schur_setup_par(indptr, indices, vals, dr, y, res, sd, cbuf, cbuf2):
    """``res -= P_s^T y`` and ``sd -= P_s^T (P_s o P_s) / dr`` (Schur right-hand side and diagonal), the rows
    split over the threads."""
    m = res.shape[0]
    nchunk = cbuf.shape[0]
    for t in prange(nchunk):
        lo, hi = _nnz_rows(indptr, t, nchunk)
        _zero_chunk(t, cbuf, cbuf, cbuf, False)
        _zero_chunk(t, cbuf2, cbuf2, cbuf2, False)
        for i in range(lo, hi):
            yi = y[i]
            ri = 1.0 / dr[i]
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                cbuf[t, j] += vals[k] * yi
                cbuf2[t, j] += vals[k] * vals[k] * ri
    for j in range(m):
        for t in range(nchunk):
            res[j] -= cbuf[t, j]
            sd[j] -= cbuf2[t, j]


@njit(cache=True, nogil=True, parallel=True, fastmath={"contract"})
def _back_substitute_par(indptr, indices, vals, b, dr, x, dz):
    """``dz[:n] = (b[:n] - P_s x) / dr``, rows in parallel."""
    for i in prange(dr.shape[0]):
        s = b[i]
        for k in range(indptr[i], indptr[i + 1]):
            s -= vals[k] * x[indices[k]]
        dz[i] = s / dr[i]


@njit(cache=True, nogil=True)
def schur_matvec(indptr, indices, vals, r, c, ridge, x):
    """S x for the Schur complement of ``pcg_schur`` (diagonals floored at ``ridge``, as there)."""
    out = np.empty(c.shape[0])
    _schur_mv(indptr, indices, vals, np.maximum(r, 0.0) + ridge, np.maximum(c, 0.0) + ridge, x, out)
    return out


@njit(cache=True, nogil=True, fastmath={"contract"})
def pcg_schur(indptr, indices, vals, r, c, ridge, rhs, rtol, maxiter, nchunk=1):
    r"""Solve the sparsified Newton system ``H_s dz = rhs`` on the Schur complement of its row block.

    ``H_s = [[D_r, P_s], [P_s^T, D_c]]`` with ``D_r = diag(r) + ridge``, ``D_c = diag(c) + ridge``: the
    diagonal keeps the dense marginals r, c (so H_s stays diagonally dominant, hence PSD) floored at
    ``ridge``, so a row whose mass underflowed never gives a zero pivot; P_s is given as CSR. The
    right-hand side ``(g_u, g_v)`` is first projected off the gauge e = (1_n, -1_m) (H e ~ 0); then

    .. math::

        S\,\Delta v = g_v - P_s^\top D_r^{-1} g_u,\quad S = D_c - P_s^\top D_r^{-1} P_s,\qquad
        \Delta u = D_r^{-1}(g_u - P_s \Delta v),

    by CG preconditioned with ``diag(S)``. The full residual of ``(du, dv)`` is ``(0, S dv - rhs_S)``, so
    CG stops at ``||res|| <= rtol * ||rhs||`` (of the full system) or after ``maxiter`` iterations. A
    product with S costs about one with H_s (one sweep of P_s), but CG on S needs far fewer: H_s is
    2-cyclic, so Jacobi-preconditioned CG on it makes one step of CG on S in two iterations, and diag(S)
    is a better preconditioner than diag(H_s) (measured: 2.5-10x fewer iterations on the benchmark
    cases). The result is projected off the gauge. Returns ``(dz, iterations, relative residual)``.
    """
    n = r.shape[0]
    m = c.shape[0]
    N = n + m
    dr = np.maximum(r, 0.0) + ridge
    dc = np.maximum(c, 0.0) + ridge
    b = rhs.copy()
    s = 0.0
    for i in range(N):
        s += b[i] if i < n else -b[i]
    s /= N
    for i in range(N):
        b[i] -= s if i < n else -s
    bnorm = math.sqrt(np.dot(b, b))
    dz = np.zeros(N)
    if bnorm == 0.0:
        return dz, 0, 0.0
    y = np.empty(n)
    for i in range(n):
        y[i] = b[i] / dr[i]
    res = b[n:].copy()                       # the reduced right-hand side, and residual at x = 0
    sd = dc.copy()                           # diag(S), floored: S is diagonally dominant
    par = nchunk > 1 and indptr[n] >= _SPARSE_PAR_MIN
    cbuf = np.empty((nchunk if par else 1, m))
    if par:
        _schur_setup_par(indptr, indices, vals, dr, y, res, sd, cbuf, np.empty_like(cbuf))
    else:
        for i in range(n):
            yi = y[i]
            ri = 1.0 / dr[i]
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                res[j] -= vals[k] * yi
                sd[j] -= vals[k] * vals[k] * ri
    for j in range(m):
        sd[j] = max(sd[j], ridge)
    x = np.zeros(m)
    z = np.empty(m)
    q = np.empty(m)
    stop = rtol * bnorm
    rz = 0.0
    rr = 0.0
    for j in range(m):
        z[j] = res[j] / sd[j]
        rz += res[j] * z[j]
        rr += res[j] * res[j]
    p = z.copy()
    it = 0
    rnorm = math.sqrt(rr)
    while it < maxiter and rnorm > stop:
        if par:
            _schur_mv_par(indptr, indices, vals, dr, dc, p, q, cbuf)
        else:
            _schur_mv(indptr, indices, vals, dr, dc, p, q)
        pq = np.dot(p, q)
        if not (pq > 0.0):
            break
        alpha = rz / pq
        rr = 0.0
        for j in range(m):
            x[j] += alpha * p[j]
            res[j] -= alpha * q[j]
            rr += res[j] * res[j]
        it += 1
        rnorm = math.sqrt(rr)
        if rnorm <= stop:
            break
        rz_new = 0.0
        for j in range(m):
            z[j] = res[j] / sd[j]
            rz_new += res[j] * z[j]
        beta = rz_new / rz
        rz = rz_new
        for j in range(m):
            p[j] = z[j] + beta * p[j]
    if par:                                  # back-substitution: du = D_r^-1 (g_u - P_s dv)
        _back_substitute_par(indptr, indices, vals, b, dr, x, dz)
    else:
        for i in range(n):
            s = b[i]
            for k in range(indptr[i], indptr[i + 1]):
                s -= vals[k] * x[indices[k]]
            dz[i] = s / dr[i]
    for j in range(m):
        dz[n + j] = x[j]
    s = 0.0
    for i in range(N):
        s += dz[i] if i < n else -dz[i]
    s /= N
    for i in range(N):
        dz[i] -= s if i < n else -s
    return dz, it, rnorm / bnorm


def n_chunks(n):
    """Chunks of rows for the per-chunk column buffers: one per thread, at most n."""
    return max(1, min(nb.get_num_threads(), n))


# --- the scaled (absorbed-kernel) form used by SNS ------------------------------------------------------
#
# SNS keeps a base matrix B_ij = exp(lu0_i - M_ij / reg + lv0_j) with every row maximum equal to 1
# (lu0_i = -max_j(lv0_j - M_ij / reg)), and writes the plan at any point (lu, lv) as
# P = diag(u) B diag(v), u = exp(lu - lu0), v = exp(lv - lv0). A pass over B then needs no exponential:
# it streams one n x m array like a matrix-vector product. Entries of B that underflowed are below
# e^-708 of their row maximum; the caller keeps max(lu - lu0) + max(lv - lv0) <= a bound (and re-absorbs
# otherwise), so such entries stay negligible in P.

SWEEP, RC, RC_HIST, SWEEP_HIST = 0, 1, 2, 3      # what a scaled pass does


@njit(cache=True, nogil=True, fastmath=True)
def _row_max_exponent(M, i, inv, lv):
    """max_j (lv_j - M_ij * inv). All-flags fastmath (a vectorised max) is safe here: M and lv are
    finite (validated inputs, finite potentials), so no NaN or inf can occur."""
    mx = -np.inf
    for j in range(M.shape[1]):
        mx = max(mx, lv[j] - M[i, j] * inv)
    return mx


@_twins(_FM)
def _absorb_impl(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u, start_cols, thr, cap, rowcnt, ccols, cvals, ovf):
    n, m = M.shape
    nchunk = acc_s.shape[0]
    for t in prange(nchunk):
        lo, hi = _rows_of(t, n, nchunk)
        _zero_chunk(t, acc_s, acc_s, acc_s, False)
        _zero_chunk(t, acc_u, acc_u, acc_u, False)
        if thr > 0.0:
            ovf[t] = 0
        q = cap[t]
        end = cap[t + 1]
        i0 = lo
        for i in range(lo, hi):
            mx = _row_max_exponent(M, i, inv, lv)
            s = 0.0
            for j in range(m):
                e = fexp(lv[j] - M[i, j] * inv - mx)
                B[i, j] = e
                s += e
            lu0[i] = -mx
            S[i] = s
            rs[i] = fexp(lu[i] + mx) * s
            if thr > 0.0:
                # the candidates B_ij >= thr, while the row is in cache (a separate loop keeps the
                # exponentials above vectorised)
                q0 = q
                for j in range(m):
                    bij = B[i, j]
                    if bij >= thr:
                        if q < end:
                            ccols[q] = j
                            cvals[q] = bij
                            q += 1
                        else:
                            ovf[t] = 1
                rowcnt[i] = q - q0
            if i - i0 == 3 or i == hi - 1:
                # column sums four rows at a time (rows still in cache): each sum read/written once
                _axpy_rows(B, i0, i + 1, a, S, acc_u, t)
                if start_cols:
                    _axpy_start(B, i0, i + 1, lu, lu0, acc_s, t)
                i0 = i + 1


@njit(inline="always", fastmath=_FM)
def _axpy_rows(B, i0, i1, a, S, acc, t):
    """acc[t] += sum_{i0 <= i < i1} (a_i / S_i) B[i] (up to four rows)."""
    m = B.shape[1]
    if i1 - i0 == 4:
        w0, w1, w2, w3 = a[i0] / S[i0], a[i0 + 1] / S[i0 + 1], a[i0 + 2] / S[i0 + 2], a[i0 + 3] / S[i0 + 3]
        for j in range(m):
            acc[t, j] += w0 * B[i0, j] + w1 * B[i0 + 1, j] + w2 * B[i0 + 2, j] + w3 * B[i0 + 3, j]
    else:
        for i in range(i0, i1):
            w = a[i] / S[i]
            for j in range(m):
                acc[t, j] += w * B[i, j]


@njit(inline="always", fastmath=_FM)
def _axpy_start(B, i0, i1, lu, lu0, acc, t):
    """acc[t] += sum_{i0 <= i < i1} exp(lu_i - lu0_i) B[i] (column sums at the start point)."""
    m = B.shape[1]
    for i in range(i0, i1):
        w = fexp(lu[i] - lu0[i])
        for j in range(m):
            acc[t, j] += w * B[i, j]


_absorb_par, _absorb_ser = _absorb_impl


@njit(cache=True, nogil=True)
def absorb(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u, start_cols, thr, cap, rowcnt, ccols, cvals, ovf):
    """One pass over M: the base matrix B of the point (lu, lv) and the sums SNS needs there.

    Writes ``B_ij = exp(lv_j - M_ij*inv - mx_i)`` with ``mx_i = max_j(lv_j - M_ij*inv)`` (so every row of
    B has maximum 1), ``lu0 = -mx``, ``S = B 1``, ``rs = u * S`` (row sums of the plan at (lu, lv),
    ``u = exp(lu - lu0)``), ``acc_s[t]`` = column sums of ``diag(u) B`` over row chunk t (plan column sums
    at (lu, lv); only with ``start_cols``, else zeros), and ``acc_u[t]`` = the same with ``u = a / S``
    (after an exact Sinkhorn row update).
    With ``thr > 0`` it also collects the *candidates* ``B_ij >= thr`` as (column, B_ij) in row order,
    chunk t into ``ccols/cvals[cap[t]:cap[t+1]]``, row i's count into ``rowcnt[i]``, and sets
    ``ovf[t] = 1`` when chunk t ran out of room (as ``scaled_pass``).
    The base potentials are ``(lu0, lv)``. ``rs``/``acc_s`` may overflow for a wild start point.
    """
    if M.size >= _PAR_MIN:
        _absorb_par(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u, start_cols, thr, cap, rowcnt, ccols, cvals,
                    ovf)
    else:
        _absorb_ser(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u, start_cols, thr, cap, rowcnt, ccols, cvals,
                    ovf)


@_twins(_FM)
def _absorb_sparse_impl(M, inv, lu, lv, a, window, lu0, S, rs, acc_s, acc_u, start_cols, cap, rowcnt, ccols, cvals,
                        ovf):
    n, m = M.shape
    nchunk = acc_s.shape[0]
    for t in prange(nchunk):
        lo, hi = _rows_of(t, n, nchunk)
        _zero_chunk(t, acc_s, acc_s, acc_s, False)
        _zero_chunk(t, acc_u, acc_u, acc_u, False)
        ovf[t] = 0
        q = cap[t]
        end = cap[t + 1]
        ebuf = np.empty(m)
        nb64 = m // 64
        for i in range(lo, hi):
            mx = -np.inf
            for j in range(m):
                e = lv[j] - M[i, j] * inv
                ebuf[j] = e
                mx = max(mx, e)
            lim = mx - window
            q0 = q
            # the candidates e >= lim, 64 columns at a time: a bit mask (no branch per entry), then
            # one step per set bit
            for blk in range(nb64 + 1):
                base = blk * 64
                width = min(64, m - base)
                bits = np.uint64(0)
                for k in range(width):
                    bits |= np.uint64(ebuf[base + k] >= lim) << np.uint64(k)
                while bits != 0:
                    if q < end:
                        ccols[q] = base + trailing_zeros(bits)
                        q += 1
                    else:
                        ovf[t] = 1
                    bits &= bits - np.uint64(1)
            s = 0.0
            for k in range(q0, q):           # exponentials of the candidates only
                bij = fexp(ebuf[ccols[k]] - mx)
                cvals[k] = bij
                s += bij
            rowcnt[i] = q - q0
            lu0[i] = -mx
            S[i] = s
            rs[i] = fexp(lu[i] + mx) * s
            w = a[i] / s if s > 0.0 else 0.0     # (s = 0 only after an overflow: sums discarded)
            ws = fexp(lu[i] + mx)
            for k in range(q0, q):
                acc_u[t, ccols[k]] += w * cvals[k]
                if start_cols:
                    acc_s[t, ccols[k]] += ws * cvals[k]


_absorb_sparse_par, _absorb_sparse_ser = _absorb_sparse_impl


@njit(cache=True, nogil=True)
def absorb_sparse(M, inv, lu, lv, a, window, lu0, S, rs, acc_s, acc_u, start_cols, cap, rowcnt, ccols, cvals,
                  ovf):
    """``absorb`` without the base matrix: only its candidates ``B_ij >= exp(-window)`` (the only entries
    that get an exponential; the others are told apart by their exponent) and the sums over them.

    Writes ``lu0``, the candidates (as ``absorb``), and ``S``, ``rs``, ``acc_s``, ``acc_u`` as ``absorb``
    but summed over the candidates only: every other entry of row i of B is below ``exp(-window)``, so
    ``S`` is short by less than ``m * exp(-window)`` (relative to ``S_i >= 1``). On an overflow
    (``ovf[t] = 1``) the sums are incomplete and the caller makes the dense pass instead.
    """
    if M.size >= _PAR_MIN:
        _absorb_sparse_par(M, inv, lu, lv, a, window, lu0, S, rs, acc_s, acc_u, start_cols, cap, rowcnt, ccols,
                           cvals, ovf)
    else:
        _absorb_sparse_ser(M, inv, lu, lv, a, window, lu0, S, rs, acc_s, acc_u, start_cols, cap, rowcnt, ccols,
                           cvals, ovf)


@njit(cache=True, nogil=True)
def shift_range(lu, lu0, lv, lv0):
    """``(max(lu - lu0) + max(lv - lv0), max(|lu - lu0|, |lv - lv0|))`` in one pass; NaN if any is."""
    mu = -np.inf
    mv = -np.inf
    w = 0.0
    bad = False
    for i in range(lu.shape[0]):
        d = lu[i] - lu0[i]
        bad |= d != d
        mu = max(mu, d)
        w = max(w, abs(d))
    for j in range(lv.shape[0]):
        d = lv[j] - lv0[j]
        bad |= d != d
        mv = max(mv, d)
        w = max(w, abs(d))
    if bad:
        return np.nan, np.nan
    return mu + mv, w


@njit(cache=True, nogil=True)
def bracket(indptr, indices, bvals, lu, lu0, lv, lv0, ref_lu, ref_lv, or_lo, or_hi, oc_lo, oc_hi, nchunk=1):
    """The marginal estimates of ``_Newton.estimate`` at (lu, lv) in one call: the plan values on the
    pattern (base values ``bvals`` scaled by ``u = exp(lu - lu0)``, ``v = exp(lv - lv0)``), their row and
    column sums, plus the off-pattern sums carried from the reference (lu_ref, lv_ref) where they lay in
    ``[o_lo, o_hi]``: row i's is within ``exp(du_i) [o_lo,i exp(min dv), o_hi,i exp(max dv)]``
    (``du = lu - lu_ref``, ``dv = lv - lv_ref``), columns alike. Returns ``(vals, r, c, bound, pattern
    sum)`` with the midpoints as estimates and the half-widths summed in ``bound``."""
    n = lu.shape[0]
    m = lv.shape[0]
    lo_u = np.inf
    hi_u = -np.inf
    lo_v = np.inf
    hi_v = -np.inf
    for i in range(n):
        d = lu[i] - ref_lu[i]
        lo_u = min(lo_u, d)
        hi_u = max(hi_u, d)
    for j in range(m):
        d = lv[j] - ref_lv[j]
        lo_v = min(lo_v, d)
        hi_v = max(hi_v, d)
    lo_u, hi_u, lo_v, hi_v = math.exp(lo_u), math.exp(hi_u), math.exp(lo_v), math.exp(hi_v)
    u = np.empty(n)
    eu = np.empty(n)
    v = np.empty(m)
    ev = np.empty(m)
    for i in range(n):                   # (separate loops: the exponentials vectorise)
        u[i] = fexp(lu[i] - lu0[i])
        eu[i] = fexp(lu[i] - ref_lu[i])
    for j in range(m):
        v[j] = fexp(lv[j] - lv0[j])
        ev[j] = fexp(lv[j] - ref_lv[j])
    vals, r, c = pattern_sums(indptr, indices, bvals, u, v, nchunk)
    psum = 0.0
    bound = 0.0
    for j in range(m):
        c_lo = ev[j] * oc_lo[j] * lo_u
        c_hi = ev[j] * oc_hi[j] * hi_u
        c[j] += 0.5 * (c_lo + c_hi)
        bound += 0.5 * (c_hi - c_lo)
    for i in range(n):
        r_lo = eu[i] * or_lo[i] * lo_v
        r_hi = eu[i] * or_hi[i] * hi_v
        psum += r[i]
        r[i] += 0.5 * (r_lo + r_hi)
        bound += 0.5 * (r_hi - r_lo)
    return vals, r, c, bound, psum


@njit(cache=True, nogil=True)
def window_counts(M, inv, lv, step, width):
    """Entries of every ``step``-th row by their distance below the row maximum of the exponent
    ``lv_j - M_ij*inv``: ``out[k]`` counts distances in ``[k, k+1)`` for ``k < width`` (a sample that
    sizes the candidate window of ``absorb`` before the pass)."""
    n, m = M.shape
    out = np.zeros(width, dtype=np.int64)
    for i in range(0, n, step):
        mx = _row_max_exponent(M, i, inv, lv)
        for j in range(m):
            d = mx - (lv[j] - M[i, j] * inv)
            if d < width:
                out[int(d)] += 1
    return out


@njit(cache=True, nogil=True)
def value_histogram(vals):
    """Histogram of nonnegative values by key (as ``log2_histogram``): ``(count, mass)``, length N_KEYS."""
    count = np.zeros(N_KEYS, dtype=np.int64)
    mass = np.zeros(N_KEYS)
    for k in range(vals.shape[0]):
        p = vals[k]
        key = _f64_as_i64(p) >> _KEY_SHIFT
        count[key] += 1
        mass[key] += p
    return count, mass


@_twins()
def _filter_count_impl(indptr, vals, rho, cnt, nchunk):
    n = indptr.shape[0] - 1
    for t in prange(nchunk):
        lo, hi = _nnz_rows(indptr, t, nchunk)
        for i in range(lo, hi):
            c = 0
            for k in range(indptr[i], indptr[i + 1]):
                c += vals[k] >= rho
            cnt[i] = c


@_twins()
def _filter_fill_impl(indptr, indices, bvals, vals, rho, sub_ptr, sub_ind, sub_b, sub_v, rows, cbuf):
    nchunk = cbuf.shape[0]
    for t in prange(nchunk):
        lo, hi = _nnz_rows(indptr, t, nchunk)
        _zero_chunk(t, cbuf, cbuf, cbuf, False)
        for i in range(lo, hi):
            q = sub_ptr[i]
            s = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                p = vals[k]
                if p >= rho:
                    j = indices[k]
                    sub_ind[q] = j
                    sub_b[q] = bvals[k]
                    sub_v[q] = p
                    q += 1
                    s += p
                    cbuf[t, j] += p
            rows[i] = s


_filter_count_par, _filter_count_ser = _filter_count_impl
_filter_fill_par, _filter_fill_ser = _filter_fill_impl


@njit(cache=True, nogil=True)
def filter_pattern(indptr, indices, bvals, vals, rho, m, nchunk=1):
    """The sub-pattern ``vals >= rho`` of a CSR pattern ``(indptr, indices, bvals)`` whose entries have
    the values ``vals``: ``(sub_indptr, sub_indices, sub_bvals, sub_vals, row sums, column sums)``.
    Rows are split over ``nchunk`` threads for a large pattern (a count pass, then a fill pass)."""
    n = indptr.shape[0] - 1
    par = nchunk > 1 and indptr[n] >= _SPARSE_PAR_MIN
    nch = nchunk if par else 1
    cnt = np.empty(n, dtype=np.int64)
    if par:
        _filter_count_par(indptr, vals, rho, cnt, nch)
    else:
        _filter_count_ser(indptr, vals, rho, cnt, nch)
    sub_ptr = np.empty(n + 1, dtype=np.int64)
    sub_ptr[0] = 0
    for i in range(n):
        sub_ptr[i + 1] = sub_ptr[i] + cnt[i]
    keep = sub_ptr[n]
    sub_ind = np.empty(keep, dtype=np.int64)
    sub_b = np.empty(keep)
    sub_v = np.empty(keep)
    rows = np.empty(n)
    cbuf = np.empty((nch, m))
    if par:
        _filter_fill_par(indptr, indices, bvals, vals, rho, sub_ptr, sub_ind, sub_b, sub_v, rows, cbuf)
    else:
        _filter_fill_ser(indptr, indices, bvals, vals, rho, sub_ptr, sub_ind, sub_b, sub_v, rows, cbuf)
    cols = np.empty(m)
    _reduce_cols(cbuf, cols)
    return sub_ptr, sub_ind, sub_b, sub_v, rows, cols


@njit(inline="always", fastmath=_FM)
def _hist_row(B, i, ui, v, floor, t, count, mass, q, end, ccols, cvals, ovf):
    """Histogram and candidates of row i of diag(u) B diag(v) (see ``scaled_pass``); returns the new q.

    Entries below ``floor`` go to one bin through scalars: scattering every tiny entry to the same bin
    would serialise on that bin's sum.
    """
    m = B.shape[1]
    nlow = 0
    mlow = 0.0
    for j in range(m):
        p = (ui * B[i, j]) * v[j]
        if p >= floor:
            k = _f64_as_i64(p) >> _KEY_SHIFT
            count[t, k] += 1
            mass[t, k] += p
            if q < end:
                ccols[q] = j
                cvals[q] = B[i, j]
                q += 1
            else:
                ovf[t] = 1
        else:
            nlow += 1
            mlow += p
    klow = max((_f64_as_i64(floor) >> _KEY_SHIFT) - 1, 0)
    count[t, klow] += nlow
    mass[t, klow] += mlow
    return q


@_twins(_FM)
def _scaled_impl(B, u, v, a, r, acc, mode, count, mass, floor, cap, rowcnt, ccols, cvals, ovf):
    n, m = B.shape
    nchunk = acc.shape[0]
    sweep = mode == SWEEP or mode == SWEEP_HIST
    hist = mode == RC_HIST or mode == SWEEP_HIST
    for t in prange(nchunk):
        lo, hi = _rows_of(t, n, nchunk)
        _zero_chunk(t, acc, count, mass, hist)
        if hist:
            ovf[t] = 0
        q = cap[t]
        end = cap[t + 1]
        # rows four at a time: each column sum is read and written once per four rows of B
        i = lo
        while i < hi:
            nb = min(4, hi - i)
            if nb < 4:                     # the chunk's last rows, one at a time
                for ii in range(i, hi):
                    s = 0.0
                    for j in range(m):
                        s += B[ii, j] * v[j]
                    ui = u[ii]
                    r[ii] = ui * s
                    if sweep:
                        ui = a[ii] / s
                        u[ii] = ui
                    for j in range(m):
                        acc[t, j] += ui * B[ii, j]
            else:
                u0, u1, u2, u3 = u[i], u[i + 1], u[i + 2], u[i + 3]
                s0 = s1 = s2 = s3 = 0.0
                if sweep:
                    for j in range(m):
                        vj = v[j]
                        s0 += B[i, j] * vj
                        s1 += B[i + 1, j] * vj
                        s2 += B[i + 2, j] * vj
                        s3 += B[i + 3, j] * vj
                    # exact row updates; the four rows of B are still in cache
                    w0, w1, w2, w3 = a[i] / s0, a[i + 1] / s1, a[i + 2] / s2, a[i + 3] / s3
                    for j in range(m):
                        acc[t, j] += w0 * B[i, j] + w1 * B[i + 1, j] + w2 * B[i + 2, j] + w3 * B[i + 3, j]
                    u[i], u[i + 1], u[i + 2], u[i + 3] = w0, w1, w2, w3
                else:
                    for j in range(m):
                        vj = v[j]
                        b0, b1, b2, b3 = B[i, j], B[i + 1, j], B[i + 2, j], B[i + 3, j]
                        s0 += b0 * vj
                        s1 += b1 * vj
                        s2 += b2 * vj
                        s3 += b3 * vj
                        acc[t, j] += u0 * b0 + u1 * b1 + u2 * b2 + u3 * b3
                r[i], r[i + 1], r[i + 2], r[i + 3] = u0 * s0, u1 * s1, u2 * s2, u3 * s3
            if hist:
                for ii in range(i, i + nb):
                    q0 = q
                    q = _hist_row(B, ii, u[ii], v, floor, t, count, mass, q, end, ccols, cvals, ovf)
                    rowcnt[ii] = q - q0
            i += nb


_scaled_par, _scaled_ser = _scaled_impl


@njit(cache=True, nogil=True)
def scaled_pass(B, u, v, a, r, acc, mode, count, mass, floor, cap, rowcnt, ccols, cvals, ovf):
    """One pass over B at the plan P = diag(u) B diag(v); column sums go to per-chunk buffers.

    Always ``r = u * (B v)`` (row sums of P on entry) and ``acc[t]`` = column sums of ``diag(u) B`` over
    row chunk t, so that ``P^T 1 = v * acc.sum(0)``. ``mode``:

    * ``RC``: only that;
    * ``SWEEP``: first the exact Sinkhorn row update ``u = a / (B v)`` in place (``acc`` then holds the
      column sums after it): a whole Sinkhorn sweep but the column scaling, in one pass;
    * ``RC_HIST`` / ``SWEEP_HIST``: the same, plus, at the plan after the pass's row update (if any),
      the histogram of the entries of P by key (as ``log2_histogram``) into ``count``/``mass``
      (nchunk, N_KEYS), and the *candidates*: every entry ``P_ij >= floor`` as (column, B_ij) in row
      order, chunk t writing ``ccols/cvals[cap[t]:cap[t+1]]`` and row i's count to ``rowcnt[i]``;
      ``ovf[t] = 1`` when chunk t ran out of room (its candidate list is then incomplete).
      The entries below ``floor`` are all counted in the key just below floor's key.
    """
    if B.size >= _PAR_MIN:
        _scaled_par(B, u, v, a, r, acc, mode, count, mass, floor, cap, rowcnt, ccols, cvals, ovf)
    else:
        _scaled_ser(B, u, v, a, r, acc, mode, count, mass, floor, cap, rowcnt, ccols, cvals, ovf)


@njit(cache=True, nogil=True)
def filter_candidates(cap, rowcnt, ccols, cvals, u, v, rho):
    """CSR ``(indptr, indices, b_values)`` of the candidates with ``u_i B_ij v_j >= rho`` (row order)."""
    n = rowcnt.shape[0]
    nchunk = cap.shape[0] - 1
    indptr = np.empty(n + 1, dtype=np.int64)
    indptr[0] = 0
    indices = np.empty(rowcnt.sum(), dtype=np.int64)
    bvals = np.empty(rowcnt.sum(), dtype=np.float64)
    k = 0
    for t in range(nchunk):           # chunks hold consecutive rows, in order
        lo, hi = _rows_of(t, n, nchunk)
        q = cap[t]
        for i in range(lo, hi):
            ui = u[i]
            for _ in range(rowcnt[i]):
                if (ui * cvals[q]) * v[ccols[q]] >= rho:
                    indices[k] = ccols[q]
                    bvals[k] = cvals[q]
                    k += 1
                q += 1
            indptr[i + 1] = k
    return indptr, indices[:k].copy(), bvals[:k].copy()


@_twins()
def _extract_scaled_impl(B, u, v, rho, cap, rowcnt, cols, vals):
    n, m = B.shape
    nchunk = cap.shape[0] - 1
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        k = cap[t]
        end = cap[t + 1]
        for i in range(lo, hi):
            k0 = k
            ui = u[i]
            for j in range(m):
                p = (ui * B[i, j]) * v[j]
                if p >= rho and k < end:
                    cols[k] = j
                    vals[k] = B[i, j]
                    k += 1
            rowcnt[i] = k - k0


_extract_scaled_par, _extract_scaled_ser = _extract_scaled_impl


@njit(cache=True, nogil=True)
def extract_scaled(B, u, v, rho, chunk_nnz):
    """The pattern {P_ij >= rho} of P = diag(u) B diag(v) as CSR ``(indptr, indices, b_values)``.

    Stores the *base* values B_ij (the plan values at any later (u, v) are ``u_i B_ij v_j``: see
    ``pattern_sums``). ``chunk_nnz[t]`` (from the histogram) sizes the output of row chunk t; a chunk
    never writes past its share (a rounding difference from the histogram pass can only drop an entry).
    """
    n = B.shape[0]
    nchunk = chunk_nnz.shape[0]
    cap = np.zeros(nchunk + 1, dtype=np.int64)
    for t in range(nchunk):
        cap[t + 1] = cap[t] + chunk_nnz[t]
    rowcnt = np.zeros(n, dtype=np.int64)
    cols = np.empty(cap[nchunk], dtype=np.int64)
    vals = np.empty(cap[nchunk], dtype=np.float64)
    if B.size >= _PAR_MIN:
        _extract_scaled_par(B, u, v, rho, cap, rowcnt, cols, vals)
    else:
        _extract_scaled_ser(B, u, v, rho, cap, rowcnt, cols, vals)
    indptr = np.empty(n + 1, dtype=np.int64)
    indptr[0] = 0
    for i in range(n):
        indptr[i + 1] = indptr[i] + rowcnt[i]
    indices = np.empty(indptr[n], dtype=np.int64)
    bvals = np.empty(indptr[n], dtype=np.float64)
    for t in range(nchunk):          # compact the chunks (each may have written less than its share)
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        src = cap[t]
        for i in range(lo, hi):
            for k in range(indptr[i], indptr[i + 1]):
                indices[k] = cols[src]
                bvals[k] = vals[src]
                src += 1
    return indptr, indices, bvals


@_twins()
def _pattern_sums_impl(indptr, indices, bvals, u, v, out, rows, cbuf):
    nchunk = cbuf.shape[0]
    for t in prange(nchunk):
        lo, hi = _nnz_rows(indptr, t, nchunk)
        _zero_chunk(t, cbuf, cbuf, cbuf, False)
        for i in range(lo, hi):
            ui = u[i]
            s = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                p = (ui * bvals[k]) * v[j]
                out[k] = p
                s += p
                cbuf[t, j] += p
            rows[i] = s


_pattern_sums_par, _pattern_sums_ser = _pattern_sums_impl


@njit(cache=True, nogil=True)
def pattern_sums(indptr, indices, bvals, u, v, nchunk=1):
    """Plan values ``u_i B_ij v_j`` on a CSR pattern of B, with their row and column sums (rows split
    over ``nchunk`` threads for a large pattern)."""
    n = indptr.shape[0] - 1
    m = v.shape[0]
    out = np.empty(bvals.shape[0])
    rows = np.empty(n)
    par = nchunk > 1 and indptr[n] >= _SPARSE_PAR_MIN
    cbuf = np.empty((nchunk if par else 1, m))
    if par:
        _pattern_sums_par(indptr, indices, bvals, u, v, out, rows, cbuf)
    else:
        _pattern_sums_ser(indptr, indices, bvals, u, v, out, rows, cbuf)
    cols = np.empty(m)
    _reduce_cols(cbuf, cols)
    return out, rows, cols


@njit(inline="always", fastmath=_FM)
def _plan_entry(from_cost, M, inv, B, x, y, i, j):
    """P_ij from the cost (``x, y = lu, lv``) or from the base (``x, y = u, v``)."""
    if from_cost:
        return fexp(x[i] + y[j] - M[i, j] * inv)
    return (x[i] * B[i, j]) * y[j]


@_twins(_FM)
def _final_impl(M, inv, B, x, y, P, r, acc, cost, from_cost):
    n, m = M.shape
    nchunk = acc.shape[0]
    for t in prange(nchunk):
        lo, hi = _rows_of(t, n, nchunk)
        _zero_chunk(t, acc, acc, acc, False)
        cs = 0.0
        i = lo
        while i + 4 <= hi:                 # four rows at a time: each column sum updated once per four
            s0 = s1 = s2 = s3 = 0.0
            for j in range(m):
                p0 = _plan_entry(from_cost, M, inv, B, x, y, i, j)
                p1 = _plan_entry(from_cost, M, inv, B, x, y, i + 1, j)
                p2 = _plan_entry(from_cost, M, inv, B, x, y, i + 2, j)
                p3 = _plan_entry(from_cost, M, inv, B, x, y, i + 3, j)
                P[i, j] = p0
                P[i + 1, j] = p1
                P[i + 2, j] = p2
                P[i + 3, j] = p3
                s0 += p0
                s1 += p1
                s2 += p2
                s3 += p3
                acc[t, j] += (p0 + p1) + (p2 + p3)
                cs += (p0 * M[i, j] + p1 * M[i + 1, j]) + (p2 * M[i + 2, j] + p3 * M[i + 3, j])
            r[i], r[i + 1], r[i + 2], r[i + 3] = s0, s1, s2, s3
            i += 4
        while i < hi:
            s = 0.0
            for j in range(m):
                p = _plan_entry(from_cost, M, inv, B, x, y, i, j)
                P[i, j] = p
                s += p
                acc[t, j] += p
                cs += p * M[i, j]
            r[i] = s
            i += 1
        cost[t] = cs


_final_par, _final_ser = _final_impl


def _final(M, inv, B, x, y, P, r, acc, cost, from_cost):
    if M.size >= _PAR_MIN:
        _final_par(M, inv, B, x, y, P, r, acc, cost, from_cost)
    else:
        _final_ser(M, inv, B, x, y, P, r, acc, cost, from_cost)


def finalize_plan(B, u, v, M, r, acc, cost):
    """In place ``B <- diag(u) B diag(v)`` (the returned plan), with its row sums ``r``, per-chunk column
    sums ``acc`` and per-chunk transport costs ``cost[t]`` (sum of ``P_ij M_ij``), in one pass."""
    _final(M, 1.0, B, u, v, B, r, acc, cost, False)


def plan_from_cost(M, inv, lu, lv, P, r, acc, cost):
    """The plan ``P_ij = exp(lu_i + lv_j - M_ij*inv)`` written into P, with its row sums ``r``, per-chunk
    column sums ``acc`` and per-chunk transport costs ``cost[t]`` (as ``finalize_plan``), in one pass."""
    _final(M, inv, P, lu, lv, P, r, acc, cost, True)


@njit(cache=True, nogil=True, fastmath=_FM)
def col_lse_cost(M, inv, lu, j):
    """log sum_i exp(lu_i - M_ij*inv) with the max shift (a column whose scaled sum underflowed)."""
    n = M.shape[0]
    mx = -np.inf
    for i in range(n):
        e = lu[i] - M[i, j] * inv
        if e > mx:
            mx = e
    s = 0.0
    for i in range(n):
        s += fexp(lu[i] - M[i, j] * inv - mx)
    return mx + math.log(s)
