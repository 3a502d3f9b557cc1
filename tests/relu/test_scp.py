"""SCP: lasso over fixed ReLU features, against scikit-learn's Lasso and CVXPY."""
import numpy as np
import pytest

import numopt
from numopt.problems import TwoLayerReLU
from numopt.relu._kernels import relu_features

from ._data import make_data


def test_matches_sklearn_lasso():
    from sklearn.linear_model import Lasso
    X, y = make_data(60, 3, seed=0, kind="reg")
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=10, random_state=0)
    res = numopt.minimize(pr, method="scp", tol=1e-10)
    assert res.success
    Phi = relu_features(pr.X, res.directions)
    las = Lasso(alpha=pr.beta / pr.n_samples, fit_intercept=False, tol=1e-12, max_iter=100000).fit(Phi, y)
    f_ref = 0.5 * np.sum((Phi @ las.coef_ - y) ** 2) + pr.beta * np.abs(las.coef_).sum()
    assert res.fun == pytest.approx(f_ref, rel=1e-7)
    assert np.allclose(res.x, las.coef_, atol=1e-5)


def test_logistic_matches_cvxpy_and_network():
    import cvxpy as cp
    X, y = make_data(50, 2, seed=1, kind="binary")
    pr = TwoLayerReLU(X, y, 0.2, n_patterns=6, loss="logistic", random_state=0)
    res = numopt.minimize(pr, method="scp", n_neurons=15, random_state=3, tol=1e-10)
    Phi = relu_features(pr.X, res.directions)
    a = cp.Variable(15)
    z = Phi @ a
    cp.Problem(cp.Minimize(cp.sum(cp.logistic(2 * z) - 2 * cp.multiply(y, z)) + 0.2 * cp.norm1(a))).solve("CLARABEL")
    f_ref = pr.loss_value(Phi @ a.value) + 0.2 * np.abs(a.value).sum()
    assert res.fun == pytest.approx(f_ref, rel=1e-6)
    # the recovered network is the same function with the same (non-convex) objective
    assert res.network_fun == pytest.approx(res.fun, rel=1e-12)
    net = np.maximum(pr.X @ res.first_layer, 0) @ res.second_layer
    assert np.allclose(net, Phi @ res.x, atol=1e-12)
    assert np.allclose(np.linalg.norm(res.directions, axis=0), 1)


def test_scp_upper_bounds_convex_program():
    X, y = make_data(40, 2, seed=2)
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=8, random_state=0)
    f_admm = numopt.minimize(pr, method="admm").fun
    f_scp = numopt.minimize(pr, method="scp").fun
    assert f_scp >= f_admm * (1 - 1e-4)


def test_bad_options_and_callback():
    X, y = make_data(20, 2, seed=3)
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=4, random_state=0)
    with pytest.raises(ValueError, match="n_neurons"):
        numopt.minimize(pr, method="scp", n_neurons=0)
    with pytest.raises(ValueError, match="x0"):
        numopt.minimize(pr, np.zeros(3), method="scp")

    def stop(r):
        raise StopIteration

    assert numopt.minimize(pr, method="scp", callback=stop).status == 99
