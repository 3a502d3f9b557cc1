"""Proximal greedy BCD with growing variable blocks (the L1 / sign-constrained path).

Each iteration is one step of the paper's proximal greedy BCD (section 2.6 of the brief) with

* **selection**: proximal GS-q on variable blocks -- the coordinates with the most negative model decrease
  ``q_i`` (metric ``D_i = L_i``), always together with the current support, the block growing to
  ``max(p0, 2 |supp|)`` so that it soon covers the support (the active-set identification result says
  the support freezes after finitely many iterations);
* **update** ``pn``: the block's proximal-Newton subproblem, with the exact block Hessian
  (``A_b^T A_b + l2 I`` for least squares, ``A_b^T diag(phi'') A_b + l2 I`` for logistic), solved by
  greedy (GS-q) coordinate descent on the dense block Hessian; for least squares this is the exact block
  minimization, for logistic an Armijo line search follows;
* the full gradient is recomputed once per iteration (one pass over ``A``) and gives the relative
  duality gap (scikit-learn's stopping rule).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .._cy import _bcd as cy
from .._threads import single_thread_blas
from . import _kernels as K

_EMPTY8 = np.zeros(0, dtype=np.int8)
_EMPTY64 = np.zeros(0, dtype=np.int64)


GRAM_MAX = 512  # largest sparse block solved with its Gram matrix (above: residual-form CD)
RESIDUAL_TOL = 0.1  # inner tolerance (x KKT) of the residual-form block solves (0.3: ~30% more work, measured)
SATURATED = 0.75  # a block solution with this share of nonzeros: grow the block again before a gradient pass


def _block_columns(pb, ws):
    """``A[:, ws]`` as a dense (n, m) float64 array."""
    Ab = pb.A[:, ws]
    return np.asarray(Ab.toarray() if sp.issparse(Ab) else Ab, dtype=np.float64)


def _gram(pb, ws, weights=None):
    """Block Hessian of the smooth part: ``A_b^T diag(weights) A_b + l2 I``."""
    if pb.sparse:
        Ab = pb.A[:, ws]
        if weights is not None:
            H = (Ab.T @ Ab.multiply(weights[:, None]).tocsc()).toarray()
        else:
            H = (Ab.T @ Ab).toarray()
        Abd = None
    else:
        Abd = np.asarray(pb.A[:, ws], dtype=np.float64)
        H = Abd.T @ (Abd if weights is None else Abd * weights[:, None])
    H = np.ascontiguousarray(H, dtype=np.float64)
    if pb.l2 > 0:
        H[np.diag_indices_from(H)] += pb.l2
    return H, Abd


class _GrowingGram:
    """``A_W^T A_W`` for a block that only grows: the Gram of the newcomers is appended in a buffer.

    Consecutive greedy blocks share the support, so keeping every coordinate once taken (a zero that stays
    zero costs O(1) per cyclic sweep) lets each iteration pay only for the new Gram columns,
    O(nnz of A_W^T A_new), with no copy of the old entries.
    """

    def __init__(self, pb):
        self.pb = pb
        self.ws = np.empty(0, dtype=np.int64)
        self.buf = np.empty((0, 0))
        self.use_gram = True

    def grow(self, new, gram_max=np.inf):
        A = self.pb.A
        m0 = self.ws.size
        ws = np.concatenate([self.ws, new])
        m = ws.size
        if m > gram_max or not self.use_gram:
            # large sparse blocks: residual-form coordinate descent needs no Gram (O(nnz) per update
            # instead of O(|W|)); the block only grows, so the switch is final
            self.use_gram = False
            self.ws = ws
            return None
        if m > self.buf.shape[0]:
            cap = max(m, 2 * self.buf.shape[0], 64)
            buf = np.empty((cap, cap))
            buf[:m0, :m0] = self.buf[:m0, :m0]
            self.buf = buf
        if sp.issparse(A):
            # sparse-sparse column products (the new columns laid out by row): no column copies, and the cost
            # is the number of shared rows, not nnz(A_W) * |new|
            cross = np.empty((m, new.size))
            cy.gram_cross(A.indptr, A.indices, A.data, ws, np.asarray(new, dtype=np.int64), A.shape[0], cross)
        else:
            cross = A[:, ws].T @ A[:, new]
        cross = np.asarray(cross)
        self.buf[:m, m0:m] = cross
        self.buf[m0:m, :m0] = cross[:m0].T
        self.ws = ws
        return self.buf[:m, :m]


def _block_matvec(pb, ws, Abd, d):
    """``A[:, ws] @ d`` over the nonzero entries of ``d`` only."""
    if Abd is not None:
        return Abd @ d
    nz = np.flatnonzero(d)
    if pb.sparse:
        out = np.zeros((pb.A.shape[0], 1))
        A = pb.A
        cy.rows_axpy(A.indptr, A.indices, A.data, ws[nz], np.ascontiguousarray(d[nz], dtype=np.float64)[:, None],
                     out, _EMPTY8, _EMPTY64, 0)
        return out[:, 0]
    return pb.A[:, ws[nz]] @ d[nz]


def solve_prox(pb, x, mon, **kw):
    """Run proximal greedy BCD on an L1/sign-penalized ``LeastSquares`` or ``Logistic``.

    Returns ``(x, converged, extra)``. BLAS is limited to one thread for the whole solve (one
    threadpoolctl context, ~0.3 ms, instead of one per block solve): the block factorizations are small,
    and threaded BLAS on small matrices spins on a busy machine.
    """
    with single_thread_blas():
        return _solve_prox(pb, x, mon, **kw)


def _solve_prox(pb, x, mon, *, tol, maxiter, p0, inner, max_inner, f_target, target_tol):
    A, l1, l2, nonneg = pb.A, pb.l1, pb.l2, pb.nonneg
    L = pb.lipschitz()
    p = pb.n_features
    fit = pb.datafit
    squared = fit.name == "squared"
    z = np.asarray(A @ x, dtype=np.float64) if np.any(x) else np.zeros(A.shape[0])
    d = np.empty(p)
    q = np.empty(p)
    scale = pb.gap_scale
    converged = False
    gram = _GrowingGram(pb) if squared else None
    prev_active = None
    active_iter = 0
    n_inner = 0
    gap = np.inf
    gbuf = np.empty(p)
    atb = None  # A^T b (least squares started at 0): the Gram subproblem's linear term, no gradient needed
    stale = 0  # 1: the next outer iteration grows the block from the previous scores (no gradient pass)
    skipped = 0  # such iterations since the last record
    for it in range(maxiter + 1):
        if stale:
            # the last block came out saturated (its solution used nearly all of it): the support is still being
            # cut short, so grow the block again from the previous scores instead of paying a full gradient
            # pass (the gap, the stop test and fresh scores come at the next full iteration)
            skipped += 1
            supp = ws[x[ws] != 0]
            size = min(p, max(p0, 2 * supp.size))
            score[gram.ws] = 0.0
            want = max(size - gram.ws.size, min(max(p0, supp.size // 2), int(np.count_nonzero(score > 0))))
            new = K.top_k(score, want)
            n_new = new.size
            if new.size:
                gram.grow(new, GRAM_MAX if pb.sparse else np.inf)
            ws = gram.ws
            if new.size == 0 or not gram.use_gram:
                stale = 0  # nothing left to add, or past the Gram regime: take a full iteration
                continue
        else:
            u = fit.deriv(z)
            if pb.sparse:
                cy.csc_rmatvec(A.indptr, A.indices, A.data, np.ascontiguousarray(u, dtype=np.float64), gbuf)
                g = gbuf
            else:
                g = np.asarray(A.T @ u, dtype=np.float64)
            if l2 > 0:
                g += l2 * x
            # relative duality gap at the rescaled dual point theta = phi'(z)
            F = fit.value(z) + pb.penalty(x)
            gap = _gap(pb, z, u, g, x, F)
            rel = gap / scale
            kkt = K.prox_scores(g, x, L, l1, nonneg, d, q)
            supp = np.flatnonzero(x)
            active = p - supp.size
            if prev_active is None or not np.array_equal(supp, prev_active):
                active_iter = it
                prev_active = supp
            if it == 0:
                kkt0 = max(kkt, 1.0)
                if squared and l2 == 0 and not np.any(x):
                    atb = -g.copy()  # the gradient at x = 0
                for key, val in (("fun", F), ("gap", rel), ("kkt", kkt), ("active_set_size", active), ("time", 0.0)):
                    mon.history.setdefault(key, []).append(val)
            elif mon.step(x, n=1 + skipped, fun=F, gap=rel, kkt=kkt, active_set_size=active):
                break
            skipped = 0
            # with no L1 and no ridge (e.g. NNLS) the dual is not attained by rescaling: stop on KKT instead
            done = rel <= tol if (l1 > 0 or l2 > 0) else kkt <= tol * kkt0
            if done or (f_target is not None and F - f_target <= target_tol):
                converged = True
                break
            if it == maxiter:
                break
            # greedy block: the support plus the most negative q_i, grown to max(p0, 2 |supp|)
            size = min(p, max(p0, 2 * supp.size))
            score = -q
            score[supp] = np.inf
            if squared:
                # the block only grows: the support is in it already, add the best violators outside it
                score[gram.ws] = 0.0
                want = max(size - gram.ws.size, min(max(p0, supp.size // 2), int(np.count_nonzero(score > 0))))
                new = K.top_k(score, want)
                n_new = new.size
                if new.size == 0 and gram.ws.size == 0:
                    converged = True
                    break
                if new.size:
                    gram.grow(new, GRAM_MAX if pb.sparse else np.inf)
                ws = gram.ws
            else:
                ws = K.top_k(score, size)
            if ws.size == 0:
                converged = True  # no coordinate can move: x is optimal up to rounding
                break
        stale = 0
        xw = x[ws].copy()
        gw = None if atb is not None and squared and gram.use_gram else g[ws]
        # while the block still grows a lot its subproblem changes next time: solve it loosely (skglm's 0.3);
        # once it is nearly stable, tightly (the free-set Newton steps make that cheap)
        if squared and not gram.use_gram:
            tol_in = RESIDUAL_TOL * kkt
        else:
            tol_in = 0.3 * kkt if (not squared or n_new > 0.05 * ws.size) else 0.01 * kkt
        if squared and not gram.use_gram:
            r = fit.b - z
            w = xw.copy()
            sweeps, _ = K.cd_l1_residual(A.indptr, A.indices, A.data, ws, L[ws], w, r, l1, l2, nonneg, tol_in,
                                         max(1, max_inner // max(ws.size, 1)))
            n_inner += sweeps * ws.size
            x[ws] = w
            z = fit.b - r
        elif squared:
            H = gram.buf[:gram.ws.size, :gram.ws.size]
            if l2 > 0:
                H = H + l2 * np.eye(ws.size)
            Abd = None
            # the support lies in the block, so H x_W - g_W = A_W^T b: the linear term needs no gradient
            c = atb[ws] if gw is None else H @ xw - gw
            w = xw.copy()
            nup = solve_block_qp(H, c, w, l1, nonneg, tol_in, max_inner, _greedy(inner, ws.size))
            n_inner += nup
            step = w - xw
            x[ws] = w
            z += _block_matvec(pb, ws, Abd, step)
            nnz_w = np.count_nonzero(w)
            # only while the grown block stays in the Gram regime (a large block's residual-form solve wants
            # fresh scores)
            if (atb is not None and gram.use_gram and nnz_w >= SATURATED * ws.size
                    and (not pb.sparse or 2 * nnz_w <= GRAM_MAX)):
                stale = 1
        else:
            # proximal Newton steps on the block until its own KKT measure drops below tol_in
            for _ in range(20):
                h = fit.curvature(z)
                H, Abd = _gram(pb, ws, h)
                c = H @ xw - gw
                w = xw.copy()
                nup = solve_block_qp(H, c, w, l1, nonneg, 0.3 * tol_in, max_inner, _greedy(inner, ws.size))
                n_inner += nup
                step = w - xw
                dz = _block_matvec(pb, ws, Abd, step)
                # Armijo on F along the prox-Newton direction
                pen_old = l1 * np.abs(xw).sum() + 0.5 * l2 * (xw @ xw)
                Fw = fit.value(z) + pen_old
                decr = gw @ step + l1 * (np.abs(w).sum() - np.abs(xw).sum()) + 0.5 * l2 * (w @ w - xw @ xw)
                alpha = 1.0
                for _ls in range(30):
                    xt = xw + alpha * step
                    Ft = fit.value(z + alpha * dz) + l1 * np.abs(xt).sum() + 0.5 * l2 * (xt @ xt)
                    if Ft <= Fw + 1e-4 * alpha * decr:
                        break
                    alpha *= 0.5
                xw = xw + alpha * step
                z += alpha * dz
                # block gradient and block KKT
                gw = np.asarray(pb.A[:, ws].T @ fit.deriv(z), dtype=np.float64) if Abd is None else Abd.T @ fit.deriv(z)
                if l2 > 0:
                    gw = gw + l2 * xw
                dw = np.empty(ws.size)
                qw = np.empty(ws.size)
                kkt_w = K.prox_scores(gw, xw, L[ws], l1, nonneg, dw, qw)
                if kkt_w <= tol_in:
                    break
            x[ws] = xw
    extra = dict(gap=gap, rel_gap=gap / scale, active_set_iter=active_iter, n_coordinate_updates=n_inner,
                 fun=fit.value(z) + pb.penalty(x))
    return x, converged, extra


def solve_block_qp(H, c, w, lam, nonneg, tol, max_updates, greedy):
    """The ``pn`` block subproblem ``min_w 1/2 w^T H w - c^T w + lam |w|_1`` (``w >= 0`` if ``nonneg``).

    Alternates a few sweeps of coordinate descent (which fixes the sign pattern) with a Newton step on the
    free set: with the signs ``s`` of the nonzeros ``S`` frozen the problem is the quadratic
    ``H_SS w_S = c_S - lam s``; we move towards its solution as far as the signs allow (the first coordinate
    to cross zero is set to zero). Once the signs are right this is exact, where coordinate descent alone
    crawls on correlated columns. Returns the number of coordinate updates. ``w`` is updated in place.
    """
    m = w.shape[0]
    total = 0
    for rnd in range(100):
        if rnd > 0 or np.count_nonzero(w) >= 32:
            # Newton first when the block already has a support (warm start from the previous block)
            _free_set_newton(H, c, w, lam)
        budget = min(max_updates - total, 2 * m + 10)
        nup, kkt = K.cd_l1_gram(H, c, w, lam, nonneg, tol, budget, greedy)
        total += nup
        if kkt <= tol or total >= max_updates:
            break
    return total


def _free_set_newton(H, c, w, lam):
    """One Newton step on the free set with frozen signs, as far as the signs allow (see solve_block_qp)."""
    S = np.flatnonzero(w)
    if S.size == 0:
        return
    s = np.sign(w[S])
    HS = H[np.ix_(S, S)]
    try:
        v = sla.cho_solve(sla.cho_factor(HS, lower=True, check_finite=False), c[S] - lam * s, check_finite=False)
    except (np.linalg.LinAlgError, sla.LinAlgError):
        return  # singular free set (duplicate columns): keep the coordinate descent iterate
    wS = w[S]
    bad = s * v < 0
    if not bad.any():
        w[S] = v
        return

    def model(u):
        return 0.5 * u @ (HS @ u) - c[S] @ u + lam * np.abs(u).sum()

    # candidate 1: the full step projected on the sign pattern (often right at once)
    proj = np.where(bad, 0.0, v)
    # candidate 2: the longest step that keeps the signs, the first crossing set to zero
    ratios = wS[bad] / (wS[bad] - v[bad])
    k = int(np.argmin(ratios))
    seg = wS + ratios[k] * (v - wS)
    seg[np.flatnonzero(bad)[k]] = 0.0
    wS = proj if model(proj) <= model(seg) else seg
    w[S] = wS


def _greedy(inner, m):
    # greedy (GS-q) inner CD costs O(m) per update for the ranking, cyclic O(m) only per nonzero update:
    # measured, greedy wins on small blocks and cyclic on blocks of a few hundred coordinates and more
    return inner == "gsq" or (inner == "auto" and m <= 256)


def _gap(pb, z, u, g, x, F):
    """Duality gap from quantities already computed (``g = A^T u + l2 x``)."""
    fit, l1, l2 = pb.datafit, pb.l1, pb.l2
    v = -(g - l2 * x) if l2 > 0 else -g
    if l2 > 0:
        t = np.maximum(v - l1, 0.0) if pb.nonneg else np.maximum(np.abs(v) - l1, 0.0)
        dual = fit.conj_neg(u) - 0.5 / l2 * float(t @ t)
    else:
        vmax = float(v.max()) if pb.nonneg else float(np.abs(v).max())
        s = 1.0 if vmax <= l1 else l1 / vmax
        dual = fit.conj_neg(s * u)
    return max(F - dual, 0.0)
