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
from numba.extending import intrinsic

__all__ = ["fexp", "neg_scaled_cost", "sinkhorn_block", "dual_pass", "log2_histogram", "extract_csr",
           "hessian_csr", "pcg_jacobi", "N_KEYS", "key_threshold"]

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


@_twins()
def _log2_histogram_impl(P, count, mass):
    n, m = P.shape
    nchunk = count.shape[0]
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        for k in range(N_KEYS):
            count[t, k] = 0
            mass[t, k] = 0.0
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


@_twins()
def _extract_csr_impl(P, rho, chunk_nnz):
    n, m = P.shape
    nchunk = chunk_nnz.shape[0]
    start = np.zeros(nchunk + 1, dtype=np.int64)
    for t in range(nchunk):
        start[t + 1] = start[t] + chunk_nnz[t]
    indptr = np.empty(n + 1, dtype=np.int64)
    indptr[0] = 0
    indices = np.empty(start[nchunk], dtype=np.int64)
    data = np.empty(start[nchunk], dtype=np.float64)
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        k = start[t]
        for i in range(lo, hi):
            for j in range(m):
                p = P[i, j]
                if p >= rho:
                    indices[k] = j
                    data[k] = p
                    k += 1
            indptr[i + 1] = k
    return indptr, indices, data


_extract_csr_par, _extract_csr_ser = _extract_csr_impl


@njit(cache=True, nogil=True)
def extract_csr(P, rho, chunk_nnz):
    """The entries P_ij >= rho as CSR (indptr, indices, data) in one pass over P.

    ``chunk_nnz[t]`` is the number of kept entries in the t-th of ``len(chunk_nnz)`` equal row chunks
    (rows ``t*n//nchunk`` to ``(t+1)*n//nchunk``), read off the per-chunk histogram, so each chunk knows
    where to write without a counting pass. Chunks run in parallel for large P.
    """
    if P.size >= _PAR_MIN:
        return _extract_csr_par(P, rho, chunk_nnz)
    return _extract_csr_ser(P, rho, chunk_nnz)


def chunk_counts(P, rho, nchunk):
    """NumPy: kept entries per row chunk (the layout of ``extract_csr``), for callers without a histogram."""
    n = P.shape[0]
    keep = (P >= rho).sum(1)
    return np.array([keep[t * n // nchunk:(t + 1) * n // nchunk].sum() for t in range(nchunk)], dtype=np.int64)


@njit(cache=True, nogil=True)
def hessian_csr(indptr, indices, data, r, c, ridge):
    """CSR of H_s = [[diag(r), P_s], [P_s^T, diag(c)]] + ridge * I (size n + m, symmetric).

    The diagonal keeps the dense marginals r, c (so H_s stays diagonally dominant) and is floored
    at ``ridge`` so that rows whose mass underflowed never give a zero Jacobi pivot.
    """
    n = r.shape[0]
    m = c.shape[0]
    nnz = indptr[n]
    N = n + m
    colcnt = np.zeros(m, dtype=np.int64)
    for k in range(nnz):
        colcnt[indices[k]] += 1
    hp = np.empty(N + 1, dtype=np.int64)
    hp[0] = 0
    for i in range(n):
        hp[i + 1] = hp[i] + 1 + (indptr[i + 1] - indptr[i])
    for j in range(m):
        hp[n + j + 1] = hp[n + j] + 1 + colcnt[j]
    hi = np.empty(hp[N], dtype=np.int64)
    hx = np.empty(hp[N], dtype=np.float64)
    diag = np.empty(N, dtype=np.float64)
    for i in range(n):
        d = max(r[i], 0.0) + ridge
        diag[i] = d
        p = hp[i]
        hi[p] = i
        hx[p] = d
        p += 1
        for k in range(indptr[i], indptr[i + 1]):
            hi[p] = n + indices[k]
            hx[p] = data[k]
            p += 1
    fill = np.empty(m, dtype=np.int64)
    for j in range(m):
        d = max(c[j], 0.0) + ridge
        diag[n + j] = d
        p = hp[n + j]
        hi[p] = n + j
        hx[p] = d
        fill[j] = p + 1
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            p = fill[j]
            hi[p] = i
            hx[p] = data[k]
            fill[j] = p + 1
    return hp, hi, hx, diag


@njit(cache=True, nogil=True, fastmath={"contract"})
def _csr_mv(hp, hi, hx, x, out):
    N = hp.shape[0] - 1
    for i in range(N):
        s = 0.0
        for k in range(hp[i], hp[i + 1]):
            s += hx[k] * x[hi[k]]
        out[i] = s


@njit(cache=True, nogil=True)
def csr_matvec(hp, hi, hx, x):
    """out = H x (for the tests)."""
    out = np.empty(hp.shape[0] - 1)
    _csr_mv(hp, hi, hx, x, out)
    return out


@njit(cache=True, nogil=True, fastmath={"contract"})
def pcg_jacobi(hp, hi, hx, diag, rhs, rtol, maxiter, n):
    """Jacobi-preconditioned CG for H_s dz = rhs, started at 0.

    The iterate is kept orthogonal to the gauge direction e = (1_n, -1_m) (H e ~ 0): the right-hand
    side is projected once, and the result again at the end. Stops at ||res|| <= rtol * ||rhs||
    or after ``maxiter`` iterations. Returns ``(dz, iterations, relative residual)``.
    """
    N = rhs.shape[0]
    b = rhs.copy()
    s = 0.0
    for i in range(N):
        s += b[i] if i < n else -b[i]
    s /= N
    for i in range(N):
        b[i] -= s if i < n else -s
    x = np.zeros(N)
    res = b.copy()
    z = np.empty(N)
    q = np.empty(N)
    bnorm = math.sqrt(np.dot(b, b))
    if bnorm == 0.0:
        return x, 0, 0.0
    stop = rtol * bnorm
    rz = 0.0
    for i in range(N):
        z[i] = res[i] / diag[i]
        rz += res[i] * z[i]
    p = z.copy()
    it = 0
    rnorm = bnorm
    while it < maxiter:
        _csr_mv(hp, hi, hx, p, q)
        pq = np.dot(p, q)
        if not (pq > 0.0):
            break
        alpha = rz / pq
        rr = 0.0
        for i in range(N):
            x[i] += alpha * p[i]
            res[i] -= alpha * q[i]
            rr += res[i] * res[i]
        it += 1
        rnorm = math.sqrt(rr)
        if rnorm <= stop:
            break
        rz_new = 0.0
        for i in range(N):
            z[i] = res[i] / diag[i]
            rz_new += res[i] * z[i]
        beta = rz_new / rz
        rz = rz_new
        for i in range(N):
            p[i] = z[i] + beta * p[i]
    s = 0.0
    for i in range(N):
        s += x[i] if i < n else -x[i]
    s /= N
    for i in range(N):
        x[i] -= s if i < n else -s
    return x, it, rnorm / bnorm


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

SWEEP, RC, RC_HIST = 0, 1, 2      # what a scaled pass does


@_twins(_FM)
def _absorb_impl(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u):
    n, m = M.shape
    nchunk = acc_s.shape[0]
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        for j in range(m):
            acc_s[t, j] = 0.0
            acc_u[t, j] = 0.0
        for i in range(lo, hi):
            mx = -np.inf
            for j in range(m):
                e = lv[j] - M[i, j] * inv
                if e > mx:
                    mx = e
            s = 0.0
            for j in range(m):
                e = fexp(lv[j] - M[i, j] * inv - mx)
                B[i, j] = e
                s += e
            lu0[i] = -mx
            S[i] = s
            ui = fexp(lu[i] + mx)
            rs[i] = ui * s
            wu = a[i] / s
            for j in range(m):
                e = B[i, j]
                acc_s[t, j] += ui * e
                acc_u[t, j] += wu * e


_absorb_par, _absorb_ser = _absorb_impl


@njit(cache=True, nogil=True)
def absorb(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u):
    """One pass over M: the base matrix B of the point (lu, lv) and the sums SNS needs there.

    Writes ``B_ij = exp(lv_j - M_ij*inv - mx_i)`` with ``mx_i = max_j(lv_j - M_ij*inv)`` (so every row of
    B has maximum 1), ``lu0 = -mx``, ``S = B 1``, ``rs = u * S`` (row sums of the plan at (lu, lv),
    ``u = exp(lu - lu0)``), ``acc_s[t]`` = column sums of ``diag(u) B`` over row chunk t (plan column sums
    at (lu, lv)), and ``acc_u[t]`` = the same with ``u = a / S`` (after an exact Sinkhorn row update).
    The base potentials are ``(lu0, lv)``. ``rs``/``acc_s`` may overflow for a wild start point.
    """
    if M.size >= _PAR_MIN:
        _absorb_par(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u)
    else:
        _absorb_ser(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u)


@_twins(_FM)
def _scaled_impl(B, u, v, a, r, acc, mode, count, mass):
    n, m = B.shape
    nchunk = acc.shape[0]
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        for j in range(m):
            acc[t, j] = 0.0
        if mode == RC_HIST:
            for k in range(N_KEYS):
                count[t, k] = 0
                mass[t, k] = 0.0
        for i in range(lo, hi):
            s = 0.0
            for j in range(m):
                s += B[i, j] * v[j]
            ui = u[i]
            r[i] = ui * s
            if mode == SWEEP:
                ui = a[i] / s          # exact row update; the row of B is still in cache
                u[i] = ui
            for j in range(m):
                acc[t, j] += ui * B[i, j]
            if mode == RC_HIST:
                for j in range(m):
                    p = (ui * B[i, j]) * v[j]
                    k = _f64_as_i64(p) >> _KEY_SHIFT
                    count[t, k] += 1
                    mass[t, k] += p


_scaled_par, _scaled_ser = _scaled_impl


@njit(cache=True, nogil=True)
def scaled_pass(B, u, v, a, r, acc, mode, count, mass):
    """One pass over B at the plan P = diag(u) B diag(v); column sums go to per-chunk buffers.

    Always ``r = u * (B v)`` (row sums of P on entry) and ``acc[t]`` = column sums of ``diag(u) B`` over
    row chunk t, so that ``P^T 1 = v * acc.sum(0)``. ``mode``: ``RC`` only that; ``RC_HIST`` also the
    histogram of the entries of P by key (as ``log2_histogram``) into ``count``/``mass`` (nchunk, N_KEYS);
    ``SWEEP`` first does the exact Sinkhorn row update ``u = a / (B v)`` in place (``acc`` then holds
    the column sums after it), i.e. a whole Sinkhorn sweep but the column scaling in one pass.
    """
    if B.size >= _PAR_MIN:
        _scaled_par(B, u, v, a, r, acc, mode, count, mass)
    else:
        _scaled_ser(B, u, v, a, r, acc, mode, count, mass)


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
    ``pattern_values``). ``chunk_nnz[t]`` (from the histogram) sizes the output of row chunk t; a chunk
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


@njit(cache=True, nogil=True)
def pattern_values(indptr, indices, bvals, u, v):
    """Plan values ``u_i B_ij v_j`` on a CSR pattern of B, and their sum."""
    n = indptr.shape[0] - 1
    out = np.empty(bvals.shape[0])
    tot = 0.0
    for i in range(n):
        ui = u[i]
        for k in range(indptr[i], indptr[i + 1]):
            p = (ui * bvals[k]) * v[indices[k]]
            out[k] = p
            tot += p
    return out, tot


@_twins(_FM)
def _finalize_impl(B, u, v, M, r, acc, cost):
    n, m = B.shape
    nchunk = acc.shape[0]
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        for j in range(m):
            acc[t, j] = 0.0
        cs = 0.0
        for i in range(lo, hi):
            ui = u[i]
            s = 0.0
            for j in range(m):
                p = (ui * B[i, j]) * v[j]
                B[i, j] = p
                s += p
                acc[t, j] += p
                cs += p * M[i, j]
            r[i] = s
        cost[t] = cs


_finalize_par, _finalize_ser = _finalize_impl


@njit(cache=True, nogil=True)
def finalize_plan(B, u, v, M, r, acc, cost):
    """In place ``B <- diag(u) B diag(v)`` (the returned plan), with its row sums ``r``, per-chunk column
    sums ``acc`` and per-chunk transport costs ``cost[t]`` (sum of ``P_ij M_ij``), in one pass."""
    if B.size >= _PAR_MIN:
        _finalize_par(B, u, v, M, r, acc, cost)
    else:
        _finalize_ser(B, u, v, M, r, acc, cost)


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
