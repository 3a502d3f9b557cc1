"""Greedy BCD against independent oracles: scikit-learn, closed forms, SciPy."""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize as sp_minimize

import numopt
from numopt.exceptions import ConvergenceWarning
from numopt.problems import LeastSquares, Logistic, MultinomialLogistic

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import ElasticNet, Lasso, LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _correlated(n=50, p=60, seed=0):
    rng = np.random.default_rng(seed)
    cov = 0.5 ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    A = rng.multivariate_normal(np.zeros(p), cov, size=n)
    w = np.zeros(p)
    w[rng.choice(p, 8, replace=False)] = rng.standard_normal(8)
    return A, A @ w + 0.1 * rng.standard_normal(n)


@pytest.mark.parametrize("alpha, coef", [(1e-8, 1.0), (0.1, 0.85), (0.5, 0.25), (1.0, 0.0)])
def test_sklearn_lasso_toy(alpha, coef):
    # sklearn's toy: X = [[-1], [0], [1]], y = [-1, 0, 1], intercept fitted (data centred: mean 0)
    X = np.array([[-1.0], [0.0], [1.0]])
    y = np.array([-1.0, 0.0, 1.0])
    res = numopt.minimize(LeastSquares(X, y, l1=3 * alpha), method="bcd", tol=1e-12)
    assert res.success
    assert res.x[0] == pytest.approx(coef, abs=1e-7)


@pytest.mark.parametrize("l1_ratio, coef", [(0.3, 0.50819672), (0.5, 0.45454545)])
def test_sklearn_enet_toy(l1_ratio, coef):
    X = np.array([[-1.0], [0.0], [1.0]])
    y = np.array([-1.0, 0.0, 1.0])
    a = 0.5
    res = numopt.minimize(LeastSquares(X, y, l1=3 * a * l1_ratio, l2=3 * a * (1 - l1_ratio)), method="bcd",
                          tol=1e-12)
    assert res.x[0] == pytest.approx(coef, abs=1e-7)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("frac", [0.05, 0.5])
def test_lasso_matches_sklearn(sparse, frac):
    A, b = _correlated()
    n = A.shape[0]
    alpha = frac * np.abs(A.T @ b).max() / n
    Ai = sp.csc_matrix(A) if sparse else A
    res = numopt.minimize(LeastSquares(Ai, b, l1=n * alpha), method="bcd", tol=1e-12)
    sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(Ai, b)
    np.testing.assert_allclose(res.x, sk.coef_, atol=1e-6)
    pb = LeastSquares(A, b, l1=n * alpha)
    assert res.fun <= pb.value(sk.coef_) + 1e-6 * abs(res.fun)
    assert res.rel_gap <= 1e-12
    assert res.fun == pytest.approx(pb.value(res.x), rel=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
def test_saturated_block_growth_without_gradient_same_optimum(sparse, monkeypatch):
    # a saturated block grows from the previous scores (no gradient pass, linear term A_W^T b): the result and
    # the certified gap must not depend on it
    import numopt.bcd._prox as PX
    rng = np.random.default_rng(5)
    A = rng.standard_normal((80, 400)) * (rng.random((80, 400)) < 0.3)
    b = A[:, :40] @ rng.standard_normal(40) + 0.1 * rng.standard_normal(80)
    Ai = sp.csc_matrix(A) if sparse else A
    lam = 0.02 * np.abs(A.T @ b).max()
    out = {}
    for sat in (0.75, 9.0):  # 9: never saturated, every outer iteration computes the gradient
        monkeypatch.setattr(PX, "SATURATED", sat)
        out[sat] = numopt.minimize(LeastSquares(Ai, b, l1=lam), method="bcd", tol=1e-12)
        assert out[sat].success and out[sat].rel_gap <= 1e-12
        assert LeastSquares(A, b, l1=lam).duality_gap(out[sat].x) <= 1e-12 * (b @ b)
    np.testing.assert_allclose(out[0.75].x, out[9.0].x, atol=1e-8)
    # the stale steps happened: more outer iterations than recorded gradient checks
    assert out[0.75].nit > len(out[0.75].history["gap"]) - 1


def test_enet_and_positive_match_sklearn():
    A, b = _correlated(seed=1)
    n = A.shape[0]
    alpha = 0.05 * np.abs(A.T @ b).max() / n
    en = ElasticNet(alpha=alpha, l1_ratio=0.7, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(A, b)
    res = numopt.minimize(LeastSquares(A, b, l1=n * alpha * 0.7, l2=n * alpha * 0.3), method="bcd", tol=1e-12)
    np.testing.assert_allclose(res.x, en.coef_, atol=1e-6)
    pos = Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(A, b)
    res = numopt.minimize(LeastSquares(A, b, l1=n * alpha, nonneg=True), method="bcd", tol=1e-12)
    assert np.all(res.x >= 0)
    np.testing.assert_allclose(res.x, pos.coef_, atol=1e-6)


def test_nnls_matches_lbfgsb():
    A, b = _correlated(seed=2)
    pb = LeastSquares(A, b, nonneg=True)
    res = numopt.minimize(pb, method="bcd", tol=1e-10)
    ref = sp_minimize(pb.value, np.zeros(A.shape[1]), jac=pb.gradient, method="L-BFGS-B",
                      bounds=[(0, None)] * A.shape[1], options=dict(ftol=1e-15, gtol=1e-12, maxiter=10000))
    assert res.fun <= ref.fun + 1e-7 * abs(ref.fun)


def _breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), 2.0 * y - 1.0


def test_l1_logistic_breast_cancer_pstar():
    X, y = _breast_cancer()
    res = numopt.minimize(Logistic(X, y, l1=1.0), method="bcd", tol=1e-12)
    assert res.fun == pytest.approx(46.0817403867, abs=1e-6)
    assert np.count_nonzero(res.x) == 16
    sk = LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", fit_intercept=False, tol=1e-10,
                            max_iter=10000).fit(X, y)
    assert res.fun <= Logistic(X, y, l1=1.0).value(sk.coef_.ravel()) + 1e-9


@pytest.mark.parametrize("sparse", [False, True])
def test_l1_logistic_matches_sklearn_random(sparse):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((120, 40))
    y = np.sign(A @ rng.standard_normal(40) + rng.standard_normal(120))
    C = 0.1
    Ai = sp.csc_matrix(A) if sparse else A
    res = numopt.minimize(Logistic(Ai, y, l1=1 / C), method="bcd", tol=1e-12)
    sk = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", fit_intercept=False, tol=1e-12,
                            max_iter=100_000).fit(A, y)
    pb = Logistic(A, y, l1=1 / C)
    assert abs(res.fun - pb.value(sk.coef_.ravel())) <= 1e-6 * abs(res.fun)
    np.testing.assert_allclose(res.x, sk.coef_.ravel(), atol=1e-4)


SELECTIONS = ["cyclic", "random", "lipschitz", "gs", "gsl", "gsd", "gsq"]


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("update", ["gradient", "lipschitz", "newton"])
def test_smooth_least_squares_rules(selection, update):
    rng = np.random.default_rng(4)
    A = rng.standard_normal((60, 25))
    b = rng.standard_normal(60)
    xs = np.linalg.solve(A.T @ A + 0.5 * np.eye(25), A.T @ b)
    res = numopt.minimize(LeastSquares(A, b, l2=0.5), method="bcd", selection=selection, update=update,
                          block_size=4, tol=1e-10, maxiter=50_000, random_state=0)
    assert res.success
    np.testing.assert_allclose(res.x, xs, atol=1e-8)
    # bound-based, exact and backtracked steps never increase F (descent lemma)
    assert np.all(np.diff(res.history["fun"]) <= 1e-10 * abs(res.history["fun"][0]))


@pytest.mark.parametrize("partition", ["order", "avg", "sort"])
@pytest.mark.parametrize("selection", ["cyclic", "gs", "gsl", "gsd", "gsq"])
def test_fixed_blocks(partition, selection):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((40, 23)) * rng.uniform(0.1, 3, 23)
    b = rng.standard_normal(40)
    xs = np.linalg.lstsq(A, b, rcond=None)[0]
    res = numopt.minimize(LeastSquares(A, b), method="bcd", selection=selection, partition=partition,
                          block_size=5, tol=1e-10, maxiter=50_000)
    np.testing.assert_allclose(res.x, xs, atol=1e-7)


@pytest.mark.parametrize("update", ["gradient", "lipschitz", "newton"])
def test_logistic_l2_vs_lbfgs(update):
    rng = np.random.default_rng(6)
    A = rng.standard_normal((80, 20))
    y = np.sign(A @ rng.standard_normal(20) + rng.standard_normal(80))
    pb = Logistic(sp.csc_matrix(A), y, l2=1.0)
    ref = sp_minimize(pb.value, np.zeros(20), jac=pb.gradient, method="L-BFGS-B",
                      options=dict(gtol=1e-12, ftol=1e-15))
    res = numopt.minimize(pb, method="bcd", update=update, block_size=5, tol=1e-9, maxiter=20_000)
    assert res.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert np.all(np.diff(res.history["fun"]) <= 1e-12 * abs(res.history["fun"][0]))


@pytest.mark.parametrize("update", ["gradient", "lipschitz", "newton"])
@pytest.mark.parametrize("sparse", [False, True])
def test_multinomial_vs_lbfgs(update, sparse):
    rng = np.random.default_rng(7)
    A = rng.standard_normal((70, 12))
    lab = rng.integers(0, 4, 70)
    pb = MultinomialLogistic(sp.csc_matrix(A) if sparse else A, lab, l2=1.0)
    ref = sp_minimize(pb.value, np.zeros(48), jac=lambda x: pb.gradient(x).ravel(), method="L-BFGS-B",
                      options=dict(gtol=1e-12, ftol=1e-15))
    res = numopt.minimize(pb, method="bcd", update=update, block_size=6, tol=1e-8, maxiter=20_000)
    assert res.x.shape == (12, 4)
    assert res.success
    np.testing.assert_allclose(res.x.ravel(), ref.x, atol=1e-5)
    assert res.fun <= ref.fun + 1e-9 * abs(ref.fun)


def test_all_rules_reach_same_l1_optimum():
    A, b = _correlated(seed=8)
    pb = LeastSquares(A, b, l1=0.1 * np.abs(A.T @ b).max())
    ref = numopt.minimize(pb, method="bcd", tol=1e-13).x
    for sel in ["cyclic", "random", "gs", "gsl", "gsq"]:
        res = numopt.minimize(pb, method="bcd", selection=sel, update="pg", block_size=5, tol=1e-11,
                              maxiter=100_000, random_state=1)
        np.testing.assert_allclose(res.x, ref, atol=1e-7)
    res = numopt.minimize(pb, method="bcd", update="pn", partition="sort", block_size=8, tol=1e-11, maxiter=20_000)
    np.testing.assert_allclose(res.x, ref, atol=1e-7)


def test_lambda_max_gives_zero_at_first_check():
    A, b = _correlated(seed=9)
    lam = np.abs(A.T @ b).max()
    res = numopt.minimize(LeastSquares(A, b, l1=lam * 1.0001), method="bcd")
    assert res.success and res.nit == 0
    assert np.all(res.x == 0)


def test_support_freezes_and_gap_history():
    rng = np.random.default_rng(10)
    A = rng.standard_normal((100, 300))
    w = np.zeros(300)
    w[:10] = rng.standard_normal(10)
    b = A @ w + 0.01 * rng.standard_normal(100)
    res = numopt.minimize(LeastSquares(A, b, l1=0.2 * np.abs(A.T @ b).max()), method="bcd", tol=1e-12)
    h = res.history
    assert len(h["gap"]) == res.nit + 1 == len(h["active_set_size"])
    assert res.active_set_iter < res.nit
    assert h["active_set_size"][-1] == 300 - np.count_nonzero(res.x)
    assert np.all(np.diff(h["fun"]) <= 1e-12 * h["fun"][0])


def test_callback_stop_and_maxiter_warning():
    A, b = _correlated(seed=11)
    pb = LeastSquares(A, b, l2=0.1)

    def cb(r):
        if r.nit >= 3:
            raise StopIteration

    res = numopt.minimize(pb, method="bcd", callback=cb, block_size=2)
    assert res.status == 99 and res.nit == 3
    with pytest.warns(ConvergenceWarning):
        res = numopt.minimize(pb, method="bcd", maxiter=2, block_size=2)
    assert not res.success


def test_f_target_stop():
    A, b = _correlated(seed=12)
    pb = LeastSquares(A, b, l2=1.0)
    xs = np.linalg.solve(A.T @ A + np.eye(A.shape[1]), A.T @ b)
    fstar = pb.value(xs)
    res = numopt.minimize(pb, method="bcd", f_target=fstar, target_tol=1e-6, tol=0.0, block_size=5)
    assert res.success and res.fun - fstar <= 1e-6


def test_float32_input():
    A, b = _correlated(seed=13)
    pb = LeastSquares(A.astype(np.float32), b.astype(np.float32), l1=5.0)
    res = numopt.minimize(pb, method="bcd", tol=1e-10)
    ref = numopt.minimize(LeastSquares(A.astype(np.float32).astype(float), b.astype(np.float32).astype(float),
                                       l1=5.0), method="bcd", tol=1e-10)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)


def test_function_problem_and_scipy_method():
    rng = np.random.default_rng(14)
    M = rng.standard_normal((30, 10))
    Q = M.T @ M + np.eye(10)
    c = rng.standard_normal(10)
    xs = np.linalg.solve(Q, c)

    def fun(x):
        return 0.5 * x @ Q @ x - c @ x

    def jac(x):
        return Q @ x - c

    res = numopt.minimize(fun, np.zeros(10), method="bcd", jac=jac, tol=1e-8, block_size=3, maxiter=20_000)
    assert res.success
    np.testing.assert_allclose(res.x, xs, atol=1e-7)
    res2 = sp_minimize(fun, np.zeros(10), jac=jac, method=numopt.bcd.method, options=dict(tol=1e-8, block_size=3,
                                                                                            maxiter=20_000))
    np.testing.assert_allclose(res2.x, xs, atol=1e-7)
    # jac=True and finite differences
    res3 = sp_minimize(lambda x: (fun(x), jac(x)), np.zeros(10), jac=True, method=numopt.bcd.method,
                       options=dict(tol=1e-8, maxiter=20_000))
    np.testing.assert_allclose(res3.x, xs, atol=1e-6)
    res4 = numopt.minimize(fun, np.zeros(10), method="bcd", tol=1e-7, maxiter=20_000)
    np.testing.assert_allclose(res4.x, xs, atol=1e-5)
    with pytest.raises(ValueError, match="bounds"):
        sp_minimize(fun, np.zeros(10), jac=jac, method=numopt.bcd.method, bounds=[(0, 1)] * 10)
    with pytest.raises(ValueError, match="unknown option"):
        sp_minimize(fun, np.zeros(10), jac=jac, method=numopt.bcd.method, options=dict(foo=1))


def test_separable_logistic_warns_without_crash():
    A = np.array([[1.0], [2.0], [-1.0], [-3.0]])
    y = np.array([1.0, 1.0, -1.0, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = numopt.minimize(Logistic(A, y), method="bcd", maxiter=50, update="gradient")
        assert np.isfinite(res.fun) and res.x[0] > 0
        with pytest.warns(numopt.OptimizeWarning, match="separable"):
            numopt.minimize(Logistic(A, y), method="bcd", maxiter=5000)


def test_greedy_rules_beat_cyclic_and_random_on_a_replica():
    # the paper's Fig. 4a / 5a ordering on a small dataset-A replica: greedy variable blocks win per iteration
    from numopt.bench.bcd import dataset_a
    A, y = dataset_a(200, 1000, seed=1)
    pb = LeastSquares(A, y)
    fstar = pb.value(np.linalg.lstsq(A.toarray(), y, rcond=None)[0])
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for upd in ("gradient", "lipschitz"):
            for sel in ("cyclic", "random", "gs", "gsl"):
                res = numopt.minimize(pb, method="bcd", selection=sel, update=upd, block_size=5, maxiter=200,
                                      tol=0.0, random_state=0)
                out[upd, sel] = res.fun - fstar
    for upd, margin in (("gradient", 0.05), ("lipschitz", 1e-3)):
        worst_greedy = out[upd, "gsl"]
        assert worst_greedy < margin * min(out[upd, "cyclic"], out[upd, "random"])
        assert out[upd, "gs"] < min(out[upd, "cyclic"], out[upd, "random"])


@pytest.mark.parametrize("selection, partition", [("gsq", "variable"), ("gs", "sort"), ("cyclic", "variable")])
def test_two_metric_projection_nonneg(selection, partition):
    rng = np.random.default_rng(15)
    A = rng.standard_normal((60, 40))
    b = rng.standard_normal(60)
    for pb in (LeastSquares(A, b, l1=2.0, nonneg=True), Logistic(A, np.sign(b), l1=1.0, nonneg=True)):
        ref = numopt.minimize(pb, method="bcd", tol=1e-12)
        res = numopt.minimize(pb, method="bcd", update="tmp", selection=selection, partition=partition,
                              block_size=5, tol=1e-9, maxiter=20_000)
        assert res.success and np.all(res.x >= 0)
        np.testing.assert_allclose(res.x, ref.x, atol=1e-7)
        assert np.all(np.diff(res.history["fun"]) <= 1e-10 * abs(res.history["fun"][0]))
    with pytest.raises(ValueError, match="nonneg"):
        numopt.minimize(LeastSquares(A, b, l1=1.0), method="bcd", update="tmp")


def test_a_l1_newton_type_updates_identify_faster_than_pg():
    # Fig. 7 ordering at |b| = 5 on a small A-L1 replica: PN/TMP variable blocks need fewer iterations than PG
    from numopt.bench.bcd import dataset_a
    A, y = dataset_a(150, 600, seed=3)
    pb = LeastSquares(A, y, l1=0.2 * np.abs(A.T @ y).max(), nonneg=True)
    ref = numopt.minimize(pb, method="bcd", tol=1e-13)
    its = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for upd in ("pg", "tmp", "pn"):
            res = numopt.minimize(pb, method="bcd", update=upd, partition="sort" if upd == "pn" else "variable",
                                  block_size=5, tol=0.0, maxiter=400, f_target=ref.fun, target_tol=1e-8)
            its[upd] = res.nit
            # the zero set stops changing after finitely many iterations
            assert res.active_set_iter < res.nit or res.nit < 400
    assert its["tmp"] < its["pg"]
