"""Numba kernels of robust alternating minimization.

The one hot kernel is :func:`solve_rows_kernel`: for every row of a CSR block it solves the ridge
least-squares problem ``min_x ||A x - b||^2 + sigma ||x||^2`` with ``A = F[indices[row]]`` (rows of the
fixed factor), ``b = values[row]`` and ``sigma = lam * c_row``. Rows are independent and each row is
summed sequentially, so results are bitwise identical at any thread count and for any partition of the
rows into blocks (the per-row sketch seeds depend on the *global* row id ``row_offset + i``).

No BLAS is called inside the kernels (the k x k algebra is written out), so nothing oversubscribes threads.
Accumulations (Grams, residuals, CG scalars) are in float64 whatever the factor dtype.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# solver codes (also the values of the per-row ``used`` output)
CHOLESKY = 0
CG = 1
SKETCH_CG = 2
AUTO = 3
QR = 4          # exact QR path taken by sketch-cg when the row is short (reported in ``used``)

# per-row status codes
OK = 0
COLD = 1        # no observation: the row is set to 0
RANK_DEFICIENT = 2

_CHUNK = 64     # rows per parallel task (workspace is allocated once per task)

# Only FMA contraction, never reassociation: vectorized reductions made results depend on the
# workspace addresses (measured: repeated calls differed in the last bit). The row solvers instead keep
# both layouts of the gathered design and run every product as an axpy over the contiguous axis.
_FM = {"contract"}


@njit(cache=True, nogil=True, inline="always")
def _dot(A, t, B, j, k):
    """A[t, :k] . B[j, :k] in float64 with 8 fixed-order partial sums."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    a = 0
    while a + 8 <= k:
        s0 += np.float64(A[t, a]) * B[j, a]
        s1 += np.float64(A[t, a + 1]) * B[j, a + 1]
        s2 += np.float64(A[t, a + 2]) * B[j, a + 2]
        s3 += np.float64(A[t, a + 3]) * B[j, a + 3]
        s4 += np.float64(A[t, a + 4]) * B[j, a + 4]
        s5 += np.float64(A[t, a + 5]) * B[j, a + 5]
        s6 += np.float64(A[t, a + 6]) * B[j, a + 6]
        s7 += np.float64(A[t, a + 7]) * B[j, a + 7]
        a += 8
    while a < k:
        s0 += np.float64(A[t, a]) * B[j, a]
        a += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, nogil=True)
def splitmix64(x):
    """The splitmix64 finalizer: a well-mixing bijection of uint64 (wrapping arithmetic)."""
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, parallel=True)
def split_labels(rows, cols, n, seed, nparts):
    """Label of each entry ``(i, j)``: ``splitmix64(i*n + j + splitmix64(seed)) mod nparts``."""
    out = np.empty(rows.shape[0], dtype=np.int64)
    s = splitmix64(np.uint64(seed))
    for e in prange(rows.shape[0]):
        key = np.uint64(rows[e]) * np.uint64(n) + np.uint64(cols[e]) + s
        out[e] = np.int64(splitmix64(key) % np.uint64(nparts))
    return out


# --------------------------------------------------------------------------------------------------
# small dense helpers (k x k), all in float64 workspaces
# --------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, fastmath=_FM)
def _cholesky_inplace(G, k, rel_pivot):
    """Lower Cholesky factor of G[:k, :k] in place; False when a pivot is <= rel_pivot * max diag."""
    dmax = 0.0
    for a in range(k):
        if G[a, a] > dmax:
            dmax = G[a, a]
    thresh = rel_pivot * dmax
    if dmax <= 0.0:
        return False
    for j in range(k):
        s = G[j, j]
        for p in range(j):
            s -= G[j, p] * G[j, p]
        if not (s > thresh):
            return False
        d = math.sqrt(s)
        G[j, j] = d
        for i in range(j + 1, k):
            t = G[i, j]
            for p in range(j):
                t -= G[i, p] * G[j, p]
            G[i, j] = t / d
    return True


@njit(cache=True, nogil=True, fastmath=_FM)
def _chol_solve(L, x, k):
    """Solve (L L^T) y = x in place, L lower (as left by _cholesky_inplace)."""
    for i in range(k):
        t = x[i]
        for p in range(i):
            t -= L[i, p] * x[p]
        x[i] = t / L[i, i]
    for i in range(k - 1, -1, -1):
        t = x[i]
        for p in range(i + 1, k):
            t -= L[p, i] * x[p]
        x[i] = t / L[i, i]


@njit(cache=True, nogil=True, fastmath=_FM)
def _gram(indptr, indices, F, values, row, k, G, rhs):
    """G = A^T A (lower triangle filled, mirrored) and rhs = A^T b for one row; returns N*k^2/2 + N*k."""
    for a in range(k):
        rhs[a] = 0.0
        for c in range(a + 1):
            G[a, c] = 0.0
    for e in range(indptr[row], indptr[row + 1]):
        f = F[indices[e]]
        bv = values[e]
        for a in range(k):
            fa = f[a]
            rhs[a] += fa * bv
            for c in range(a + 1):
                G[a, c] += fa * f[c]
    for a in range(k):
        for c in range(a + 1, k):
            G[a, c] = G[c, a]
    nn = indptr[row + 1] - indptr[row]
    return nn * (k * (k + 1) // 2 + k)


@njit(cache=True, nogil=True)
def _shifted_cholesky(G, rhs, x, k, sigma, L):
    """Solve (G + sigma I) x = rhs by Cholesky; when a pivot fails (rank-deficient design) return the
    minimum-norm solution from a symmetric eigendecomposition with relative cutoff 1e-12.

    Returns 0 when the plain factorization worked, 2 when the guarded path was needed.
    """
    for a in range(k):
        for c in range(k):
            L[a, c] = G[a, c]
        L[a, a] += sigma
    if _cholesky_inplace(L, k, 1e-13):
        for a in range(k):
            x[a] = rhs[a]
        _chol_solve(L, x, k)
        return OK
    # rare path (rows with fewer than k entries, collinear designs): pseudo-inverse of the k x k system
    for a in range(k):
        for c in range(k):
            L[a, c] = G[a, c]
        L[a, a] += sigma
    w, Q = np.linalg.eigh(L)
    cut = 1e-12 * max(w[k - 1], 0.0)
    for a in range(k):
        x[a] = 0.0
    for e in range(k):
        if w[e] > cut and w[e] > 0.0:
            t = 0.0
            for a in range(k):
                t += Q[a, e] * rhs[a]
            t /= w[e]
            for a in range(k):
                x[a] += t * Q[a, e]
    return RANK_DEFICIENT


@njit(cache=True, nogil=True, fastmath=_FM)
def _householder_qr(B, nr, k, R, rel):
    """Householder QR of B[:nr, :k] in place (reflectors kept in B); R gets the k x k factor.

    Returns False when |R_jj| <= rel * max |R_jj| (numerically rank deficient).
    """
    for j in range(k):
        norm = 0.0
        for i in range(j, nr):
            norm += B[i, j] * B[i, j]
        norm = math.sqrt(norm)
        alpha = -norm if B[j, j] >= 0.0 else norm
        if norm == 0.0:
            R[j, j] = 0.0
            B[j, j] = 0.0
            for c in range(j + 1, k):
                R[j, c] = B[j, c]
            continue
        B[j, j] -= alpha                    # v = x - alpha e1 stored in B[j:, j]
        vnorm2 = 0.0
        for i in range(j, nr):
            vnorm2 += B[i, j] * B[i, j]
        for c in range(j + 1, k):
            s = 0.0
            for i in range(j, nr):
                s += B[i, j] * B[i, c]
            s = 2.0 * s / vnorm2
            for i in range(j, nr):
                B[i, c] -= s * B[i, j]
        R[j, j] = alpha
        for c in range(j + 1, k):
            R[j, c] = B[j, c]
        # keep v normalized so that applying it later needs no extra storage
        vn = math.sqrt(vnorm2)
        for i in range(j, nr):
            B[i, j] /= vn
    rmax = 0.0
    for j in range(k):
        if abs(R[j, j]) > rmax:
            rmax = abs(R[j, j])
    if rmax == 0.0:
        return False
    for j in range(k):
        if abs(R[j, j]) <= rel * rmax:
            return False
    return True


@njit(cache=True, nogil=True, fastmath=_FM)
def _apply_qt(B, nr, k, y):
    """y[:nr] <- Q^T y[:nr] with the unit reflectors stored in B by _householder_qr."""
    for j in range(k):
        s = 0.0
        for i in range(j, nr):
            s += B[i, j] * y[i]
        s *= 2.0
        for i in range(j, nr):
            y[i] -= s * B[i, j]


@njit(cache=True, nogil=True)
def _upper_solve(R, x, k):
    """x <- R^{-1} x (R upper triangular)."""
    for i in range(k - 1, -1, -1):
        t = x[i]
        for p in range(i + 1, k):
            t -= R[i, p] * x[p]
        x[i] = t / R[i, i]


@njit(cache=True, nogil=True)
def _precondition(Rp, r, z, k, use_prec):
    """``z = (Rp^T Rp)^{-1} r`` (``z = r`` without a preconditioner); returns its work in multiply-adds."""
    for a in range(k):
        z[a] = r[a]
    if use_prec:
        _upper_t_solve(Rp, z, k)
        _upper_solve(Rp, z, k)
        return k * k
    return 0


@njit(cache=True, nogil=True)
def _upper_t_solve(R, x, k):
    """x <- R^{-T} x (R upper triangular)."""
    for i in range(k):
        t = x[i]
        for p in range(i):
            t -= R[p, i] * x[p]
        x[i] = t / R[i, i]


# --------------------------------------------------------------------------------------------------
# the row solvers
# --------------------------------------------------------------------------------------------------
# The iterative solvers gather the fixed-factor rows of one row's observations once, into a contiguous
# row-major workspace A (N x k), so the random reads of the fixed factor happen once per row and
# half-step (a plain copy loop with independent loads: measured 1.7x faster than fusing the copy into
# the first residual sweep, whose dependent dot products stall the outstanding cache misses). The
# residual at the starting point is one sweep over A; every CG step is ONE sweep over A that computes
# y = A p and q = A^T y together (the rows of A stay in registers between the two products), and the
# last step only needs y = A p (its q would only update a residual nobody reads). Every sum has a fixed
# order written in the code (no reassociation), so results do not depend on memory layout or threads.
@njit(cache=True, nogil=True, inline="always")
def _dotv(A, t, x, k):
    """A[t, :k] . x[:k] (x 1-D) in float64 with 8 fixed-order partial sums."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    a = 0
    while a + 8 <= k:
        s0 += A[t, a] * x[a]
        s1 += A[t, a + 1] * x[a + 1]
        s2 += A[t, a + 2] * x[a + 2]
        s3 += A[t, a + 3] * x[a + 3]
        s4 += A[t, a + 4] * x[a + 4]
        s5 += A[t, a + 5] * x[a + 5]
        s6 += A[t, a + 6] * x[a + 6]
        s7 += A[t, a + 7] * x[a + 7]
        a += 8
    while a < k:
        s0 += A[t, a] * x[a]
        a += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, nogil=True, fastmath=_FM)
def _gather(indptr, indices, F, values, row, k, A, b):
    """Copy the fixed-factor rows of one row's observations into the row-major workspace ``A`` (N x k)
    and the values into ``b``; returns N. (No FMAs: pure data movement.)"""
    start = indptr[row]
    nn = indptr[row + 1] - start
    for t in range(nn):
        f = F[indices[start + t]]
        for a in range(k):
            A[t, a] = f[a]
        b[t] = values[start + t]
    return nn


@njit(cache=True, nogil=True, fastmath=_FM)
def _residual(A, b, nn, k, sigma, x, sres, r):
    """One sweep: ``sres = b - A x``, ``r = A^T sres - sigma x`` (the normal-equation residual);
    returns ``||A x - b||^2``. 2 N k FMAs."""
    for a in range(k):
        r[a] = -sigma * x[a]
    fres = 0.0
    for t in range(nn):
        d = b[t] - _dotv(A, t, x, k)
        sres[t] = d
        fres += d * d
        for a in range(k):
            r[a] += d * A[t, a]
    return fres


@njit(cache=True, nogil=True, fastmath=_FM)
def _normal_sweep(A, nn, k, sigma, p, q, y, want_q):
    """One sweep over the row's design: ``y = A p`` and, with ``want_q``, ``q = A^T y + sigma p``
    (the normal-equation matvec, A^T A never formed); returns ``p^T (A^T A + sigma I) p = ||y||^2 +
    sigma ||p||^2``. Four design rows per step (four independent dot products, then one axpy with a
    fixed bracketing). N k FMAs without q, 2 N k with it."""
    pq = 0.0
    for a in range(k):
        pq += sigma * p[a] * p[a]
        q[a] = sigma * p[a]
    t = 0
    while t + 4 <= nn:
        y0 = _dotv(A, t, p, k)
        y1 = _dotv(A, t + 1, p, k)
        y2 = _dotv(A, t + 2, p, k)
        y3 = _dotv(A, t + 3, p, k)
        y[t] = y0
        y[t + 1] = y1
        y[t + 2] = y2
        y[t + 3] = y3
        pq += y0 * y0
        pq += y1 * y1
        pq += y2 * y2
        pq += y3 * y3
        if want_q:
            for a in range(k):
                q[a] += (y0 * A[t, a] + y1 * A[t + 1, a]) + (y2 * A[t + 2, a] + y3 * A[t + 3, a])
        t += 4
    while t < nn:
        yt = _dotv(A, t, p, k)
        y[t] = yt
        pq += yt * yt
        if want_q:
            for a in range(k):
                q[a] += yt * A[t, a]
        t += 1
    return pq


@njit(cache=True, nogil=True, fastmath=_FM)
def _cg_row(A, nn, k, sigma, x, tol, maxit, Rp, use_prec, r, z, p, q, y, sres, fres0):
    """(Preconditioned) CG on (A^T A + sigma I) x = A^T b from the given x.

    On entry ``r`` is the normal-equation residual at ``x`` and ``sres = b - A x`` (from
    :func:`_residual`, whose return value is ``fres0``). Stops when
    ``||r|| <= tol * ||r_0||`` (the residual at the starting point: an inexact-Newton forcing term, so
    the accuracy asked of a warm-started solve follows the outer progress; from x = 0 this is
    ``tol * ||A^T b||``) or after ``maxit`` steps. With ``use_prec`` the preconditioner is
    (R^T R)^{-1} (R from the QR of the sketch): CGLS on min ||A R^{-1} y - b|| in the x variable.
    The data residual ``sres`` is carried along (``sres -= alpha A p``, N FMAs per step), so the final
    ``||A x - b||^2`` costs no extra pass. Returns (steps, FMAs, ||A x - b||^2).
    """
    rn = 0.0
    for a in range(k):
        rn += r[a] * r[a]
    rn = math.sqrt(rn)
    thresh = tol * rn
    if rn <= thresh or maxit <= 0:
        return 0, 0, fres0
    work = _precondition(Rp, r, z, k, use_prec)
    rz = 0.0
    for a in range(k):
        p[a] = z[a]
        rz += r[a] * z[a]
    steps = 0
    while steps < maxit:
        last = steps + 1 == maxit
        # the last step needs only A p (for the step length and the carried data residual)
        pq = _normal_sweep(A, nn, k, sigma, p, q, y, not last)
        work += nn * k if last else 2 * nn * k
        steps += 1
        if not (pq > 0.0):
            break
        alpha = rz / pq
        for a in range(k):
            x[a] += alpha * p[a]
        for t in range(nn):             # y = A p from the sweep
            sres[t] -= alpha * y[t]
        if last:
            break
        rn = 0.0
        for a in range(k):
            r[a] -= alpha * q[a]
            rn += r[a] * r[a]
        if math.sqrt(rn) <= thresh:
            break
        work += _precondition(Rp, r, z, k, use_prec)
        rz_new = 0.0
        for a in range(k):
            rz_new += r[a] * z[a]
        if rz == 0.0:
            break
        beta = rz_new / rz
        rz = rz_new
        for a in range(k):
            p[a] = z[a] + beta * p[a]
    fres = 0.0
    for t in range(nn):
        fres += sres[t] * sres[t]
    return steps, work, fres


@njit(cache=True, nogil=True, fastmath=_FM)
def _data_residual_gathered(A, b, nn, k, x):
    """||A x - b||^2 with the gathered design (N k FMAs)."""
    f = 0.0
    for t in range(nn):
        d = _dotv(A, t, x, k) - b[t]
        f += d * d
    return f


@njit(cache=True, nogil=True, fastmath=_FM)
def _data_residual_rows(indptr, indices, F, values, row, k, x):
    """||A x - b||^2 reading the fixed-factor rows in place (N k FMAs)."""
    f = 0.0
    for e in range(indptr[row], indptr[row + 1]):
        d = _dotv(F, indices[e], x, k) - values[e]
        f += d * d
    return f


@njit(cache=True, nogil=True)
def _ridge_rows(B, y, start, k, sigma):
    """Append the rows [sqrt(sigma) I | 0] at row ``start`` of the least-squares system (B, y)."""
    sq = math.sqrt(sigma)
    for t in range(k):
        for a in range(k):
            B[start + t, a] = 0.0
        B[start + t, t] = sq
        y[start + t] = 0.0


@njit(cache=True, nogil=True)
def _qr_row(A, b, nn, k, sigma, x, B, y, R):
    """Exact solve by Householder QR of [A; sqrt(sigma) I]; returns False if numerically rank deficient."""
    nr = nn + k if sigma > 0.0 else nn
    if nr < k:
        return False, 0
    for t in range(nn):
        for a in range(k):
            B[t, a] = A[t, a]
        y[t] = b[t]
    if sigma > 0.0:
        _ridge_rows(B, y, nn, k, sigma)
    ok = _householder_qr(B, nr, k, R, 1e-12)
    work = 2 * nr * k * k
    if not ok:
        return False, work
    _apply_qt(B, nr, k, y)
    for a in range(k):
        x[a] = y[a]
    _upper_solve(R, x, k)
    return True, work


@njit(cache=True, nogil=True, fastmath=_FM)
def _sketch_row(A, b, nn, k, sigma, x, s, zeta, rowseed, tol, maxit, SA, Sb, R, xs,
                r, z, p, q, yv, sres, have_warm):
    """Sketch-preconditioned CG for one row (N > s): sparse sign embedding S (s x N, zeta nonzeros
    per column), R from QR([S A; sqrt(sigma) I]), start from the better of the warm start and the
    sketch-and-solve point, then CG preconditioned by (R^T R)^{-1}.

    Returns (ok, steps, FMAs, ||A x - b||^2); ok is False when the sketch is rank deficient.
    """
    nr = s + k if sigma > 0.0 else s
    for i in range(nr):
        Sb[i] = 0.0
        for a in range(k):
            SA[i, a] = 0.0
    scale = 1.0 / math.sqrt(zeta)
    state = rowseed
    for t in range(nn):
        for h in range(zeta):
            state = splitmix64(state)
            tgt = np.int64(state % np.uint64(s))
            sg = scale if (state >> np.uint64(63)) == np.uint64(0) else -scale
            for a in range(k):
                SA[tgt, a] += sg * A[t, a]
            Sb[tgt] += sg * b[t]
    work = nn * zeta * (k + 1)
    if sigma > 0.0:
        _ridge_rows(SA, Sb, s, k, sigma)
    ok = _householder_qr(SA, nr, k, R, 1e-12)
    work += 2 * nr * k * k
    if not ok:
        return False, 0, work, 0.0
    # sketch-and-solve point: R xs = (Q^T S b)[:k]
    _apply_qt(SA, nr, k, Sb)
    for a in range(k):
        xs[a] = Sb[a]
    _upper_solve(R, xs, k)
    fs = _data_residual_gathered(A, b, nn, k, xs)
    work += nn * k
    take_sketch = True
    if have_warm:
        fw = _data_residual_gathered(A, b, nn, k, x)
        work += nn * k
        for a in range(k):
            fs += sigma * xs[a] * xs[a]
            fw += sigma * x[a] * x[a]
        take_sketch = fs < fw
    if take_sketch:
        for a in range(k):
            x[a] = xs[a]
    fres0 = _residual(A, b, nn, k, sigma, x, sres, r)
    work += 2 * nn * k
    steps, w, fres = _cg_row(A, nn, k, sigma, x, tol, maxit, R, True, r, z, p, q, yv, sres, fres0)
    return True, steps, work + w, fres


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def solve_rows_kernel(indptr, indices, values, F, out, use_warm, lam, count_scaling, solver, tol,
                      cg_steps, sketch_steps, sketch_size, zeta, seed, row_offset,
                      status, used, steps_out, work_out, rss_out, want_rss):
    """Solve every row of a CSR block against the fixed factor ``F`` (see module docstring).

    ``out`` holds the warm start on entry when ``use_warm`` (else it is ignored) and the new rows on
    exit. Per-row outputs: ``status`` (OK/COLD/RANK_DEFICIENT), ``used`` (solver code actually used),
    ``steps_out`` (inner CG steps), ``work_out`` (FMAs spent, for the passes-of-|Omega|k count) and
    ``rss_out`` (``||A x - b||^2`` of the new row: the objective's data term, without another pass;
    free for the iterative solvers, N k FMAs for the exact ones, which skip it unless ``want_rss``).
    """
    nrows = indptr.shape[0] - 1
    k = F.shape[1]
    s_sk = sketch_size
    nchunks = (nrows + _CHUNK - 1) // _CHUNK
    lg = max(1.0, math.log2(1.0 / max(tol, 1e-300)))
    for ch in prange(nchunks):
        maxdeg = 0                          # workspace sized by this chunk's longest row
        for i in range(ch * _CHUNK, min(nrows, (ch + 1) * _CHUNK)):
            d = indptr[i + 1] - indptr[i]
            if d > maxdeg:
                maxdeg = d
        A = np.empty((maxdeg, k), dtype=np.float64)
        yv = np.empty(maxdeg, dtype=np.float64)
        sres = np.empty(maxdeg, dtype=np.float64)
        b = np.empty(maxdeg + k, dtype=np.float64)
        B = np.empty((s_sk + k, k), dtype=np.float64)
        y = np.empty(s_sk + k, dtype=np.float64)
        G = np.empty((k, k), dtype=np.float64)
        L = np.empty((k, k), dtype=np.float64)
        R = np.zeros((k, k), dtype=np.float64)
        SA = np.empty((s_sk + k, k), dtype=np.float64)
        Sb = np.empty(s_sk + k, dtype=np.float64)
        x = np.empty(k, dtype=np.float64)
        xs = np.empty(k, dtype=np.float64)
        r = np.empty(k, dtype=np.float64)
        z = np.empty(k, dtype=np.float64)
        p = np.empty(k, dtype=np.float64)
        q = np.empty(k, dtype=np.float64)
        rhs = np.empty(k, dtype=np.float64)
        for i in range(ch * _CHUNK, min(nrows, (ch + 1) * _CHUNK)):
            nn = indptr[i + 1] - indptr[i]
            steps_out[i] = 0
            if nn == 0:
                for a in range(k):
                    out[i, a] = 0.0
                status[i] = COLD
                used[i] = solver if solver != AUTO else CHOLESKY
                work_out[i] = 0
                rss_out[i] = 0.0
                continue
            sigma = lam * nn if count_scaling else lam
            st = OK
            if sigma == 0.0 and nn < k:
                st = RANK_DEFICIENT
            code = solver
            if code == AUTO:
                c_chol = nn * (k * (k + 1) / 2.0 + k) + k * k * k / 6.0
                c_cg = (1.0 + 2.0 * cg_steps) * nn * k
                c_sk = nn * zeta * (k + 1.0) + 2.0 * (s_sk + k) * k * k + (4.0 + 2.0 * lg) * nn * k
                code = CHOLESKY
                best = c_chol
                if c_cg < best:
                    code = CG
                    best = c_cg
                if nn > s_sk and c_sk < best:
                    code = SKETCH_CG
            if st == RANK_DEFICIENT:
                code = CHOLESKY            # the guarded exact path gives the min-norm-like answer
            work = 0
            rss = 0.0
            if code == CHOLESKY:
                work = _gram(indptr, indices, F, values, i, k, G, rhs)
                st2 = _shifted_cholesky(G, rhs, x, k, sigma, L)
                work += k * k * k // 6 + k * k
                if want_rss:
                    rss = _data_residual_rows(indptr, indices, F, values, i, k, x)
                    work += nn * k
                if st2 != OK:
                    st = RANK_DEFICIENT
            else:
                # iterative / QR paths: gather the design once, start from the warm start (or 0)
                _gather(indptr, indices, F, values, i, k, A, b)
                for a in range(k):
                    x[a] = out[i, a] if use_warm else 0.0
                if code == CG:
                    fres0 = _residual(A, b, nn, k, sigma, x, sres, r)
                    ns, work, rss = _cg_row(A, nn, k, sigma, x, tol, cg_steps, R, False, r, z, p, q, yv, sres,
                                            fres0)
                    work += 2 * nn * k
                    steps_out[i] = ns
                else:
                    ok = False
                    if nn > s_sk:
                        rowseed = splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(row_offset + i)))
                        ok, ns, work, rss = _sketch_row(A, b, nn, k, sigma, x, s_sk, zeta, rowseed, tol,
                                                        sketch_steps, SA, Sb, R, xs, r, z, p, q, yv,
                                                        sres, use_warm)
                        steps_out[i] = ns
                    else:
                        ok, work = _qr_row(A, b, nn, k, sigma, x, B, y, R)
                        code = QR
                        if ok and want_rss:
                            rss = _data_residual_gathered(A, b, nn, k, x)
                            work += nn * k
                    if not ok:
                        # rank-deficient design: fall back to the guarded exact path
                        w2 = _gram(indptr, indices, F, values, i, k, G, rhs)
                        _shifted_cholesky(G, rhs, x, k, sigma, L)
                        work += w2 + k * k * k // 6
                        if want_rss:
                            rss = _data_residual_rows(indptr, indices, F, values, i, k, x)
                            work += nn * k
                        st = RANK_DEFICIENT
                        code = CHOLESKY
            for a in range(k):
                out[i, a] = x[a]
            status[i] = st
            used[i] = code
            work_out[i] = work
            rss_out[i] = rss


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def row_residual_sq(indptr, indices, values, U, V):
    """Per-row sums of squared residuals (u_i . v_j - M_ij)^2 over a CSR block (float64)."""
    nrows = indptr.shape[0] - 1
    k = U.shape[1]
    out = np.empty(nrows, dtype=np.float64)
    for i in prange(nrows):
        acc = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            d = _dot(U, i, V, indices[e], k) - values[e]
            acc += d * d
        out[i] = acc
    return out


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def predict_entries(rows, cols, U, V):
    """u_{rows[e]} . v_{cols[e]} for every e (float64)."""
    nnz = rows.shape[0]
    k = U.shape[1]
    out = np.empty(nnz, dtype=np.float64)
    for e in prange(nnz):
        out[e] = _dot(U, rows[e], V, cols[e], k)
    return out
