"""Numba kernels of the convex ReLU solvers: the pattern-masked, elementwise passes.

The dense products ``X @ [U Z]`` and ``X.T @ [...]`` go to BLAS; these kernels fuse everything done
elementwise on the ``n x 2P`` arrays around them (mask with ``D_i``/``E_i``, project, update duals,
accumulate residual norms) into one serial pass (threads do not pay at these sizes and fight BLAS
threads on small machines). Inputs are trusted (checked upstream).
"""
from __future__ import annotations

import numpy as np
from numba import njit


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


@njit(cache=True, nogil=True)
def masked_rowsum_single(XA, Dmat):
    """``out_k = sum_i Dmat[k, i] XA[k, i]`` (``M a`` given ``X A`` for ``A`` of shape ``d x P``)."""
    n, P = Dmat.shape
    out = np.empty(n)
    for k in range(n):
        acc = 0.0
        for i in range(P):
            acc += Dmat[k, i] * XA[k, i]
        out[k] = acc
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


@njit(cache=True, nogil=True)
def group_shrink(Q, thr, V):
    """``V[:, g] = (1 - thr / ||Q[:, g]||)_+ Q[:, g]`` per column (the group soft-threshold); returns ``V``."""
    d, m = Q.shape
    for g in range(m):
        nz = 0.0
        for a in range(d):
            nz += Q[a, g] * Q[a, g]
        nz = np.sqrt(nz)
        scale = 1.0 - thr / nz if nz > thr else 0.0
        for a in range(d):
            V[a, g] = scale * Q[a, g]
    return V


@njit(cache=True, nogil=True)
def cone_abs(Qs, Dmat, scale, out):
    """``out = scale * e o |Qs|`` (``e = 2 d - 1`` tiled over both families), so that ``X.T @ out = G^T (s - nu)``.

    In the Douglas-Rachford form of the ADMM the slack and its scaled dual are ``s = (q)_+`` and
    ``nu = -(q)_-`` of one state ``q``, hence ``s - nu = |q|``.
    """
    n, P = Dmat.shape
    for k in range(n):
        for i in range(P):
            e = scale * (2.0 * Dmat[k, i] - 1.0)
            out[k, i] = e * abs(Qs[k, i])
            out[k, P + i] = e * abs(Qs[k, P + i])
    return out


@njit(cache=True, nogil=True)
def dr_slack_step(XU, Dmat, Qs, scale, alpha, out, yhat):
    """Slack half of one Douglas-Rachford (relaxed ADMM) step, fused with the model output.

    For every entry (``e = 2 d - 1``): ``g = scale * e * XU`` (``= G u``), ``s = (Qs)_+``,
    ``out = Qs + alpha (g - s)``. ``out`` may be ``Qs`` (in place). Also ``yhat = F u``, i.e.
    ``yhat_k = sum_i d_ki (XU[k, i] - XU[k, P + i])``. Returns ``(||G u - s||^2, ||G u||^2, ||s||^2)``.
    """
    n, P = Dmat.shape
    r2 = 0.0
    g2 = 0.0
    s2 = 0.0
    for k in range(n):
        acc = 0.0
        for i in range(P):
            dk = Dmat[k, i]
            e = scale * (2.0 * dk - 1.0)
            xa = XU[k, i]
            xb = XU[k, P + i]
            acc += dk * (xa - xb)
            ga = e * xa
            gb = e * xb
            qa = Qs[k, i]
            qb = Qs[k, P + i]
            sa = max(qa, 0.0)
            sb = max(qb, 0.0)
            out[k, i] = qa + alpha * (ga - sa)
            out[k, P + i] = qb + alpha * (gb - sb)
            r2 += (ga - sa) * (ga - sa) + (gb - sb) * (gb - sb)
            g2 += ga * ga + gb * gb
            s2 += sa * sa + sb * sb
        yhat[k] = acc
    return r2, g2, s2


@njit(cache=True, nogil=True)
def dr_group_step(U, Qv, V, alpha, out):
    """Variable half of one Douglas-Rachford step: ``out = Qv + alpha (U - V)`` (``V`` the shrunk ``Qv``).

    ``out`` may be ``Qv``. Returns ``(||U - V||^2, ||U||^2, ||V||^2, ||Qv - V||^2, sum_g ||U_g||)``
    (``Qv - V`` is the scaled dual ``lam``; the last sum is the penalty at ``u``).
    """
    d, m = U.shape
    r2 = 0.0
    u2 = 0.0
    v2 = 0.0
    l2 = 0.0
    unorm = 0.0
    for g in range(m):
        ug = 0.0
        for a in range(d):
            u = U[a, g]
            v = V[a, g]
            q = Qv[a, g]
            out[a, g] = q + alpha * (u - v)
            r2 += (u - v) * (u - v)
            ug += u * u
            v2 += v * v
            l2 += (q - v) * (q - v)
        u2 += ug
        unorm += np.sqrt(ug)
    return r2, u2, v2, l2, unorm


@njit(cache=True, nogil=True)
def extrapolate(Tz, Tz_prev, out, theta):
    """Momentum step ``out = Tz + theta (Tz - Tz_prev)``, then ``Tz_prev = Tz`` (one pass, in place).

    ``theta == 0`` does not read ``Tz_prev`` (it may hold garbage at a restart).
    """
    if theta == 0.0:
        for i in range(Tz.shape[0]):
            out[i] = Tz[i]
            Tz_prev[i] = Tz[i]
        return out
    for i in range(Tz.shape[0]):
        t = Tz[i]
        out[i] = t + theta * (t - Tz_prev[i])
        Tz_prev[i] = t
    return out


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


def warmup():
    """Compile (or load from cache) every kernel on tiny inputs."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 3))
    D = (rng.standard_normal((4, 2)) > 0).astype(np.float64)
    XA = rng.standard_normal((4, 4))
    masked_rowsum(XA, D)
    masked_rowsum_single(XA[:, :2], D)
    masked_outer(D, np.ones(4), np.empty((4, 4)))
    slack_dual_update(XA, D, np.zeros((4, 4)), np.zeros((4, 4)), 1.0, 1.0, 1.0)
    group_shrink(rng.standard_normal((3, 4)), 0.5, np.empty((3, 4)))
    cone_abs(XA, D, 1.0, np.empty((4, 4)))
    dr_slack_step(XA, D, XA.copy(), 1.0, 1.6, np.empty((4, 4)), np.empty(4))
    dr_group_step(XA[:3], XA[:3].copy(), XA[:3].copy(), 1.6, np.empty((3, 4)))
    extrapolate(np.ones(4), np.zeros(4), np.empty(4), 0.5)
    group_prox_dual_update(rng.standard_normal((3, 4)), np.zeros((3, 4)), np.zeros((3, 4)), 0.1, 1.0, 1.0)
    relu_features(X, rng.standard_normal((3, 2)))
    soft_threshold(np.ones(3), 0.5, np.empty(3))
