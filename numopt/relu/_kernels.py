"""Numba kernels of the convex ReLU solvers: the pattern-masked, elementwise passes.

The dense products ``X @ [U Z]`` and ``X.T @ [...]`` go to BLAS; these kernels fuse everything done
elementwise on the ``n x 2P`` arrays around them (mask with ``D_i``/``E_i``, project, update duals,
accumulate residual norms) into one serial pass (threads do not pay at these sizes and fight BLAS
threads on small machines). Inputs are trusted (checked upstream).

The per-iteration ADMM kernels index their C-contiguous arrays through flat views (``A.reshape(-1)``,
offsets ``k * 2P + i`` and ``k * 2P + P + i``) and are compiled with ``fastmath={"reassoc", "contract"}``:
Numba's two-dimensional indexing kept LLVM from vectorising these short rows (``2P = 64``), and
reassociation lets it vectorise the residual sums. Measured at ``n = 569, P = 32``: the slack step 51 -> 14 us,
the cone product 19 -> 8 us. Only the order of floating-point additions changes (results stay deterministic);
no ``nnan``/``ninf`` flags, so NaN and infinity propagate as in plain IEEE arithmetic.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# reassociation (vectorised sums) and FMA contraction only: NaN/inf semantics are kept
_FM = {"reassoc", "contract"}


@njit(cache=True, nogil=True)
def masked_rowsum(XA, Dmat):
    """``out_k = sum_i Dmat[k, i] (XA[k, i] - XA[k, P + i])`` for ``XA = X [U Z]`` (``n x 2P``).

    This is ``F(u, z) = sum_i D_i X (u_i - z_i)`` given the product ``X [U Z]``.
    """
    n, P = Dmat.shape
    out = np.empty(n)
    for k in range(n):
        acc = 0.0
        for i in range(P):
            acc += Dmat[k, i] * (XA[k, i] - XA[k, P + i])
        out[k] = acc
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def masked_rowsum_single(XA, Dmat, out=None):
    """``out_k = sum_i Dmat[k, i] XA[k, i]`` (``M a`` given ``X A`` for ``A`` of shape ``d x P``; C-contiguous)."""
    n, P = Dmat.shape
    if out is None:
        out = np.empty(n, XA.dtype)
    xa = XA.reshape(-1)
    dd = Dmat.reshape(-1)
    for k in range(n):
        b = k * P
        acc = 0.0
        for i in range(P):
            acc += dd[b + i] * xa[b + i]
        out[k] = acc
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def masked_scale(Dmat, q, out):
    """``out = Dmat o q[:, None]`` (``n x P``, so ``X.T @ out = M^T q``); returns ``out``."""
    n, P = Dmat.shape
    dd = Dmat.reshape(-1)
    o = out.reshape(-1)
    for k in range(n):
        b = k * P
        qk = q[k]
        for i in range(P):
            o[b + i] = dd[b + i] * qk
    return out


@njit(cache=True, nogil=True)
def masked_outer(Dmat, r, T):
    """``T[:, :P] = Dmat o r``, ``T[:, P:] = -(Dmat o r)`` (so ``X.T @ T = F^T r``)."""
    n, P = Dmat.shape
    for k in range(n):
        for i in range(P):
            t = Dmat[k, i] * r[k]
            T[k, i] = t
            T[k, P + i] = -t
    return T


@njit(cache=True, nogil=True)
def slack_dual_update(XA, Dmat, Nu, ES, gamma, scale, alpha):
    """The cone-slack and its dual step, fused, for ``G u = scale * E o X [U Z]`` (in place).

    For every entry (``e = 2 d - 1``, ``s_old = e * ES`` on entry): ``g = scale * e * XA``, relaxed
    ``gh = alpha g + (1 - alpha) s_old``, ``s = max(gh + nu, 0)``, ``nu += gamma (gh - s)``, and
    ``ES = e * s`` on exit (so ``X.T @ ES = G^T s / scale``). Returns
    ``(||G u - s||^2, ||G u||^2, ||s||^2, ||nu||^2)``.
    """
    n, P = Dmat.shape
    r2 = 0.0
    g2 = 0.0
    s2 = 0.0
    nu2 = 0.0
    for k in range(n):
        for j in range(2 * P):
            i = j if j < P else j - P
            e = 2.0 * Dmat[k, i] - 1.0
            g = scale * e * XA[k, j]
            gh = alpha * g + (1.0 - alpha) * (e * ES[k, j])
            s = gh + Nu[k, j]
            if s < 0.0:
                s = 0.0
            nu = Nu[k, j] + gamma * (gh - s)
            Nu[k, j] = nu
            ES[k, j] = e * s
            r2 += (g - s) * (g - s)
            g2 += g * g
            s2 += s * s
            nu2 += nu * nu
    return r2, g2, s2, nu2


@njit(cache=True, nogil=True)
def group_prox_dual_update(U, Lam, V, thr, gamma, alpha):
    """Group soft-threshold and the dual step of the splitting ``u = v`` (in place).

    With the relaxed ``uh = alpha u + (1 - alpha) v_old`` (``V`` holds ``v_old`` on entry):
    ``v_g <- (1 - thr / ||uh_g + lam_g||)_+ (uh_g + lam_g)`` per column ``g``, then
    ``lam <- lam + gamma (uh - v)``. Returns ``(||u - v||^2, ||v - v_old||^2, ||u||^2, ||v||^2, ||lam||^2,
    sum_g ||v_g||)``.
    """
    d, m = U.shape
    r2 = 0.0
    dv2 = 0.0
    u2 = 0.0
    v2 = 0.0
    l2 = 0.0
    vnorm = 0.0
    for g in range(m):
        nz = 0.0
        for a in range(d):
            z = alpha * U[a, g] + (1.0 - alpha) * V[a, g] + Lam[a, g]
            nz += z * z
        nz = np.sqrt(nz)
        scale = 0.0
        if nz > thr:
            scale = 1.0 - thr / nz
        vnorm += scale * nz
        for a in range(d):
            u = U[a, g]
            uh = alpha * u + (1.0 - alpha) * V[a, g]
            vnew = scale * (uh + Lam[a, g])
            dv = vnew - V[a, g]
            V[a, g] = vnew
            lam = Lam[a, g] + gamma * (uh - vnew)
            Lam[a, g] = lam
            r2 += (u - vnew) ** 2
            dv2 += dv * dv
            u2 += u * u
            v2 += vnew * vnew
            l2 += lam * lam
    return r2, dv2, u2, v2, l2, vnorm


@njit(cache=True, nogil=True, fastmath=_FM)
def _col_norms2(Q, out):
    """``out[g] = ||Q[:, g]||^2`` by rows (contiguous, vectorised over ``g``)."""
    d, m = Q.shape
    q = Q.reshape(-1)
    for g in range(m):
        out[g] = 0.0
    for a in range(d):
        b = a * m
        for g in range(m):
            out[g] += q[b + g] * q[b + g]
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def group_shrink(Q, thr, V):
    """``V[:, g] = (1 - thr_g / ||Q[:, g]||)_+ Q[:, g]`` per column (the group soft-threshold); returns ``V``.

    ``thr`` holds one threshold per column (``m`` values); ``thr_g = inf`` is the projection onto ``{0}`` (a
    group fixed at zero).
    """
    d, m = Q.shape
    sc = _col_norms2(Q, np.empty(m))
    for g in range(m):
        nz = np.sqrt(sc[g])
        sc[g] = 1.0 - thr[g] / nz if nz > thr[g] else 0.0
    q = Q.reshape(-1)
    v = V.reshape(-1)
    for a in range(d):
        b = a * m
        for g in range(m):
            v[b + g] = sc[g] * q[b + g]
    return V


@njit(cache=True, nogil=True, fastmath=_FM)
def shrink_rhs(Qv, GA, B0, thr, V, rhs):
    """``V = group_shrink(Qv)`` and the u-step right-hand side ``rhs = 2 V - Qv + GA + B0`` in one call.

    In the one-state form ``v = shrink(Qv)``, ``lam = Qv - v``, so ``v - lam = 2 v - Qv``; ``GA = G^T (s - nu)`` and
    ``B0 = F^T y / rho`` (squared loss; zeros otherwise); ``thr``: the per-group thresholds of
    :func:`group_shrink`. Returns ``V``.
    """
    group_shrink(Qv, thr, V)
    q = Qv.reshape(-1)
    v = V.reshape(-1)
    ga = GA.reshape(-1)
    b0 = B0.reshape(-1)
    r = rhs.reshape(-1)
    for j in range(q.shape[0]):
        r[j] = 2.0 * v[j] - q[j] + ga[j] + b0[j]
    return V


@njit(cache=True, nogil=True, fastmath=_FM)
def cone_abs(Qs, Dmat, scale, out):
    """``out = scale * e o |Qs|`` (``e = 2 d - 1`` tiled over both families), so that ``X.T @ out = G^T (s - nu)``.

    In the Douglas-Rachford form of the ADMM the slack and its scaled dual are ``s = (q)_+`` and
    ``nu = -(q)_-`` of one state ``q``, hence ``s - nu = |q|``. C-contiguous arrays.
    """
    n, P = Dmat.shape
    m = 2 * P
    q = Qs.reshape(-1)
    dd = Dmat.reshape(-1)
    o = out.reshape(-1)
    for k in range(n):
        b2 = k * m
        b = k * P
        for i in range(P):
            e = scale * (2.0 * dd[b + i] - 1.0)
            o[b2 + i] = e * abs(q[b2 + i])
            o[b2 + P + i] = e * abs(q[b2 + P + i])
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def dr_slack_step(XU, Dmat, Qs, scale, alpha, out, yhat):
    """Slack half of one Douglas-Rachford (relaxed ADMM) step, fused with the model output.

    For every entry (``e = 2 d - 1``): ``g = scale * e * XU`` (``= G u``), ``s = (Qs)_+``,
    ``out = Qs + alpha (g - s)``. ``out`` may be ``Qs`` (in place). Also ``yhat = F u``, i.e.
    ``yhat_k = sum_i d_ki (XU[k, i] - XU[k, P + i])``. Returns ``(||G u - s||^2, ||G u||^2, ||s||^2)``.
    C-contiguous arrays.
    """
    n, P = Dmat.shape
    m = 2 * P
    xu = XU.reshape(-1)
    dd = Dmat.reshape(-1)
    qs = Qs.reshape(-1)
    o = out.reshape(-1)
    r2 = 0.0
    g2 = 0.0
    s2 = 0.0
    for k in range(n):
        b2 = k * m
        b = k * P
        acc = 0.0
        for i in range(P):
            dk = dd[b + i]
            e = scale * (2.0 * dk - 1.0)
            xa = xu[b2 + i]
            xb = xu[b2 + P + i]
            acc += dk * (xa - xb)
            ga = e * xa
            gb = e * xb
            qa = qs[b2 + i]
            qb = qs[b2 + P + i]
            sa = max(qa, 0.0)
            sb = max(qb, 0.0)
            o[b2 + i] = qa + alpha * (ga - sa)
            o[b2 + P + i] = qb + alpha * (gb - sb)
            r2 += (ga - sa) * (ga - sa) + (gb - sb) * (gb - sb)
            g2 += ga * ga + gb * gb
            s2 += sa * sa + sb * sb
        yhat[k] = acc
    return r2, g2, s2


@njit(cache=True, nogil=True, fastmath=_FM)
def dr_group_step(U, Qv, V, alpha, out):
    """Variable half of one Douglas-Rachford step: ``out = Qv + alpha (U - V)`` (``V`` the shrunk ``Qv``).

    ``out`` may be ``Qv``. Returns ``(||U - V||^2, ||U||^2, ||V||^2, ||Qv - V||^2, sum_g ||U_g||)``
    (``Qv - V`` is the scaled dual ``lam``; the last sum is the penalty at ``u``).
    """
    d, m = U.shape
    un = _col_norms2(U, np.empty(m))
    uf = U.reshape(-1)
    vf = V.reshape(-1)
    qf = Qv.reshape(-1)
    o = out.reshape(-1)
    r2 = 0.0
    v2 = 0.0
    l2 = 0.0
    for j in range(uf.shape[0]):
        u = uf[j]
        v = vf[j]
        q = qf[j]
        o[j] = q + alpha * (u - v)
        r2 += (u - v) * (u - v)
        v2 += v * v
        l2 += (q - v) * (q - v)
    u2 = 0.0
    unorm = 0.0
    for g in range(m):
        u2 += un[g]
        unorm += np.sqrt(un[g])
    return r2, u2, v2, l2, unorm


@njit(cache=True, nogil=True, fastmath=_FM)
def dr_dual_step(GQ, GA, GGU, Qv, V, alpha, out, GS):
    """Carried product of the one-state ADMM: ``GS = G^T s``, ``out = G^T Qs_new``; returns ``||lam + G^T nu||^2``.

    With ``GQ = G^T Qs`` and ``GA = G^T |Qs| = G^T (s - nu)``: ``G^T s = (GQ + GA) / 2``, ``G^T nu = GQ - G^T s``, and
    the next state's ``G^T Qs_new = GQ + alpha (G^T G u - G^T s)`` (``GGU = G^T G u``). ``lam = Qv - V``. ``out`` may be
    ``GQ``.
    """
    gq = GQ.reshape(-1)
    ga = GA.reshape(-1)
    gg = GGU.reshape(-1)
    qv = Qv.reshape(-1)
    vv = V.reshape(-1)
    o = out.reshape(-1)
    gs = GS.reshape(-1)
    acc = 0.0
    for j in range(gq.shape[0]):
        q = gq[j]
        s = 0.5 * (q + ga[j])
        t = qv[j] - vv[j] + (q - s)
        acc += t * t
        gs[j] = s
        o[j] = q + alpha * (gg[j] - s)
    return acc


@njit(cache=True, nogil=True, fastmath=_FM)
def diff_norm(A, A0, B, B0):
    """``||(A - A0) + (B - B0)||_2`` (the ADMM dual residual between consecutive iterates, before ``rho``)."""
    a = A.reshape(-1)
    a0 = A0.reshape(-1)
    b = B.reshape(-1)
    b0 = B0.reshape(-1)
    acc = 0.0
    for j in range(a.shape[0]):
        t = (a[j] - a0[j]) + (b[j] - b0[j])
        acc += t * t
    return np.sqrt(acc)


@njit(cache=True, nogil=True, fastmath=_FM)
def diff_norm2(a, b, n):
    """``||a[:n] - b[:n]||^2``."""
    acc = 0.0
    for i in range(n):
        t = a[i] - b[i]
        acc += t * t
    return acc


@njit(cache=True, nogil=True, fastmath=_FM)
def aa_push(T, z, n_acc, g_prev, T_prev, dg, dT, first):
    """Anderson memory update in one pass: ``g = T[:n_acc] - z[:n_acc]``; unless ``first``, ``dg = g - g_prev`` and
    ``dT = T - T_prev``; then ``g_prev = g``, ``T_prev = T``. Returns ``dg . g`` (0 when ``first``)."""
    acc = 0.0
    if first:
        for i in range(n_acc):
            g_prev[i] = T[i] - z[i]
        for i in range(T.shape[0]):
            T_prev[i] = T[i]
        return acc
    for i in range(n_acc):
        g = T[i] - z[i]
        d = g - g_prev[i]
        dg[i] = d
        acc += d * g
        g_prev[i] = g
    for i in range(T.shape[0]):
        t = T[i]
        dT[i] = t - T_prev[i]
        T_prev[i] = t
    return acc


@njit(cache=True, nogil=True, fastmath=_FM)
def aa_combine(T, dT, coef, out):
    """Anderson point ``out = T - coef @ dT`` (``dT`` of shape ``k x N``), by rows (contiguous axpys)."""
    N = out.shape[0]
    for i in range(N):
        out[i] = T[i]
    for r in range(coef.shape[0]):
        c = coef[r]
        row = dT[r]
        for i in range(N):
            out[i] -= c * row[i]
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def split_diff(B, out):
    """``out = B[:, :P] - B[:, P:]`` for ``B`` of shape ``d x 2P`` (``out`` C-contiguous ``d x P``)."""
    d, m = B.shape
    P = m // 2
    b = B.reshape(-1)
    o = out.reshape(-1)
    for a in range(d):
        for i in range(P):
            o[a * P + i] = b[a * m + i] - b[a * m + P + i]
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def split_combine(CB, W, out):
    """``out = [CB_U - W / 2, CB_Z + W / 2]`` (Woodbury u-step: ``U = (c + a) / 2``, ``Z = (c - a) / 2``)."""
    d, m = CB.shape
    P = m // 2
    cb = CB.reshape(-1)
    w = W.reshape(-1)
    o = out.reshape(-1)
    for a in range(d):
        for i in range(P):
            h = 0.5 * w[a * P + i]
            o[a * m + i] = cb[a * m + i] - h
            o[a * m + P + i] = cb[a * m + P + i] + h
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def momentum_point(Tz, Tz_prev, out, theta):
    """Momentum step ``out = Tz + theta (Tz - Tz_prev)`` (one pass; the caller then swaps ``Tz`` and ``Tz_prev``).

    ``theta == 0`` does not read ``Tz_prev`` (it may hold garbage at a restart).
    """
    if theta == 0.0:
        for i in range(Tz.shape[0]):
            out[i] = Tz[i]
        return out
    for i in range(Tz.shape[0]):
        t = Tz[i]
        out[i] = t + theta * (t - Tz_prev[i])
    return out


@njit(cache=True, nogil=True, fastmath=_FM)
def half_sq_dist(a, b):
    """``||a - b||^2 / 2`` (the squared loss at predictions ``a``)."""
    acc = 0.0
    for i in range(a.shape[0]):
        t = a[i] - b[i]
        acc += t * t
    return 0.5 * acc


@njit(cache=True, nogil=True)
def relu_features(X, Udir):
    """``(X @ Udir)_+`` computed row by row (the SCP feature map), ``n x N``."""
    n, d = X.shape
    N = Udir.shape[1]
    out = np.empty((n, N))
    for k in range(n):
        for j in range(N):
            acc = 0.0
            for a in range(d):
                acc += X[k, a] * Udir[a, j]
            out[k, j] = acc if acc > 0.0 else 0.0
    return out


@njit(cache=True, nogil=True)
def soft_threshold(z, thr, out):
    """``out = sign(z) max(|z| - thr, 0)`` (the l1 prox)."""
    for j in range(z.shape[0]):
        a = z[j]
        if a > thr:
            out[j] = a - thr
        elif a < -thr:
            out[j] = a + thr
        else:
            out[j] = 0.0
    return out


# --- robust (adversarial) program: the two non-trivial proximal maps -------------------------------------


@njit(cache=True, nogil=True)
def _wl1_soft(q, w, kappa):
    """``sum_j w_j (|q_j| - kappa w_j)_+``: the weighted l1 norm of the weighted soft-threshold."""
    acc = 0.0
    for j in range(q.shape[0]):
        a = abs(q[j]) - kappa * w[j]
        if a > 0.0:
            acc += w[j] * a
    return acc


@njit(cache=True, nogil=True)
def _wsoft(q, w, kappa, out):
    """``out = soft(q, kappa w)`` (weighted soft-threshold)."""
    for j in range(q.shape[0]):
        x = q[j]
        t = kappa * w[j]
        if x > t:
            out[j] = x - t
        elif x < -t:
            out[j] = x + t
        else:
            out[j] = 0.0


@njit(cache=True, nogil=True)
def _cone_psi(theta, q0, w, cand, nc):
    tau = _wl1_soft(q0, w, theta)
    f = -theta
    for c in range(nc):
        if tau > cand[c]:
            f += tau - cand[c]
    return f


@njit(cache=True, nogil=True)
def robust_cone_project(G0, Q0, w, G, Q):
    """Project every column pair ``(G0[:, j], Q0[j])`` onto ``S_w = {(g, q): min_k g_k >= sum_a w_a |q_a|}``.

    ``G0`` is ``n x J``, ``Q0`` is ``J x m``, ``w >= 0`` of length ``m``; results go to ``G``, ``Q``. KKT of
    ``min ||g - g0||^2 + ||q - q0||^2`` over ``g >= tau``, ``||q||_{1,w} <= tau``: ``g = max(g0, tau)``,
    ``q = soft(q0, theta w)``, ``tau = ||soft(q0, theta w)||_{1,w}`` and ``theta = sum_k (tau - g0_k)_+`` (the
    multipliers of ``g_k >= tau`` sum to that of the l1 ball). ``psi(theta) = sum_k (tau(theta) - g0_k)_+ - theta``
    is continuous, piecewise linear and strictly decreasing with ``psi(0) >= 0 >= psi(psi(0))``: bisection, then the
    exact root of the last linear piece. ``m = 0`` (nothing perturbable) is the nominal ``g = max(g0, 0)``.
    """
    n, J = G0.shape
    cand = np.empty(n)
    for j in range(J):
        q0 = Q0[j]
        L1 = _wl1_soft(q0, w, 0.0)
        # only entries below ||q0||_{1,w} >= tau can be raised
        nc = 0
        psi0 = 0.0
        for k in range(n):
            g = G0[k, j]
            if g < L1:
                cand[nc] = g
                nc += 1
                psi0 += L1 - g
        if psi0 <= 0.0:                 # already in S (or nothing perturbable and g0 >= 0)
            theta, tau = 0.0, L1
        elif L1 == 0.0:
            theta, tau = 0.0, 0.0
        else:
            lo, hi = 0.0, psi0
            flo, fhi = psi0, _cone_psi(psi0, q0, w, cand, nc)
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                if mid <= lo or mid >= hi or fhi == 0.0:
                    break
                f = _cone_psi(mid, q0, w, cand, nc)
                if f > 0.0:
                    lo, flo = mid, f
                else:
                    hi, fhi = mid, f
            theta = hi if flo == fhi else lo + (hi - lo) * flo / (flo - fhi)
            if not (lo <= theta <= hi):
                theta = 0.5 * (lo + hi)
            tau = _wl1_soft(q0, w, theta)
        for k in range(n):
            g = G0[k, j]
            G[k, j] = g if g > tau else tau
        _wsoft(q0, w, theta, Q[j])
    return G, Q


@njit(cache=True, nogil=True)
def _sorted_l1_tables(q, w, bp, SA, SB):
    """Breakpoints ``bp = sort(|q_j| / w_j)`` and suffix sums ``SA[i] = sum_{l>=i} w|q|``, ``SB[i] = sum_{l>=i} w^2``
    (in breakpoint order), so that ``||soft(q, kappa w)||_{1,w} = SA[i] - kappa SB[i]``, ``i = #{bp <= kappa}``."""
    m = q.shape[0]
    ratio = np.empty(m)
    for j in range(m):
        ratio[j] = abs(q[j]) / w[j]
    order = np.argsort(ratio)
    SA[m] = 0.0
    SB[m] = 0.0
    for r in range(m - 1, -1, -1):
        j = order[r]
        bp[r] = ratio[j]
        SA[r] = SA[r + 1] + w[j] * abs(q[j])
        SB[r] = SB[r + 1] + w[j] * w[j]


@njit(cache=True, nogil=True)
def _slope_residual(theta, step, bp, SA, SB, a, logistic):
    """``theta - l'(Z(theta))`` of :func:`robust_loss_prox` (increasing in ``theta``) from the sorted tables;
    ``a = |t0 - y|`` (squared) or the nominal margin ``(2y - 1) t0`` (logistic)."""
    kappa = theta * step
    i = np.searchsorted(bp, kappa, side="right")
    S = SA[i] - kappa * SB[i]
    if logistic:
        z = 2.0 * (S - a - kappa)
        if z >= 0.0:
            return theta - 2.0 / (1.0 + np.exp(-z))
        e = np.exp(z)
        return theta - 2.0 * e / (1.0 + e)
    h = a - kappa
    return theta - (S + (h if h > 0.0 else 0.0))


@njit(cache=True, nogil=True)
def _squared_row_newton(q0, r0, w, step, qout, T, k, yk):
    """One row of the squared-loss prox without sorting: ``f(theta) = theta - Z(theta)`` is concave (``Z`` is
    convex, piecewise linear, non-increasing), so Newton from ``theta = 0`` (where ``f <= 0``) increases
    monotonically, never overshoots and ends exactly on the root's piece (at most ``m + 2`` steps, 2-3 in
    practice). Writes ``q`` and ``t``; returns ``l`` at the result."""
    m = q0.shape[0]
    a = abs(r0)
    theta = 0.0
    for _ in range(m + 3):
        kappa = theta * step
        Z = 0.0
        slope = 0.0
        for j in range(m):
            e = abs(q0[j]) - kappa * w[j]
            if e > 0.0:
                Z += w[j] * e
                slope += w[j] * w[j]
        if a > kappa:
            Z += a - kappa
            slope += 1.0
        f = theta - Z
        if f >= 0.0:
            break
        new = theta - f / (1.0 + step * slope)
        if new <= theta:
            break
        theta = new
    kappa = theta * step
    _wsoft(q0, w, kappa, qout)
    if r0 > kappa:
        T[k] = yk + r0 - kappa
    elif r0 < -kappa:
        T[k] = yk + r0 + kappa
    else:
        T[k] = yk
    z = _wl1_soft(q0, w, kappa) + abs(T[k] - yk)
    return 0.5 * z * z


@njit(cache=True, nogil=True)
def robust_loss_prox(T0, Q0, w, y, logistic, step, T, Q):
    """Prox of ``step * sum_k l(||q_k||_{1,w} + h_k(t_k))`` at ``(T0, Q0)`` (rows ``k``; into ``T, Q``).

    Squared loss: ``l(z) = z^2 / 2``, ``h_k(t) = |t - y_k|``; logistic: ``l(z) = log(1 + e^{2z})``,
    ``h_k(t) = -(2 y_k - 1) t``. With ``theta = l'(z*)`` the optimality conditions are
    ``q = soft(q0, step theta w)``, ``t = prox_{step theta h}(t0)`` and ``theta = l'(Z(theta))``,
    ``Z(theta) = ||soft(q0, step theta w)||_{1,w} + h(prox_{step theta h}(t0))`` non-increasing, so
    ``f(theta) = theta - l'(Z(theta))`` is increasing. ``Z`` is piecewise linear with breakpoints
    ``theta = |q0_j| / (w_j step)`` (and ``|t0 - y| / step``, squared): a binary search over the sorted
    breakpoints finds the piece holding the root, which is then solved by safeguarded Newton (logistic,
    ``O(m log m)`` per row). Squared loss: ``f`` is concave, so plain Newton from ``theta = 0`` is monotone and
    exact after a few ``O(m)`` passes, no sort (:func:`_squared_row_newton`). Returns the sum of ``l``.
    """
    n, m = Q0.shape
    bp = np.empty(m + 1)
    SA = np.empty(m + 2)
    SB = np.empty(m + 2)
    total = 0.0
    for k in range(n):
        q0 = Q0[k]
        t0 = T0[k]
        yk = y[k]
        sg = 2.0 * yk - 1.0
        if not logistic:
            total += _squared_row_newton(q0, t0 - yk, w, step, Q[k], T, k, yk)
            continue
        _sorted_l1_tables(q0, w, bp[:m], SA[:m + 1], SB[:m + 1])
        a = sg * t0 if logistic else abs(t0 - yk)
        # theta-breakpoints (sorted) and the bracket [lo, hi] of the root
        nb = m
        if not logistic:               # the kink of h: kappa = a
            pos = np.searchsorted(bp[:m], a)
            for r in range(m, pos, -1):
                bp[r] = bp[r - 1]
            bp[pos] = a
            nb = m + 1
            # re-derive the suffix sums in the merged order (the kink adds nothing to S)
            SA[m + 1] = 0.0
            SB[m + 1] = 0.0
            for r in range(m, pos, -1):
                SA[r] = SA[r - 1]
                SB[r] = SB[r - 1]
        lo, hi = 0.0, 2.0 if logistic else SA[0] + a
        if _slope_residual(lo, step, bp[:nb], SA, SB, a, logistic) >= 0.0:
            hi = lo
        else:
            # largest breakpoint (in theta) with f < 0, smallest with f >= 0
            left, right = 0, nb - 1
            while left <= right:
                mid = (left + right) // 2
                th = bp[mid] / step
                if th >= hi:
                    right = mid - 1
                elif _slope_residual(th, step, bp[:nb], SA, SB, a, logistic) < 0.0:
                    lo = th
                    left = mid + 1
                else:
                    hi = th
                    right = mid - 1
        # on [lo, hi] the l1 part is linear: S = SA[i] - kappa SB[i]
        thm = 0.5 * (lo + hi)
        i = np.searchsorted(bp[:nb], thm * step, side="right")
        A, B = SA[i], SB[i]
        if hi == lo:
            theta = lo
        elif logistic:
            # f(theta) = theta - 2 sigmoid(2 (A - a - theta step (B + 1))): increasing, smooth on the piece
            theta = thm
            for _ in range(100):
                z = 2.0 * (A - a - theta * step * (B + 1.0))
                sgm = 1.0 / (1.0 + np.exp(-z)) if z >= 0.0 else np.exp(z) / (1.0 + np.exp(z))
                f = theta - 2.0 * sgm
                if f == 0.0:
                    break
                if f < 0.0:
                    lo = theta
                else:
                    hi = theta
                df = 1.0 + 4.0 * sgm * (1.0 - sgm) * 2.0 * step * (B + 1.0) / 2.0
                new = theta - f / df
                if not (lo < new < hi):
                    new = 0.5 * (lo + hi)
                if abs(new - theta) <= 1e-15 * max(1.0, abs(theta)) or hi - lo <= 4e-16 * max(1.0, hi):
                    theta = new
                    break
                theta = new
        else:
            # theta = A - theta step B + (a - theta step)[kappa < a]  (linear on the piece)
            act = 1.0 if thm * step < a else 0.0
            theta = (A + act * a) / (1.0 + step * B + act * step)
            if theta < lo:
                theta = lo
            elif theta > hi:
                theta = hi
        kappa = theta * step
        _wsoft(q0, w, kappa, Q[k])
        S = _wl1_soft(q0, w, kappa)
        if logistic:
            t = t0 + sg * kappa
            z = 2.0 * (S - sg * t)
            total += z + np.log1p(np.exp(-z)) if z > 0.0 else np.log1p(np.exp(z))
        else:
            r = t0 - yk
            if r > kappa:
                t = t0 - kappa
            elif r < -kappa:
                t = t0 + kappa
            else:
                t = yk
            z = S + abs(t - yk)
            total += 0.5 * z * z
        T[k] = t
    return total


def warmup():
    """Compile (or load from cache) every kernel on tiny inputs."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 3))
    D = (rng.standard_normal((4, 2)) > 0).astype(np.float64)
    XA = rng.standard_normal((4, 4))
    masked_rowsum(XA, D)
    masked_rowsum_single(np.ascontiguousarray(XA[:, :2]), D)
    masked_rowsum_single(np.ascontiguousarray(XA[:, :2]), D, np.empty(4))
    masked_scale(D, np.ones(4), np.empty((4, 2)))
    V3 = np.empty((3, 4))
    shrink_rhs(XA[:3].copy(), XA[:3].copy(), XA[:3].copy(), np.full(4, 0.5), V3, np.empty((3, 4)))
    dr_dual_step(XA[:3].copy(), XA[:3].copy(), XA[:3].copy(), XA[:3].copy(), V3, 1.6, np.empty((3, 4)), np.empty((3, 4)))
    diff_norm(V3, V3, V3, V3)
    diff_norm2(np.ones(4), np.zeros(4), 3)
    e4 = np.empty(4)
    aa_push(np.ones(4), np.zeros(4), 3, np.zeros(3), np.zeros(4), np.empty(3), e4, False)
    aa_push(np.ones(4), np.zeros(4), 3, np.zeros(3), np.zeros(4), np.empty(3), e4, True)
    aa_combine(np.ones(4), np.ones((2, 4)), np.ones(2), e4)
    split_diff(V3, np.empty((3, 2)))
    split_combine(V3, np.empty((3, 2)), np.empty((3, 4)))
    masked_outer(D, np.ones(4), np.empty((4, 4)))
    slack_dual_update(XA, D, np.zeros((4, 4)), np.zeros((4, 4)), 1.0, 1.0, 1.0)
    group_shrink(rng.standard_normal((3, 4)), np.full(4, 0.5), np.empty((3, 4)))
    cone_abs(XA, D, 1.0, np.empty((4, 4)))
    dr_slack_step(XA, D, XA.copy(), 1.0, 1.6, np.empty((4, 4)), np.empty(4))
    dr_group_step(XA[:3], XA[:3].copy(), XA[:3].copy(), 1.6, np.empty((3, 4)))
    momentum_point(np.ones(4), np.zeros(4), np.empty(4), 0.5)
    half_sq_dist(np.ones(4), np.zeros(4))
    group_prox_dual_update(rng.standard_normal((3, 4)), np.zeros((3, 4)), np.zeros((3, 4)), 0.1, 1.0, 1.0)
    relu_features(X, rng.standard_normal((3, 2)))
    soft_threshold(np.ones(3), 0.5, np.empty(3))
    w = np.array([0.5, 1.0])
    robust_cone_project(XA, np.ones((4, 2)), w, np.empty((4, 4)), np.empty((4, 2)))
    for logistic in (False, True):
        robust_loss_prox(np.zeros(4), np.ones((4, 2)), w, np.ones(4), logistic, 1.0, np.empty(4), np.empty((4, 2)))
    # the float32 iteration of the nominal ADMM (the estimators' default) has its own specialisations:
    # a tiny solve per loss compiles exactly the signatures it uses
    import warnings

    from ._admm import minimize_admm
    from ._problem import TwoLayerReLU
    Xs = rng.standard_normal((12, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loss, ys in (("squared", np.sign(Xs[:, 0])), ("logistic", (Xs[:, 0] > 0).astype(np.float64))):
            pr = TwoLayerReLU(Xs, ys, 0.1, n_patterns=3, loss=loss, random_state=0)
            minimize_admm(pr, dtype=np.float32, rtol=1e-3, maxiter=25)


@njit(cache=True, nogil=True)
def symmetrize_lower(A, block=64):
    """Copy the lower triangle of the square ``A`` onto its upper triangle, in place; returns ``A``.

    LAPACK's ``potri`` leaves the inverse in one triangle only. Tiles of ``block x block`` keep the
    transposed reads in cache (``np.tril(A) + np.tril(A, -1).T`` makes three ``n x n`` passes and two
    temporaries).
    """
    n = A.shape[0]
    for ib in range(0, n, block):
        ie = min(n, ib + block)
        for jb in range(0, ie, block):
            je = min(n, jb + block)
            for i in range(ib, ie):
                for j in range(jb, min(je, i)):
                    A[j, i] = A[i, j]
    return A
