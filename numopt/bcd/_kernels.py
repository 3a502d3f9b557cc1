"""Numba kernels of greedy BCD: dense loops (cached, so the first call loads machine code from disk).

* :func:`cd_l1_gram` -- the block subproblem ``min_w 1/2 w^T H w - c^T w + lam |w|_1`` (or ``w >= 0``) solved by
  coordinate descent with the greedy proximal Gauss-Southwell-q rule (or cyclically), keeping ``H w - c``
  current: one fused O(m) pass per coordinate update both updates the gradient and ranks the next coordinate.
* :func:`prox_scores` -- the proximal GS-q scores ``q_i`` and steps ``d_i`` for all coordinates.
* :func:`top_k` -- the ``k`` largest scores without a full sort.
* :func:`abs_row_sums` -- ``|A|^T |A| 1`` for dense ``A`` (the GSD diagonal-dominance bound).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _prox1(w, g, D, lam, nonneg):
    # minimizer of g*t + D/2 t^2 + lam*|w + t| (or lam*(w+t) with w+t >= 0), returned as the new value
    z = w - g / D
    if nonneg:
        v = z - lam / D
        return v if v > 0.0 else 0.0
    a = abs(z) - lam / D
    if a <= 0.0:
        return 0.0
    return a if z > 0.0 else -a


@njit(cache=True, nogil=True)
def cd_l1_gram(H, c, w, lam, nonneg, tol, max_updates, greedy):
    """Coordinate descent on ``1/2 w^T H w - c^T w + lam * sum(|w|)`` (``w >= 0`` when ``nonneg``).

    ``H`` is symmetric positive semidefinite (row-major), ``w`` is updated in place.
    ``greedy=True`` picks each coordinate by the proximal GS-q rule (most negative model decrease
    ``q_i``); ``False`` sweeps cyclically. Stops when the KKT measure ``max_i H_ii |d_i|`` is ``<= tol``
    or after ``max_updates`` coordinate updates. Returns ``(updates, kkt)``.
    """
    m = w.shape[0]
    grad = np.empty(m)
    for i in range(m):
        s = -c[i]
        for j in range(m):
            s += H[i, j] * w[j]
        grad[i] = s
    updates = 0
    kkt = 0.0
    if greedy:
        # scores of the starting point
        best = -1
        qbest = 0.0
        kkt = 0.0
        for i in range(m):
            D = H[i, i]
            if D <= 0.0:
                continue
            wn = _prox1(w[i], grad[i], D, lam, nonneg)
            d = wn - w[i]
            q = grad[i] * d + 0.5 * D * d * d + lam * (abs(wn) - abs(w[i]))
            v = D * abs(d)
            if v > kkt:
                kkt = v
            if q < qbest:
                qbest = q
                best = i
        while kkt > tol and updates < max_updates and best >= 0:
            j = best
            D = H[j, j]
            wn = _prox1(w[j], grad[j], D, lam, nonneg)
            delta = wn - w[j]
            w[j] = wn
            updates += 1
            best = -1
            qbest = 0.0
            kkt = 0.0
            for i in range(m):  # fused: gradient update and the next ranking in one pass
                gi = grad[i] + H[j, i] * delta
                grad[i] = gi
                Di = H[i, i]
                if Di <= 0.0:
                    continue
                wi = w[i]
                wn = _prox1(wi, gi, Di, lam, nonneg)
                d = wn - wi
                if d != 0.0:
                    q = gi * d + 0.5 * Di * d * d + lam * (abs(wn) - abs(wi))
                    v = Di * abs(d)
                    if v > kkt:
                        kkt = v
                    if q < qbest:
                        qbest = q
                        best = i
        return updates, kkt
    # cyclic sweeps, with Anderson extrapolation of the sweep iterates every ``AA`` sweeps (accepted only
    # when it lowers the objective): on correlated columns plain sweeps crawl along the valley
    AA = 5
    hist = np.empty((AA + 1, m))
    nh = 0
    for i in range(m):
        hist[0, i] = w[i]
    nh = 1
    while updates < max_updates:
        kkt = 0.0
        for j in range(m):
            D = H[j, j]
            if D <= 0.0:
                continue
            wn = _prox1(w[j], grad[j], D, lam, nonneg)
            delta = wn - w[j]
            if delta != 0.0:
                v = D * abs(delta)
                if v > kkt:
                    kkt = v
                w[j] = wn
                updates += 1
                for i in range(m):
                    grad[i] += H[j, i] * delta
        if kkt <= tol:
            break
        for i in range(m):
            hist[nh, i] = w[i]
        nh += 1
        if nh == AA + 1:
            _anderson(H, c, w, grad, hist, lam, nonneg)
            for i in range(m):
                hist[0, i] = w[i]
            nh = 1
    return updates, kkt


@njit(cache=True, nogil=True)
def _objective(H, c, w, lam):
    m = w.shape[0]
    s = 0.0
    for i in range(m):
        t = 0.0
        for j in range(m):
            t += H[i, j] * w[j]
        s += w[i] * (0.5 * t - c[i]) + lam * abs(w[i])
    return s


@njit(cache=True, nogil=True)
def _extrapolate(hist, nonneg):
    """Anderson combination of the iterates ``hist[0..K]``: weights c (sum 1) minimizing |sum c_k dw_k|.

    Returns ``(ok, acc)``; ``acc`` is projected on ``w >= 0`` when ``nonneg``.
    """
    K1, m = hist.shape
    K = K1 - 1
    acc = np.zeros(m)
    U = np.empty((K, m))
    for k in range(K):
        for t in range(m):
            U[k, t] = hist[k + 1, t] - hist[k, t]
    C = U @ U.T
    scale = 0.0
    for k in range(K):
        scale += C[k, k]
    if scale <= 0.0:
        return False, acc
    for k in range(K):
        C[k, k] += 1e-10 * scale
    z = np.linalg.solve(C, np.ones(K))
    sz = z.sum()
    if sz == 0.0 or not np.isfinite(sz):
        return False, acc
    z /= sz
    for k in range(K):
        for t in range(m):
            acc[t] += z[k] * hist[k + 1, t]
    if nonneg:
        for t in range(m):
            if acc[t] < 0.0:
                acc[t] = 0.0
    return True, acc


@njit(cache=True, nogil=True)
def _anderson(H, c, w, grad, hist, lam, nonneg):
    """Anderson extrapolation of the last sweep iterates ``hist``; replaces ``w`` (and ``grad``) if better."""
    m = w.shape[0]
    ok, acc = _extrapolate(hist, nonneg)
    if not ok:
        return
    if _objective(H, c, acc, lam) < _objective(H, c, w, lam):
        for i in range(m):
            w[i] = acc[i]
        for i in range(m):
            s = -c[i]
            for j in range(m):
                s += H[i, j] * w[j]
            grad[i] = s


@njit(cache=True, nogil=True)
def _residual_sweep(indptr, indices, data, ws, sel, nsel, Lw, w, r, lam, l2, nonneg):
    # one cyclic pass over the block positions sel[:nsel]; returns the largest L_j |step_j|
    kkt = 0.0
    for s in range(nsel):
        t = sel[s]
        D = Lw[t]
        if D <= 0.0:
            continue
        j = ws[t]
        g = l2 * w[t]
        for k in range(indptr[j], indptr[j + 1]):
            g -= data[k] * r[indices[k]]
        wn = _prox1(w[t], g, D, lam, nonneg)
        d = wn - w[t]
        if d != 0.0:
            v = D * abs(d)
            if v > kkt:
                kkt = v
            w[t] = wn
            for k in range(indptr[j], indptr[j + 1]):
                r[indices[k]] -= d * data[k]
    return kkt


@njit(cache=True, nogil=True)
def cd_l1_residual(indptr, indices, data, ws, Lw, w, r, lam, l2, nonneg, tol, max_sweeps):
    """Cyclic CD on the columns ``ws`` of a CSC matrix for the L1/L2 least squares, residual form.

    Minimizes ``1/2 |r|^2 + lam |w|_1 + l2/2 |w|^2`` over ``w = x[ws]`` where ``r = b - A x`` is kept current
    (each update costs O(nnz of its column), no Gram matrix). Sweeps alternate between the whole block and
    its nonzeros only (the zeros that stay zero cost a column dot each and change nothing), and every 5
    sweeps over the nonzeros their iterates are Anderson-extrapolated, kept if that lowers the objective.
    ``w`` and ``r`` are updated in place; ``Lw[t] = |A_:ws[t]|^2 + l2``. Returns ``(sweeps, kkt)``, kkt
    being the largest ``L_j |step_j|`` of the last full sweep.
    """
    m = ws.shape[0]
    AA = 5
    hist = np.empty((AA + 1, m))
    allpos = np.arange(m)
    act = np.empty(m, dtype=np.int64)
    kkt = 0.0
    sweeps = 0
    while sweeps < max_sweeps:
        kkt = _residual_sweep(indptr, indices, data, ws, allpos, m, Lw, w, r, lam, l2, nonneg)
        sweeps += 1
        if kkt <= tol:
            break
        na = 0
        for t in range(m):
            if w[t] != 0.0:
                act[na] = t
                na += 1
        for t in range(m):
            hist[0, t] = w[t]
        nh = 1
        while sweeps < max_sweeps:
            ka = _residual_sweep(indptr, indices, data, ws, act, na, Lw, w, r, lam, l2, nonneg)
            sweeps += 1
            if ka <= tol:
                break
            for t in range(m):
                hist[nh, t] = w[t]
            nh += 1
            if nh == AA + 1:
                _anderson_residual(indptr, indices, data, ws, w, r, hist, lam, l2, nonneg)
                for t in range(m):
                    hist[0, t] = w[t]
                nh = 1
    return sweeps, kkt


@njit(cache=True, nogil=True)
def _anderson_residual(indptr, indices, data, ws, w, r, hist, lam, l2, nonneg):
    m = w.shape[0]
    ok, acc = _extrapolate(hist, nonneg)
    if not ok:
        return
    # residual at the extrapolated point and both objectives
    r2 = r.copy()
    pen_old = 0.0
    pen_new = 0.0
    for t in range(m):
        d = acc[t] - w[t]
        pen_old += lam * abs(w[t]) + 0.5 * l2 * w[t] * w[t]
        pen_new += lam * abs(acc[t]) + 0.5 * l2 * acc[t] * acc[t]
        if d != 0.0:
            j = ws[t]
            for k in range(indptr[j], indptr[j + 1]):
                r2[indices[k]] -= d * data[k]
    f_old = pen_old
    f_new = pen_new
    for i in range(r.shape[0]):
        f_old += 0.5 * r[i] * r[i]
        f_new += 0.5 * r2[i] * r2[i]
    if f_new < f_old:
        for t in range(m):
            w[t] = acc[t]
        for i in range(r.shape[0]):
            r[i] = r2[i]


@njit(cache=True, nogil=True)
def prox_scores(g, x, L, lam, nonneg, d, q):
    """Proximal step ``d_i`` and model decrease ``q_i <= 0`` of every coordinate (metric ``D_i = L_i``).

    Returns the KKT measure ``max_i L_i |d_i|``.
    """
    kkt = 0.0
    for i in range(g.shape[0]):
        D = L[i]
        if D <= 0.0:
            d[i] = 0.0
            q[i] = 0.0
            continue
        wn = _prox1(x[i], g[i], D, lam, nonneg)
        di = wn - x[i]
        d[i] = di
        q[i] = g[i] * di + 0.5 * D * di * di + lam * (abs(wn) - abs(x[i]))
        v = D * abs(di)
        if v > kkt:
            kkt = v
    return kkt


@njit(cache=True, nogil=True)
def top_k(scores, k):
    """Indices of the ``k`` largest positive scores (ties: lowest index), sorted by index.

    Uses a size-k min-heap: O(p log k), no full sort.
    """
    p = scores.shape[0]
    k = min(k, p)
    heap_v = np.empty(k)
    heap_i = np.empty(k, dtype=np.int64)
    size = 0
    for i in range(p):
        s = scores[i]
        if not s > 0.0:
            continue
        if size < k:
            # sift up
            pos = size
            size += 1
            while pos > 0:
                par = (pos - 1) >> 1
                if heap_v[par] > s or (heap_v[par] == s and heap_i[par] < i):
                    heap_v[pos] = heap_v[par]
                    heap_i[pos] = heap_i[par]
                    pos = par
                else:
                    break
            heap_v[pos] = s
            heap_i[pos] = i
        elif s > heap_v[0]:
            # replace the root (smallest kept score) and sift down
            pos = 0
            while True:
                ch = 2 * pos + 1
                if ch >= size:
                    break
                if ch + 1 < size and (heap_v[ch + 1] < heap_v[ch] or
                                      (heap_v[ch + 1] == heap_v[ch] and heap_i[ch + 1] > heap_i[ch])):
                    ch += 1
                if heap_v[ch] < s:
                    heap_v[pos] = heap_v[ch]
                    heap_i[pos] = heap_i[ch]
                    pos = ch
                else:
                    break
            heap_v[pos] = s
            heap_i[pos] = i
    out = heap_i[:size].copy()
    out.sort()
    return out


@njit(cache=True, nogil=True)
def abs_row_sums(A):
    """``|A|^T (|A| 1)`` for dense row-major ``A``: an upper bound of the row sums of ``|A^T A|``."""
    n, p = A.shape
    t = np.zeros(n)
    for k in range(n):
        s = 0.0
        for j in range(p):
            s += abs(A[k, j])
        t[k] = s
    out = np.zeros(p)
    for k in range(n):
        tk = t[k]
        for j in range(p):
            out[j] += abs(A[k, j]) * tk
    return out


def warmup():
    """Compile (or load from the cache) every kernel once, on tiny inputs."""
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    c = np.array([1.0, -1.0])
    for greedy in (True, False):
        for nonneg in (True, False):
            cd_l1_gram(H, c, np.zeros(2), 0.1, nonneg, 1e-12, 100, greedy)
    H4 = np.eye(8) + 0.5
    for nonneg in (True, False):
        cd_l1_gram(H4, np.arange(8.0), np.zeros(8), 0.1, nonneg, 0.0, 200, False)  # reaches Anderson
    # the Lasso path passes views of a growing Gram buffer (non-contiguous): that specialization too
    Hbig = np.eye(10) + 0.5
    for greedy in (True, False):
        for nonneg in (True, False):
            cd_l1_gram(Hbig[:8, :8], np.arange(8.0), np.zeros(8), 0.1, nonneg, 0.0, 200, greedy)
    import scipy.sparse as sp
    S = sp.csc_matrix(H4)
    for nonneg in (True, False):
        cd_l1_residual(S.indptr, S.indices, S.data, np.arange(8, dtype=np.int64), np.full(8, 2.0), np.zeros(8),
                       np.ones(8), 0.1, 0.0, nonneg, 0.0, 20)
    d = np.empty(2)
    q = np.empty(2)
    prox_scores(c, np.zeros(2), np.ones(2), 0.1, False, d, q)
    top_k(np.array([1.0, 2.0, 0.0]), 2)
    abs_row_sums(H)
