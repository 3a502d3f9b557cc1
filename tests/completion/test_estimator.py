"""MatrixCompleter: scikit-learn checks and behaviour."""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.utils.estimator_checks import parametrize_with_checks

from numopt.completion import MatrixCompleter
from numopt.exceptions import ConvergenceWarning

from .conftest import low_rank


@parametrize_with_checks([MatrixCompleter(rank=1, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _nan_matrix(m, n, k, p, seed=0, noise=0.0):
    Us, Vs, r, c, vals = low_rank(m, n, k, p, seed=seed)
    X = np.full((m, n), np.nan)
    X[r, c] = vals + noise * np.random.default_rng(seed).standard_normal(vals.size)
    return X, Us @ Vs.T


def test_fit_predict_score_on_held_out_entries():
    X, M = _nan_matrix(120, 80, 3, 0.5, seed=1)
    est = MatrixCompleter(rank=3, random_state=0).fit(X)
    miss_r, miss_c = np.nonzero(np.isnan(X))
    pred = est.predict(miss_r, miss_c)
    np.testing.assert_allclose(pred, M[miss_r, miss_c], atol=1e-6)
    X_test = np.full_like(X, np.nan)
    X_test[miss_r, miss_c] = M[miss_r, miss_c]
    assert est.score(X_test) == pytest.approx(-est.rmse(miss_r, miss_c, M[miss_r, miss_c]))
    assert -1e-6 < est.score(X_test) <= 0
    np.testing.assert_allclose(est.reconstruct(), M, atol=1e-6)
    assert est.n_iter_ == est.result_.nit and est.U_.shape == (120, 3)


def test_sparse_with_mask_equals_nan_dense():
    X, _ = _nan_matrix(60, 40, 2, 0.5, seed=2, noise=0.1)
    obs = ~np.isnan(X)
    S = sp.csr_array(np.where(obs, X, 0.0))
    a = MatrixCompleter(rank=2, random_state=0, max_iter=20).fit(X)
    b = MatrixCompleter(rank=2, random_state=0, max_iter=20).fit(S, mask=obs)
    np.testing.assert_allclose(a.reconstruct(), b.reconstruct(), atol=1e-12)
    with pytest.raises(ValueError, match="explicit mask"):
        MatrixCompleter(rank=2).fit(S)


def test_cold_start_policies():
    X, _ = _nan_matrix(30, 20, 2, 0.6, seed=3)
    X[4] = np.nan                                  # row 4 never observed
    X[:, 7] = np.nan                               # column 7 never observed
    rows, cols = np.array([4, 0, 1]), np.array([0, 7, 2])
    nan = MatrixCompleter(rank=2, random_state=0, cold_start="nan").fit(X).predict(rows, cols)
    assert np.isnan(nan[0]) and np.isnan(nan[1]) and np.isfinite(nan[2])
    zero = MatrixCompleter(rank=2, random_state=0, cold_start="zero", center="global").fit(X)
    pz = zero.predict(rows, cols)
    assert pz[0] == pytest.approx(zero.global_mean_) and pz[1] == pytest.approx(zero.global_mean_)
    drop = MatrixCompleter(rank=2, random_state=0, cold_start="drop").fit(X)
    assert drop.predict(rows, cols).shape == (1,)
    assert np.isfinite(drop.rmse(rows, cols, np.zeros(3)))
    with pytest.raises(ValueError, match="cold_start must be one of"):
        MatrixCompleter(cold_start="mean").fit(X)


def test_warm_start_reuses_factors():
    X, _ = _nan_matrix(80, 60, 3, 0.5, seed=4, noise=0.01)
    est = MatrixCompleter(rank=3, random_state=0, warm_start=True).fit(X)
    first = est.n_iter_
    est.fit(X)
    assert est.n_iter_ <= 2 < first


def test_transform_folds_in_new_rows():
    X, M = _nan_matrix(100, 50, 3, 0.6, seed=5)
    est = MatrixCompleter(rank=3, random_state=0).fit(X[:80])
    out = est.transform(X[80:])
    np.testing.assert_allclose(out, M[80:], atol=1e-6)
    obs = ~np.isnan(X[80:])
    np.testing.assert_array_equal(out[obs], X[80:][obs])          # observed entries unchanged
    np.testing.assert_allclose(est.predict(X[80:]), out)
    with pytest.raises(ValueError, match="features"):
        est.transform(X[80:, :10])


def test_biases_and_bad_inputs():
    X, M = _nan_matrix(60, 40, 2, 0.6, seed=6)
    est = MatrixCompleter(rank=4, center="biases", random_state=0).fit(X + 5.0)
    r, c = np.nonzero(np.isnan(X))
    np.testing.assert_allclose(est.predict(r, c), M[r, c] + 5.0, atol=1e-4)
    with pytest.raises(ValueError, match="rank=40 must be smaller"):
        MatrixCompleter(rank=40).fit(X)
    with pytest.raises(ValueError, match="infinity|infinite"):
        MatrixCompleter(rank=2).fit(np.where(np.isnan(X), np.inf, X))
    with pytest.raises(ValueError, match="rows has index 99 out of range"):
        est.predict([99], [0])
    with pytest.raises(ValueError, match="training shape"):
        est.score(X[:10])


def test_fancyimpute_gate():
    """fancyimpute's own test gate: rank 3, 500 x 10, 25% missing, seed 0, MAE on missing entries < 0.1."""
    rng = np.random.default_rng(0)
    M = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 10))
    X = M.copy()
    miss = rng.random(M.shape) < 0.25
    X[miss] = np.nan
    est = MatrixCompleter(rank=3, random_state=0).fit(X)
    mae = np.mean(np.abs(est.reconstruct()[miss] - M[miss]))
    assert mae < 0.1 and mae < 1e-6


def test_digits_half_hidden_beats_mean_imputation_and_softimpute():
    """Real data: scikit-learn's digits (1797 x 64) with 50% of the entries hidden."""
    from sklearn.datasets import load_digits

    D = load_digits().data.astype(np.float64)
    rng = np.random.default_rng(0)
    hide = rng.random(D.shape) < 0.5
    X = np.where(hide, np.nan, D)
    est = MatrixCompleter(rank=15, reg=30.0, center="biases", random_state=0, max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    truth = D[hide]
    err = np.linalg.norm(est.reconstruct()[hide] - truth) / np.linalg.norm(truth)
    col_mean = np.nanmean(X, axis=0)
    col_mean = np.where(np.isnan(col_mean), 0.0, col_mean)
    err_mean = np.linalg.norm(np.broadcast_to(col_mean, D.shape)[hide] - truth) / np.linalg.norm(truth)
    assert err < 0.75 * err_mean                 # measured 0.406 vs 0.560
    pytest.importorskip("fancyimpute")
    from numopt.bench.completion import softimpute_peer
    soft = softimpute_peer(X, 15)                 # its default max_iters=100 (measured 0.424)
    err_soft = np.linalg.norm(soft[hide] - truth) / np.linalg.norm(truth)
    assert err < err_soft
