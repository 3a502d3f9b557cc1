"""The fused CG sweeps, the dense O((m+n)k^2) helpers and the measured "auto" choice, against NumPy."""
import warnings

import numpy as np
import pytest

import numopt
from numopt.completion import _kernels as K
from numopt.completion import _rowsolve as RS
from numopt.completion._altmin import _chol_qr, _syrk, _times_rt
from numopt.problems import MatrixCompletion

from .conftest import low_rank


@pytest.mark.parametrize("nn,k", [(0, 3), (1, 5), (7, 8), (13, 17), (40, 64)])
@pytest.mark.parametrize("want_q", [True, False])
def test_normal_sweep_matches_numpy(nn, k, want_q):
    """One sweep gives y = A p, q = A^T y + sigma p and p^T (A^T A + sigma I) p."""
    rng = np.random.default_rng(nn * 100 + k)
    A = rng.standard_normal((nn + 3, k))          # workspace larger than the row (as in the kernel)
    p = rng.standard_normal(k)
    q = np.full(k, np.nan)
    y = np.full(nn + 3, np.nan)
    sigma = 0.37
    pq = K._normal_sweep(A, nn, k, sigma, p, q, y, want_q)
    An = A[:nn]
    np.testing.assert_allclose(y[:nn], An @ p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pq, p @ (An.T @ (An @ p)) + sigma * p @ p, rtol=1e-12)
    if want_q:
        np.testing.assert_allclose(q, An.T @ (An @ p) + sigma * p, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nn,k", [(1, 3), (9, 8), (30, 19)])
def test_gather_and_residual_match_numpy(nn, k):
    rng = np.random.default_rng(k)
    F = rng.standard_normal((50, k))
    idx = rng.choice(50, size=nn, replace=False).astype(np.int64)
    vals = rng.standard_normal(nn)
    indptr = np.array([0, nn], dtype=np.int64)
    A = np.empty((nn, k))
    b = np.empty(nn + k)
    assert K._gather(indptr, idx, F, vals, 0, k, A, b) == nn
    np.testing.assert_array_equal(A, F[idx])
    np.testing.assert_array_equal(b[:nn], vals)
    x = rng.standard_normal(k)
    sres, r = np.empty(nn), np.empty(k)
    fres = K._residual(A, b, nn, k, 0.2, x, sres, r)
    np.testing.assert_allclose(sres, vals - F[idx] @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r, F[idx].T @ (vals - F[idx] @ x) - 0.2 * x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fres, np.sum((vals - F[idx] @ x) ** 2), rtol=1e-12)


def test_cg_tolerance_is_relative_to_the_starting_residual():
    """inner_tol is a forcing term: a warm start close to the solution needs as many steps as a cold
    start needs for the same *relative* reduction (and the last step skips A^T(Ap))."""
    rng = np.random.default_rng(0)
    F = rng.standard_normal((200, 6))
    ip = np.array([0, 120])
    ix = rng.choice(200, 120, replace=False)
    vals = rng.standard_normal(120)
    x_star = np.linalg.lstsq(F[ix], vals, rcond=None)[0]
    cold = RS.solve_rows(ip, ix, vals, F, solver="cg", cg_steps=50, inner_tol=1e-3)
    warm = RS.solve_rows(ip, ix, vals, F, solver="cg", cg_steps=50, inner_tol=1e-3,
                         warm=(x_star + 1e-6 * rng.standard_normal(6))[None])
    assert 1 <= cold.inner_steps[0] <= 6 and 1 <= warm.inner_steps[0] <= 6
    # the warm solve ends 1e-3 x closer than its (1e-6-close) start, so far closer than the cold one
    assert np.linalg.norm(warm.rows[0] - x_star) < 1e-7 < np.linalg.norm(cold.rows[0] - x_star)


def test_dense_helpers_match_numpy():
    rng = np.random.default_rng(1)
    F = rng.standard_normal((300, 7))
    np.testing.assert_allclose(_syrk(F), F.T @ F, rtol=1e-12, atol=1e-10)
    Q, R, w = _chol_qr(F)
    np.testing.assert_allclose(Q @ R, F, atol=1e-12)
    np.testing.assert_allclose(Q.T @ Q, np.eye(7), atol=1e-12)
    assert np.allclose(R, np.triu(R)) and w == 300 * 7 * 8 // 2 * 2 + 7 ** 3 // 6
    C = rng.standard_normal((40, 7))
    np.testing.assert_allclose(_times_rt(C, R), C @ R.T, rtol=1e-12, atol=1e-12)


def test_chol_qr_falls_back_to_householder_when_ill_conditioned():
    rng = np.random.default_rng(2)
    F = rng.standard_normal((200, 5)) * np.array([1.0, 1.0, 1.0, 1.0, 1e-9])
    Q, R, w = _chol_qr(F)
    np.testing.assert_allclose(Q.T @ Q, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(Q @ R, F, atol=1e-12)
    assert w >= 2 * 200 * 25                        # the Householder cost is the one counted


def test_passes_count_all_work():
    """passes = row-solve FMAs + the dense O((m+n)k^2) FMAs (QRs, warm-start maps, Grams), / (|Omega| k)."""
    Us, Vs, r, c, vals = low_rank(150, 120, 4, 0.3, seed=3)
    P = MatrixCompletion(r, c, vals + 0.01, (150, 120), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = numopt.minimize(P, method="altmin", options=dict(solver="cg", maxiter=4, tol=0, xtol=0, atol=0,
                                                               random_state=0))
    h = res.history
    np.testing.assert_allclose(h["passes"], h["row_passes"] + h["dense_passes"])
    m, n, k, nnz = 150, 120, 4, r.size
    # from the 2nd iteration: Cholesky QR of U (Gram reused) and of V, two warm-start maps, two Grams,
    # two cross products -- about 2.75 (m + n) k^2 FMAs, far below Householder QR + six gemms (~7)
    assert 2.0 < h["dense_passes"][-1] * nnz * k / ((m + n) * k * k) < 3.5
    assert np.allclose(h["row_passes"][1:], 2 * (2 * 3 + 1))     # cg_steps = 3: (2 s + 1) passes per half-step


def test_model_cost_and_candidate_filter():
    ip = np.arange(0, 200 * 50 + 1, 200)           # 50 rows of 200 entries
    mc = RS.model_cost(ip, 64)
    assert mc["cg"] < mc["cholesky"] < mc["sketch-cg"]
    assert mc["cholesky"] > 4 * mc["cg"]             # at k = 64 exact ALS is not even timed
    rng = np.random.default_rng(0)
    F = rng.standard_normal((400, 32))
    ix = rng.integers(0, 400, ip[-1])
    vals = rng.standard_normal(ip[-1])
    name, secs = RS.choose_solver(ip, ix, vals, F, cache=False, reg=0.1)
    assert name in ("cholesky", "cg") and "sketch-cg" not in secs    # hopeless by the model: not timed
    assert set(secs) == {"cholesky", "cg"} and name == min(secs, key=secs.get)


def test_choose_solver_caches_its_decision():
    RS._AUTO_CACHE.clear()
    ip = np.arange(0, 30 * 40 + 1, 30)
    rng = np.random.default_rng(1)
    F = rng.standard_normal((100, 12))
    ix, vals = rng.integers(0, 100, ip[-1]), rng.standard_normal(ip[-1])
    a, sa = RS.choose_solver(ip, ix, vals, F)
    b, sb = RS.choose_solver(ip, ix, vals, F)
    assert a == b and "cached" not in sa and sb.get("cached") is True


def test_auto_runs_the_measured_choice(monkeypatch):
    """altmin's auto times the candidates on a sample once per side and then uses the winner everywhere."""
    from numopt.completion import _altmin

    calls = []
    real = _altmin.choose_solver

    def spy(*a, **kw):
        out = real(*a, **kw)
        calls.append(out[0])
        return out

    monkeypatch.setattr(_altmin, "choose_solver", spy)
    Us, Vs, r, c, vals = low_rank(200, 150, 12, 0.4, seed=4)
    P = MatrixCompletion(r, c, vals, (200, 150), 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = numopt.minimize(P, method="altmin", options=dict(solver="auto", maxiter=3, random_state=0))
    assert len(calls) == 2                                  # once for the columns, once for the rows
    assert [res.auto_choice[s]["solver"] for s in ("cols", "rows")] == calls
    assert set(res.solver_counts) <= set(calls) | {"qr"}
