"""Compiled kernels vs NumPy references (and the stacked operators F, G built densely)."""
import numpy as np
import pytest

from numopt.relu import _kernels as K
from numopt.relu._linsolve import USolver
from numopt.problems import TwoLayerReLU

from ._data import make_data


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    n, d, P = 7, 3, 4
    X = rng.standard_normal((n, d))
    D = (rng.standard_normal((n, P)) > 0).astype(float)
    UZ = rng.standard_normal((d, 2 * P))
    return X, D, UZ, rng


def dense_F_G(X, D):
    n, d = X.shape
    P = D.shape[1]
    M = np.hstack([D[:, [i]] * X for i in range(P)])
    F = np.hstack([M, -M])
    E = 2 * D - 1
    blocks = [E[:, [i]] * X for i in range(P)] * 2
    G = np.zeros((2 * n * P, 2 * d * P))
    for b, B in enumerate(blocks):
        G[b * n:(b + 1) * n, b * d:(b + 1) * d] = B
    return F, G


def test_masked_rowsum_is_F(tiny):
    X, D, UZ, _ = tiny
    F, _ = dense_F_G(X, D)
    out = K.masked_rowsum(np.ascontiguousarray(X @ UZ), D)
    assert np.allclose(out, F @ UZ.T.ravel(), atol=1e-13)


def test_masked_rowsum_single_is_M(tiny):
    X, D, UZ, _ = tiny
    F, _ = dense_F_G(X, D)
    A = UZ[:, :4]
    out = K.masked_rowsum_single(np.ascontiguousarray(X @ A), D)
    assert np.allclose(out, F[:, :12] @ A.T.ravel(), atol=1e-13)


def test_masked_outer_is_Ft(tiny):
    X, D, _, rng = tiny
    F, _ = dense_F_G(X, D)
    r = rng.standard_normal(7)
    T = K.masked_outer(D, r, np.empty((7, 8)))
    assert np.allclose((X.T @ T).T.ravel(), F.T @ r, atol=1e-13)


def test_slack_dual_update(tiny):
    X, D, UZ, rng = tiny
    _, G = dense_F_G(X, D)
    XA = np.ascontiguousarray(X @ UZ)
    Nu = rng.standard_normal((7, 8))
    Nu0 = Nu.copy()
    Eb = np.tile(2 * D - 1, 2)
    s_old = np.abs(rng.standard_normal((7, 8)))
    ES = Eb * s_old
    c, gam, alpha = 0.7, 0.9, 1.5
    r2, g2, s2, nu2 = K.slack_dual_update(XA, D, Nu, ES, gam, c, alpha)
    g = c * Eb * XA
    gh = alpha * g + (1 - alpha) * s_old
    s = np.maximum(gh + Nu0, 0)
    assert np.allclose(Nu, Nu0 + gam * (gh - s))
    assert np.allclose(ES, Eb * s)
    assert np.isclose(r2, np.sum((g - s) ** 2)) and np.isclose(g2, np.sum(g * g)) and np.isclose(s2, np.sum(s * s))
    # G u in the dense block layout (block b = column b of [U Z]) equals E o X [U Z] / c
    Gu = (G @ UZ.T.ravel()).reshape(8, 7).T
    assert np.allclose(c * Gu, g)


def test_group_prox_dual_update(tiny):
    _, _, UZ, rng = tiny
    Lam = rng.standard_normal(UZ.shape)
    V = rng.standard_normal(UZ.shape)
    U0, L0, V0 = UZ.copy(), Lam.copy(), V.copy()
    thr, alpha = 1.3, 1.7
    r2, dv2, u2, v2, l2, vn = K.group_prox_dual_update(UZ, Lam, V, thr, 1.0, alpha)
    Uh = alpha * U0 + (1 - alpha) * V0
    Z = Uh + L0
    nz = np.linalg.norm(Z, axis=0)
    Vr = np.maximum(0, 1 - thr / nz) * Z
    assert np.allclose(V, Vr) and np.allclose(Lam, L0 + Uh - Vr)
    assert np.isclose(r2, np.sum((U0 - Vr) ** 2)) and np.isclose(dv2, np.sum((Vr - V0) ** 2))
    assert np.isclose(vn, np.linalg.norm(Vr, axis=0).sum())



def test_group_shrink(tiny):
    _, _, UZ, _ = tiny
    Q = UZ.copy()
    Q[:, 0] *= 1e-3                                     # one group below the threshold
    V = K.group_shrink(Q, np.full(Q.shape[1], 0.8), np.empty_like(Q))
    nz = np.linalg.norm(Q, axis=0)
    assert np.allclose(V, np.maximum(0, 1 - 0.8 / nz) * Q, atol=1e-15)
    assert np.all(V[:, 0] == 0)
    # per-group thresholds; inf fixes a group at zero (the projection onto {0})
    thr = np.linspace(0.1, 0.9, Q.shape[1])
    thr[2] = np.inf
    V = K.group_shrink(Q, thr, np.empty_like(Q))
    assert np.allclose(V, np.maximum(0, 1 - thr / nz) * Q, atol=1e-15)
    assert np.all(V[:, 2] == 0) and np.all(V[:, 0] == 0) and np.all(np.isfinite(V))


def test_cone_abs_is_Gt_of_s_minus_nu(tiny):
    """X.T @ cone_abs(q) = G^T (s - nu) with s = (q)_+ and nu = (q)_- (the DR split of one state)."""
    X, D, _, rng = tiny
    _, G = dense_F_G(X, D)
    Qs = rng.standard_normal((7, 8))
    c = 0.6
    out = K.cone_abs(Qs, D, c, np.empty((7, 8)))
    assert np.allclose(out, c * np.tile(2 * D - 1, 2) * np.abs(Qs))
    s, nu = np.maximum(Qs, 0), np.minimum(Qs, 0)
    ref = c * (G.T @ (s - nu).T.ravel())               # dense block layout: block b = column b
    assert np.allclose((X.T @ out).T.ravel(), ref)


def test_dr_slack_step(tiny):
    X, D, UZ, rng = tiny
    F, _ = dense_F_G(X, D)
    XU = np.ascontiguousarray(X @ UZ)
    Qs = rng.standard_normal((7, 8))
    c, alpha = 0.7, 1.6
    out, yhat = np.empty((7, 8)), np.empty(7)
    r2, g2, s2 = K.dr_slack_step(XU, D, Qs, c, alpha, out, yhat)
    g = c * np.tile(2 * D - 1, 2) * XU
    s = np.maximum(Qs, 0)
    assert np.allclose(out, Qs + alpha * (g - s))
    assert np.allclose(yhat, F @ UZ.T.ravel())
    assert np.isclose(r2, np.sum((g - s) ** 2)) and np.isclose(g2, np.sum(g * g)) and np.isclose(s2, np.sum(s * s))
    Q2 = Qs.copy()                                      # in place gives the same
    K.dr_slack_step(XU, D, Q2, c, alpha, Q2, yhat)
    assert np.array_equal(Q2, out)


def test_dr_group_step(tiny):
    _, _, UZ, rng = tiny
    Qv = rng.standard_normal(UZ.shape)
    V = K.group_shrink(Qv, np.full(Qv.shape[1], 0.9), np.empty_like(Qv))
    out = np.empty_like(Qv)
    r2, u2, v2, l2, un = K.dr_group_step(UZ, Qv, V, 1.6, out)
    assert np.allclose(out, Qv + 1.6 * (UZ - V))
    assert np.isclose(r2, np.sum((UZ - V) ** 2)) and np.isclose(u2, np.sum(UZ ** 2))
    assert np.isclose(v2, np.sum(V ** 2)) and np.isclose(l2, np.sum((Qv - V) ** 2))
    assert np.isclose(un, np.linalg.norm(UZ, axis=0).sum())


def test_relu_features_and_soft_threshold(tiny):
    X, _, UZ, rng = tiny
    assert np.allclose(K.relu_features(X, UZ), np.maximum(X @ UZ, 0))
    z = rng.standard_normal(9)
    assert np.allclose(K.soft_threshold(z, 0.4, np.empty(9)), np.sign(z) * np.maximum(np.abs(z) - 0.4, 0))


@pytest.mark.parametrize("c", [1.0, 0.3])
def test_u_solver_paths_agree_with_dense_A(c):
    """Decoupled Cholesky and Woodbury give the solution of the full A = I + G^T G + F^T F / rho."""
    X, y = make_data(12, 2, seed=0)
    pr = TwoLayerReLU(X, y, 1.0, n_patterns=5, random_state=0)
    F, G = dense_F_G(pr.X, pr.Dmat)
    rho = 0.7
    A = np.eye(F.shape[1]) + c * c * G.T @ G + F.T @ F / rho
    B = np.random.default_rng(1).standard_normal((pr.dim, 2 * pr.n_patterns_))
    ref = np.linalg.solve(A, B.T.ravel()).reshape(-1, pr.dim).T
    for path in ("cholesky", "woodbury"):
        s = USolver(pr, rho, path, c)
        u = s.solve(B)
        assert np.allclose(u, ref, rtol=1e-10, atol=1e-12), path
        assert np.allclose(s.apply_A(u), B, atol=1e-10)


def test_path_choice_follows_flop_model():
    from numopt.relu._linsolve import choose_path, path_flops
    # breast_cancer sizes: P = 8 favours the dP x dP Cholesky, P = 32 the n x n Woodbury form
    assert choose_path(569, 31, 8) == "cholesky" and choose_path(569, 31, 32) == "woodbury"
    f = path_flops(569, 31, 32, iterations=0)
    assert f["woodbury"] < f["cholesky"]                # the n x n factor is far cheaper to build
    assert choose_path(30, 5, 40) == "woodbury" and choose_path(1000, 10, 5) == "cholesky"


def test_show_options_lists_documented_options():
    import numopt
    text = numopt.show_options("admm", disp=False)
    for opt in ("rho", "relaxation", "linear_solver", "adaptive_rho", "anderson", "Options"):
        assert opt in text
    assert "n_neurons" in numopt.show_options("scp", disp=False)


@pytest.mark.parametrize("n", [1, 9, 130, 300])
def test_spd_inverse(n):
    """potrf/potri + the tiled symmetrisation equal NumPy's general inverse (block edges: 130, 300)."""
    from numopt.relu._linsolve import spd_inverse
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, n))
    A = A @ A.T + 0.1 * np.eye(n)
    Ai = spd_inverse(A)
    assert Ai.flags.c_contiguous and np.array_equal(Ai, Ai.T)
    ref = np.linalg.inv(A)
    assert np.max(np.abs(Ai - ref)) <= 1e-9 * np.max(np.abs(ref))
    assert np.allclose(Ai @ A, np.eye(n), atol=1e-8)
    with pytest.raises(np.linalg.LinAlgError):
        spd_inverse(-np.eye(3))
    B = A.copy()
    B[n // 2, n // 2] = -1e6                                   # indefinite in the middle of the factorisation
    with pytest.raises(np.linalg.LinAlgError):
        spd_inverse(B)


@pytest.mark.parametrize("n", [1, 5, 64, 65, 200])
def test_symmetrize_lower_matches_numpy(n):
    from numopt.relu._kernels import symmetrize_lower
    A = np.random.default_rng(n).standard_normal((n, n))
    ref = np.tril(A) + np.tril(A, -1).T
    out = symmetrize_lower(A.copy())
    assert np.array_equal(out, ref)
    assert np.array_equal(symmetrize_lower(A.copy(), 7), ref)           # ragged tiles


def test_fused_admm_kernels_match_numpy(tiny):
    """The fused per-iteration kernels of the one-state ADMM against their NumPy definitions."""
    X, D, UZ, rng = tiny
    d, m = UZ.shape
    P = m // 2
    Qv, GA, B0 = (rng.standard_normal((d, m)) for _ in range(3))
    Qv[:, 1] *= 1e-3                                    # one group below the threshold
    V, rhs = np.empty((d, m)), np.empty((d, m))
    K.shrink_rhs(Qv, GA, B0, np.full(m, 0.7), V, rhs)
    Vr = np.maximum(0, 1 - 0.7 / np.linalg.norm(Qv, axis=0)) * Qv
    assert np.allclose(V, Vr, rtol=1e-13, atol=1e-15) and np.allclose(rhs, 2 * Vr - Qv + GA + B0, rtol=1e-13)
    GQ, GGU = rng.standard_normal((d, m)), rng.standard_normal((d, m))
    out, GS = np.empty((d, m)), np.empty((d, m))
    lg2 = K.dr_dual_step(GQ, GA, GGU, Qv, V, 1.6, out, GS)
    assert np.allclose(GS, (GQ + GA) / 2, rtol=1e-13) and np.allclose(out, GQ + 1.6 * (GGU - GS), rtol=1e-13)
    assert np.isclose(lg2, np.sum((Qv - V + GQ - GS) ** 2), rtol=1e-12)
    A0, B1 = rng.standard_normal((d, m)), rng.standard_normal((d, m))
    assert np.isclose(K.diff_norm(Qv, A0, GA, B1), np.linalg.norm((Qv - A0) + (GA - B1)), rtol=1e-12)
    assert np.allclose(K.split_diff(UZ, np.empty((d, P))), UZ[:, :P] - UZ[:, P:], rtol=1e-14)
    W = rng.standard_normal((d, P))
    comb = K.split_combine(UZ, W, np.empty((d, m)))
    assert np.allclose(comb, np.hstack([UZ[:, :P] - W / 2, UZ[:, P:] + W / 2]), rtol=1e-14)
    q = rng.standard_normal(7)
    assert np.allclose(K.masked_scale(D, q, np.empty((7, P))), D * q[:, None], rtol=1e-14)
    XA = np.ascontiguousarray(X @ UZ[:, :P])
    t = np.empty(7)
    assert K.masked_rowsum_single(XA, D, t) is t and np.allclose(t, np.sum(D * XA, axis=1), rtol=1e-13)
    a, b = rng.standard_normal(9), rng.standard_normal(9)
    assert np.isclose(K.half_sq_dist(a, b), 0.5 * np.sum((a - b) ** 2), rtol=1e-13)


def test_woodbury_solve_writes_into_out_and_reuses_buffers():
    """Repeated solves with preallocated scratch agree with a fresh dense solve (no stale scratch state)."""
    X, y = make_data(20, 3, seed=4)
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=12, random_state=0)
    rng = np.random.default_rng(1)
    for path in ("woodbury", "cholesky"):
        s = USolver(pr, 0.8, path)
        out = np.empty((pr.dim, 2 * pr.n_patterns_))
        for _ in range(3):
            B = rng.standard_normal(out.shape)
            U = s.solve(B, out=out)
            assert U is out and np.allclose(s.apply_A(U), B, rtol=1e-9, atol=1e-10)


def test_anderson_kernels_match_numpy():
    rng = np.random.default_rng(3)
    T, z, gp, Tp = rng.standard_normal(9), rng.standard_normal(9), rng.standard_normal(6), rng.standard_normal(9)
    g0, T0 = gp.copy(), Tp.copy()
    dg, dT = np.empty(6), np.empty(9)
    acc = K.aa_push(T, z, 6, gp, Tp, dg, dT, False)
    g = T[:6] - z[:6]
    assert np.allclose(dg, g - g0, rtol=1e-14) and np.allclose(dT, T - T0, rtol=1e-14)
    assert np.allclose(gp, g) and np.array_equal(Tp, T) and np.isclose(acc, (g - g0) @ g, rtol=1e-13)
    assert K.aa_push(T, z, 6, gp, Tp, dg, dT, True) == 0.0 and np.allclose(gp, g)
    assert np.isclose(K.diff_norm2(T, z, 6), np.sum((T[:6] - z[:6]) ** 2), rtol=1e-13)
    D3, coef = rng.standard_normal((3, 9)), rng.standard_normal(3)
    assert np.allclose(K.aa_combine(T, D3, coef, np.empty(9)), T - coef @ D3, rtol=1e-13)


def test_u_solver_float32_agrees_with_float64():
    """Single-precision copies of the factors: the solve matches float64 to float32 rounding, both paths."""
    X, y = make_data(40, 3, seed=6)
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=10, random_state=0)
    B = np.random.default_rng(2).standard_normal((pr.dim, 2 * pr.n_patterns_))
    for path in ("cholesky", "woodbury"):
        ref = USolver(pr, 0.8, path).solve(B)
        s = USolver(pr, 0.8, path, 1.0, np.float32)
        u = s.solve(B.astype(np.float32))
        assert u.dtype == np.float32 and s.fac.dtype == np.float32
        assert np.max(np.abs(u - ref)) <= 1e-5 * np.max(np.abs(ref)), path


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_admm_kernels_take_float32_like_float64(tiny, dt):
    """The fused kernels on float32 inputs agree with their float64 results (accumulation in float64)."""
    X, D, UZ, rng = tiny
    XA = np.ascontiguousarray(X @ UZ)
    Qs = rng.standard_normal(XA.shape)
    ref_out, ref_y = np.empty_like(XA), np.empty(XA.shape[0])
    ref = K.dr_slack_step(XA, D, Qs, 0.7, 1.6, ref_out, ref_y)
    out, yhat = np.empty(XA.shape, dt), np.empty(XA.shape[0])
    got = K.dr_slack_step(XA.astype(dt), D.astype(dt), Qs.astype(dt), 0.7, 1.6, out, yhat)
    tol = 1e-6 if dt == np.float32 else 1e-14
    assert np.allclose(got, ref, rtol=tol) and np.allclose(out, ref_out, rtol=tol, atol=tol)
    assert np.allclose(yhat, ref_y, rtol=tol, atol=tol)
    A = np.ascontiguousarray(UZ[:, :4])
    r = K.masked_rowsum_single(np.ascontiguousarray((X @ A).astype(dt)), D.astype(dt))
    assert r.dtype == dt and np.allclose(r, K.masked_rowsum_single(np.ascontiguousarray(X @ A), D), rtol=tol, atol=tol)


def test_spd_inverse_float32_and_the_single_precision_woodbury_factor():
    """float32 input is inverted by spotrf/spotri; the Woodbury S is factored in float32 only when its
    condition bound 1 + 2P / (rho c^2) is small, and the u-solve then still matches float64 to ~1e-5."""
    from numopt.relu._linsolve import F32_FACTOR_COND, spd_inverse
    rng = np.random.default_rng(4)
    B = rng.standard_normal((60, 60))
    A = B @ B.T + 60 * np.eye(60)
    inv32 = spd_inverse(A.astype(np.float32))
    assert inv32.dtype == np.float32 and np.allclose(inv32, inv32.T)
    assert np.max(np.abs(inv32 - np.linalg.inv(A))) <= 1e-5 * np.max(np.abs(np.linalg.inv(A)))
    X, y = make_data(30, 3, seed=7)
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=40, random_state=0)           # dP >> n: Woodbury
    P = pr.n_patterns_
    Bu = rng.standard_normal((pr.dim, 2 * P))
    for rho, single in ((1.0, True), (2.0 * P / F32_FACTOR_COND, False)):
        s = USolver(pr, rho, "woodbury", 1.0, np.float32)
        assert (("woodbury", rho, 1.0, "float32-factor") in pr._cache) == single
        ref = USolver(pr, rho, "woodbury").solve(Bu)
        assert np.max(np.abs(s.solve(Bu.astype(np.float32)) - ref)) <= 2e-5 * np.max(np.abs(ref))
        if single:                  # the float32 inverse is the cached factor itself, not a second copy
            assert s.fac is pr._cache[("woodbury", rho, 1.0, "float32-factor")]
    # the rho-independent single-precision copies (X, patterns, C^-1) are shared by every rho
    a, b = USolver(pr, 1.0, "woodbury", 1.0, np.float32), USolver(pr, 3.0, "woodbury", 1.0, np.float32)
    assert a.X is b.X and a.D is b.D and a.Cinv is b.Cinv and a.X.dtype == np.float32
