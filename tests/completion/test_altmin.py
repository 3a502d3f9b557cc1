"""altmin against oracles: exact recovery, closed forms, solver agreement, invariances, semantics."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numopt
from numopt.completion import gram_distance
from numopt.completion._altmin import clip_rows, sparse_top_svd
from numopt.exceptions import ConvergenceWarning
from numopt.problems import MatrixCompletion

from .conftest import low_rank


def rel_dist(U1, V1, U2, V2):
    d2, x2 = gram_distance(U1, V1, U2, V2)
    return np.sqrt(d2 / x2)


def run(P, **opts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return numopt.minimize(P, method="altmin", options=opts)


@pytest.mark.parametrize("solver", ["cholesky", "cg", "sketch-cg", "auto"])
def test_exact_recovery_ci_oracle(solver):
    """Noise-free 300 x 200, k = 3, p = 0.3: relative error < 1e-8, decreasing geometrically."""
    Us, Vs, r, c, vals = low_rank(300, 200, 3, 0.3, seed=1)
    P = MatrixCompletion(r, c, vals, (300, 200), 3, truth=(Us, Vs))
    res = run(P, solver=solver, random_state=0, sketch_size=20, xtol=0.0, atol=1e-12, inner_tol=1e-14, maxiter=60)
    err = res.history["rel_error"]
    assert res.success, res.message
    assert err[-1] < 1e-8
    assert rel_dist(res.U, res.V, Us, Vs) < 1e-8
    # geometric decrease: every 3 iterations the error drops by at least 10x until the floor
    above = err[err > 1e-11]
    assert np.all(above[3:] < 0.1 * above[:-3])


def test_exact_recovery_1000_square():
    """m = n = 1000, k = 5, |Omega| = 4 n k log n (the issue's size)."""
    n, k = 1000, 5
    p = 4 * n * k * np.log(n) / n**2
    Us, Vs, r, c, vals = low_rank(n, n, k, p, seed=2)
    P = MatrixCompletion(r, c, vals, (n, n), k, truth=(Us, Vs))
    res = run(P, solver="auto", random_state=0, xtol=0.0, maxiter=80)
    assert res.success
    assert res.history["rel_error"][-1] < 1e-8
    assert res.n_cold_rows == 0 and res.n_rank_deficient == 0


@pytest.mark.parametrize("solver,extra", [("cg", dict(cg_steps=200)), ("sketch-cg", dict(sketch_size=12))])
@pytest.mark.parametrize("reg", [0.0, 0.5])
@pytest.mark.filterwarnings("ignore::numopt.exceptions.ConvergenceWarning")
def test_iterative_solvers_match_cholesky_as_inner_tol_vanishes(solver, extra, reg):
    Us, Vs, r, c, vals = low_rank(120, 90, 3, 0.4, seed=3)
    vals = vals + 0.1 * np.random.default_rng(0).standard_normal(vals.size)   # not exactly low rank
    P = MatrixCompletion(r, c, vals, (120, 90), 3, reg=reg)
    m, n, k = 120, 90, 3

    def collect(store):
        return lambda res: store.append(res.x.copy())

    ref, it = [], []
    numopt.minimize(P, method="altmin", options=dict(solver="cholesky", maxiter=6, tol=0, xtol=0, atol=0,
                                                     random_state=4), callback=collect(ref))
    numopt.minimize(P, method="altmin", options=dict(solver=solver, maxiter=6, tol=0, xtol=0, atol=0,
                                                     random_state=4, inner_tol=1e-15, **extra),
                    callback=collect(it))
    for xa, xb in zip(ref, it):
        Ua, Va = xa[:m * k].reshape(m, k), xa[m * k:].reshape(n, k)
        Ub, Vb = xb[:m * k].reshape(m, k), xb[m * k:].reshape(n, k)
        assert rel_dist(Ub, Vb, Ua, Va) < 1e-10


@pytest.mark.parametrize("reg,scaling", [(0.0, "none"), (0.3, "none"), (0.01, "count")])
def test_objective_non_increasing_with_exact_solves(reg, scaling):
    Us, Vs, r, c, vals = low_rank(80, 60, 4, 0.4, seed=5)
    vals = vals + 0.3 * np.random.default_rng(1).standard_normal(vals.size)
    P = MatrixCompletion(r, c, vals, (80, 60), 3, reg=reg)
    res = run(P, solver="cholesky", maxiter=25, tol=0, xtol=0, random_state=0, reg_scaling=scaling)
    f = res.history["fun"]
    assert np.all(np.diff(f) <= 1e-10 * f[:-1])
    assert np.isclose(res.fun, f[-1])


def _spectral_matrix(m, n, s, seed):
    rng = np.random.default_rng(seed)
    A = np.linalg.qr(rng.standard_normal((m, len(s))))[0]
    B = np.linalg.qr(rng.standard_normal((n, len(s))))[0]
    return (A * s) @ B.T


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_full_observation_closed_forms(reg):
    """p = 1: reg = 0 gives the rank-k SVD truncation (Eckart-Young); reg > 0 (c = 1) gives the rank-k
    truncation with singular values max(sigma_i - reg, 0) (soft-thresholded SVD)."""
    s = np.array([10.0, 8.0, 6.0, 1.5, 1.0, 0.5])
    M = _spectral_matrix(30, 20, s, seed=0)
    P = MatrixCompletion.from_dense(M, rank=3, reg=reg)
    res = run(P, solver="cholesky", maxiter=400, tol=0, xtol=1e-14, random_state=0)
    X = res.U @ res.V.T
    Uo, so, Vto = np.linalg.svd(M)
    target = (Uo[:, :3] * np.maximum(so[:3] - reg, 0)) @ Vto[:3]
    np.testing.assert_allclose(X, target, atol=1e-9)


def test_noise_floor_grows_linearly_with_noise():
    Us, Vs, r, c, vals = low_rank(200, 150, 3, 0.35, seed=6)
    noise = np.random.default_rng(2).standard_normal(vals.size)
    errs = []
    for sigma in (1e-4, 1e-3, 1e-2):
        P = MatrixCompletion(r, c, vals + sigma * noise, (200, 150), 3, truth=(Us, Vs))
        res = run(P, solver="auto", random_state=0, maxiter=100)
        assert np.all(np.isfinite(res.history["rel_error"]))
        errs.append(res.history["rel_error"][-1])
    ratios = np.array(errs[1:]) / np.array(errs[:-1])
    assert np.all((ratios > 5) & (ratios < 20)), errs


@pytest.mark.parametrize("solver", ["cholesky", "cg", "sketch-cg", "auto"])
def test_cold_and_short_rows_stay_finite(solver):
    Us, Vs, r, c, vals = low_rank(60, 50, 4, 0.5, seed=7)
    keep = (r != 3) & (c != 5)                 # row 3 and column 5 never observed
    keep &= ~((r == 4) & (c > 2))              # row 4 has 2 < k entries
    P = MatrixCompletion(r[keep], c[keep], vals[keep], (60, 50), 4)
    res = run(P, solver=solver, maxiter=15, random_state=0, sketch_size=16)
    assert np.all(np.isfinite(res.U)) and np.all(np.isfinite(res.V))
    assert np.all(res.U[3] == 0) and np.all(res.V[5] == 0)
    assert res.n_cold_rows == 1 and res.n_cold_cols == 1
    assert res.n_rank_deficient >= 1


def test_permutation_transpose_and_scaling_invariance():
    Us, Vs, r, c, vals = low_rank(70, 50, 3, 0.5, seed=8)
    vals = vals + 0.05 * np.random.default_rng(3).standard_normal(vals.size)
    opts = dict(solver="cholesky", maxiter=300, tol=0, xtol=1e-13, random_state=0)
    base = run(MatrixCompletion(r, c, vals, (70, 50), 3), **opts)
    X = base.U @ base.V.T
    pr, pc = np.random.default_rng(4).permutation(70), np.random.default_rng(5).permutation(50)
    inv_r, inv_c = np.argsort(pr), np.argsort(pc)
    perm = run(MatrixCompletion(inv_r[r], inv_c[c], vals, (70, 50), 3), **opts)
    np.testing.assert_allclose((perm.U @ perm.V.T)[inv_r][:, inv_c], X, atol=1e-7)
    tr = run(MatrixCompletion(c, r, vals, (50, 70), 3), **opts)
    np.testing.assert_allclose(tr.V @ tr.U.T, X, atol=1e-7)
    sc = run(MatrixCompletion(r, c, 3.0 * vals, (70, 50), 3), **opts)
    np.testing.assert_allclose(sc.U @ sc.V.T, 3.0 * X, atol=1e-7)


def test_sample_split_theory_mode():
    Us, Vs, r, c, vals = low_rank(300, 200, 2, 0.9, seed=9)
    P = MatrixCompletion(r, c, vals, (300, 200), 2, truth=(Us, Vs))
    res = run(P, sample_split=True, maxiter=6, tol=0, xtol=0, solver="cholesky", random_state=0)
    err = res.history["rel_error"]
    assert err[-1] < 1e-3 and np.all(err[1:] < err[:-1] / 3)        # geometric, on fresh samples
    # the hash labels split Omega into 2T + 1 nearly equal disjoint parts, reproducibly
    from numopt.completion._kernels import split_labels
    lab = split_labels(P.rows, P.cols, 200, 123, 13)
    counts = np.bincount(lab, minlength=13)
    assert counts.sum() == P.nnz and counts.min() > 0.9 * P.nnz / 13
    np.testing.assert_array_equal(lab, split_labels(P.rows, P.cols, 200, 123, 13))
    # cold trailing rows and columns are fine in theory mode too
    keep = (r < 290) & (c < 195)
    Q = MatrixCompletion(r[keep], c[keep], vals[keep], (300, 200), 2)
    res = run(Q, sample_split=True, maxiter=3, solver="cg", random_state=0)
    assert np.all(np.isfinite(res.U)) and np.all(res.U[295] == 0) and np.all(res.V[199] == 0)


def test_rmse_definition_and_result_fields():
    """RMSE = sqrt(sum r^2 / |Omega|) (not ||r||/|Omega|, a bug of a public JNS13 reproduction)."""
    Us, Vs, r, c, vals = low_rank(40, 30, 2, 0.5, seed=10)
    vals = vals + 0.2 * np.random.default_rng(0).standard_normal(vals.size)
    P = MatrixCompletion(r, c, vals, (40, 30), 2)
    res = run(P, maxiter=10, random_state=0)
    resid = np.einsum("ij,ij->i", res.U[r], res.V[c]) - vals
    assert np.isclose(res.rmse, np.sqrt(np.mean(resid ** 2)), rtol=1e-10)
    assert np.isclose(res.fun, 0.5 * np.sum(resid ** 2), rtol=1e-10)
    assert res.x.shape == ((40 + 30) * 2,)
    for key in ("fun", "rmse", "rel_residual", "iter_time", "passes", "inner_steps"):
        assert len(res.history[key]) == res.nit
    assert res.U.shape == (40, 2) and res.V.shape == (30, 2)
    assert res.time_per_iter > 0 and res.passes_per_iter > 0


def test_init_helpers_truncate_and_clip_two_sided():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 8)) @ rng.standard_normal((8, 40))
    import scipy.sparse as sp
    S = sp.csr_array(A)
    U, s, Vt = sparse_top_svd(S.indptr, S.indices, S.data, S.shape, 3, rng=0)
    assert U.shape == (50, 3) and s.shape == (3,) and Vt.shape == (3, 40)
    np.testing.assert_allclose(s, np.linalg.svd(A, compute_uv=False)[:3], rtol=1e-8)
    Q = np.linalg.qr(rng.standard_normal((50, 3)))[0]
    Q[0] = [-5.0, 0.0, 0.0]                     # a large *negative* row must be clipped too
    Q[1] = [0.0, 4.0, 0.0]
    Qc, nclip = clip_rows(Q, mu=1.0)
    assert nclip == 2
    np.testing.assert_allclose(Qc.T @ Qc, np.eye(3), atol=1e-12)
    assert np.linalg.norm(Qc[0]) < 1.0


def test_center_biases_recovers_offsets():
    Us, Vs, r, c, vals = low_rank(100, 80, 2, 0.5, seed=11)
    rng = np.random.default_rng(6)
    bu, bv = rng.standard_normal(100), rng.standard_normal(80)
    # rank 2 + biases: the centred residual has rank <= 4 (bias misfits are rank-one terms)
    P = MatrixCompletion(r, c, vals + 3.0 + bu[r] + bv[c], (100, 80), 4)
    res = run(P, center="biases", maxiter=200, random_state=0)
    pred = (np.einsum("ij,ij->i", res.U[r], res.V[c]) + res.global_mean + res.row_bias[r] + res.col_bias[c])
    assert np.sqrt(np.mean((pred - vals - 3.0 - bu[r] - bv[c]) ** 2)) < 1e-6
    assert res.rmse < 1e-6


def test_float32_problem():
    Us, Vs, r, c, vals = low_rank(150, 100, 3, 0.4, seed=12, dtype=np.float32)
    P = MatrixCompletion(r, c, vals, (150, 100), 3, reg=1e-3, truth=(Us, Vs))
    res = run(P, solver="auto", maxiter=50, random_state=0)
    assert res.U.dtype == np.float32 and res.V.dtype == np.float32
    assert res.history["rel_error"][-1] < 1e-3


def test_warm_start_converges_immediately_and_callback_stop():
    Us, Vs, r, c, vals = low_rank(80, 60, 2, 0.5, seed=13)
    P = MatrixCompletion(r, c, vals, (80, 60), 2)
    first = run(P, random_state=0)
    again = run(P, random_state=1, maxiter=3)
    warm = numopt.minimize(P, (first.U, first.V), method="altmin", options=dict(maxiter=3))
    assert warm.success and warm.nit <= 2
    assert warm.rmse <= 10 * first.rmse + 1e-12
    assert again.nit == 3

    def stop(res):
        if res.nit == 2:
            raise StopIteration

    res = numopt.minimize(P, method="altmin", callback=stop)
    assert res.status == 99 and res.nit == 2


def test_maxiter_reached_warns():
    Us, Vs, r, c, vals = low_rank(80, 60, 2, 0.5, seed=14)
    P = MatrixCompletion(r, c, vals, (80, 60), 2)
    with pytest.warns(ConvergenceWarning):
        res = numopt.minimize(P, method="altmin", options=dict(maxiter=2, solver="cg"))
    assert not res.success and res.status == 1


def test_thread_count_does_not_change_results():
    Us, Vs, r, c, vals = low_rank(90, 70, 3, 0.4, seed=15)
    P = MatrixCompletion(r, c, vals + 0.01, (90, 70), 3, reg=0.1)
    a = run(P, solver="sketch-cg", sketch_size=12, workers=1, maxiter=5, random_state=3)
    b = run(P, solver="sketch-cg", sketch_size=12, workers=2, maxiter=5, random_state=3)
    assert np.array_equal(a.U, b.U) and np.array_equal(a.V, b.V)


@pytest.mark.parametrize("opts,exc,match", [
    (dict(solver="lu"), ValueError, "solver must be one of"),
    (dict(maxiter=0), ValueError, "maxiter must be >= 1"),
    (dict(mu=-1.0), ValueError, "mu must be > 0"),
    (dict(init="zeros"), ValueError, "init must be one of"),
    (dict(clip=1), TypeError, "clip must be True or False"),
    (dict(center="median"), ValueError, "center must be one of"),
    (dict(sketch_size=1), ValueError, "sketch_size must be >= 2"),
    (dict(inner_tol=np.nan), ValueError, "inner_tol must be finite"),
    (dict(workers=0), ValueError, "workers must be >= 1"),
    (dict(bogus=1), ValueError, "unknown option"),
])
def test_bad_options_raise(opts, exc, match):
    P = MatrixCompletion([0, 1, 2], [1, 2, 0], [1.0, 2.0, 3.0], (3, 3), 2)
    with pytest.raises(exc, match=match):
        numopt.minimize(P, method="altmin", options=opts)


def test_bad_x0_raises():
    P = MatrixCompletion([0, 1, 2], [1, 2, 0], [1.0, 2.0, 3.0], (3, 3), 2)
    with pytest.raises(ValueError, match="x0 must be"):
        numopt.minimize(P, np.ones(5), method="altmin")
    with pytest.raises(ValueError, match=r"x0\[0\] must have shape"):
        numopt.minimize(P, (np.ones((2, 2)), np.ones((3, 2))), method="altmin")


@settings(max_examples=25, deadline=None)
@given(m=st.integers(3, 12), n=st.integers(3, 12), k=st.integers(1, 2), p=st.floats(0.05, 1.0),
       reg=st.sampled_from([0.0, 0.1]), solver=st.sampled_from(["cholesky", "cg", "sketch-cg", "auto"]),
       seed=st.integers(0, 1000))
def test_fuzz_minimize_finite(m, n, k, p, reg, solver, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((m, n)) < p
    mask[0, 0] = True
    r, c = np.nonzero(mask)
    vals = rng.standard_normal(r.size) * 10 ** rng.uniform(-3, 3)
    P = MatrixCompletion(r, c, vals, (m, n), k, reg=reg)
    res = run(P, solver=solver, maxiter=8, random_state=seed, sketch_size=2 * k)
    assert np.all(np.isfinite(res.U)) and np.all(np.isfinite(res.V))
    assert np.isfinite(res.fun) and res.nit >= 1
