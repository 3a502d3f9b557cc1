"""scikit-learn estimators: estimator checks, to_torch equality, multiclass, warm start, beta path."""
import numpy as np
import pytest
from sklearn.datasets import load_iris, make_moons
from sklearn.utils.estimator_checks import check_estimator

import numopt
from numopt.problems import TwoLayerReLU
from numopt.relu import ConvexReLUClassifier, ConvexReLURegressor, beta_path

from ._data import make_data


@pytest.mark.parametrize("est", [ConvexReLUClassifier(n_patterns=12, max_iter=400),
                                 ConvexReLUClassifier(n_patterns=12, loss="logistic", max_iter=400),
                                 ConvexReLURegressor(n_patterns=12, max_iter=400),
                                 ConvexReLUClassifier(n_patterns=8, max_width=12, max_iter=400)],
                         ids=["clf-squared", "clf-logistic", "reg", "clf-max-width"])
def test_sklearn_estimator_checks(est):
    check_estimator(est)


def test_to_torch_equals_ours():
    import torch
    X, y = load_iris(return_X_y=True)
    clf = ConvexReLUClassifier(beta=0.5, n_patterns=10, loss="logistic", random_state=0).fit(X, y)
    net = clf.to_torch()
    with torch.no_grad():
        out = net(torch.from_numpy(X)).numpy()
    assert out.dtype == np.float64
    assert np.max(np.abs(out - clf.decision_function(X))) <= 1e-10
    Xr, yr = make_data(50, 3, seed=0, kind="reg")
    reg = ConvexReLURegressor(beta=0.1, n_patterns=8, random_state=0).fit(Xr * 10 + 3, yr * 5 - 2)
    with torch.no_grad():
        outr = reg.to_torch()(torch.from_numpy(Xr * 10 + 3)).numpy()[:, 0]
    assert np.max(np.abs(outr - reg.predict(Xr * 10 + 3))) <= 1e-10


def test_folded_network_matches_convex_model_on_training_data():
    """Estimator output (original feature space) = the convex model F v on the standardised data."""
    X, y = make_moons(80, noise=0.1, random_state=0)
    clf = ConvexReLUClassifier(beta=0.05, n_patterns=20, random_state=0, tol=1e-6, max_iter=5000).fit(X, y)
    res = clf.solver_results_[0]
    pr = clf._problem
    net = np.maximum(pr.X @ res.first_layer, 0) @ res.second_layer      # standardised space
    assert np.max(np.abs(clf.decision_function(X) - net)) <= 1e-12 * np.abs(net).max()
    conv = pr.predict_convex(res.v, res.w)
    assert np.max(np.abs(net - conv)) <= 1e-3 * np.abs(conv).max()      # cones hold to the tolerance
    assert clf.score(X, y) >= 0.97
    assert clf.n_neurons_ == clf.first_layer_weights_.shape[1] == clf.second_layer_weights_.shape[0]


def test_multiclass_ovr_shares_patterns_and_proba():
    X, y = load_iris(return_X_y=True)
    clf = ConvexReLUClassifier(beta=0.5, n_patterns=10, loss="logistic", random_state=0).fit(X, y)
    assert clf.second_layer_weights_.shape[1] == 3
    assert clf.score(X, y) >= 0.95
    P = clf.predict_proba(X)
    assert np.allclose(P.sum(axis=1), 1) and np.array_equal(np.argmax(P, 1), clf.predict(X))
    # each neuron feeds exactly one class
    assert np.all((clf.second_layer_weights_ != 0).sum(axis=1) <= 1)
    sq = ConvexReLUClassifier(n_patterns=5)
    assert not hasattr(sq, "predict_proba")


def test_regressor_scales_targets():
    Xr, yr = make_data(60, 3, seed=1, kind="reg")
    a = ConvexReLURegressor(beta=0.1, n_patterns=8, random_state=0).fit(Xr, yr)
    b = ConvexReLURegressor(beta=0.1, n_patterns=8, random_state=0).fit(Xr, 1000 * yr + 7)
    assert np.allclose(1000 * a.predict(Xr) + 7, b.predict(Xr), rtol=1e-6, atol=1e-6 * 1000)
    assert a.score(Xr, yr) > 0.8


def test_warm_start_reuses_problem_and_state():
    X, y = make_moons(60, noise=0.2, random_state=1)
    clf = ConvexReLUClassifier(beta=1.0, n_patterns=10, warm_start=True, random_state=0).fit(X, y)
    prob = clf._problem
    n1 = clf.n_iter_
    clf.set_params(beta=0.9).fit(X, y)
    assert clf._problem is prob
    cold = ConvexReLUClassifier(beta=0.9, n_patterns=10, random_state=0).fit(X, y)
    assert clf.objective_[0] == pytest.approx(cold.objective_[0], rel=1e-3)
    assert clf.n_iter_ < max(n1, cold.n_iter_)


def test_beta_path_reuses_factorization():
    X, y = make_data(40, 2, seed=2)
    pr = TwoLayerReLU(X, y, 1.0, n_patterns=6, random_state=0)
    betas = [0.1, 2.0, 0.5]
    path = beta_path(pr, betas)
    keys = [k for k in pr._cache if k[0] != "base"]
    assert len(keys) == 1                               # one factorisation for the whole path
    for b, r in zip(betas, path):
        ref = numopt.minimize(pr.with_beta(b), method="admm")
        assert r.fun == pytest.approx(ref.fun, rel=1e-4)
    with pytest.raises(ValueError, match="betas"):
        beta_path(pr, [-1.0])


@pytest.mark.parametrize("params, exc", [({"beta": -1}, ValueError), ({"n_patterns": 0}, ValueError),
                                         ({"solver": "sgd"}, ValueError), ({"loss": "hinge"}, ValueError),
                                         ({"solver_options": 3}, TypeError), ({"max_iter": 0}, ValueError),
                                         ({"pattern_refinement": 0.0}, ValueError),
                                         ({"pattern_refinement": 1.0, "solver": "scp"}, ValueError),
                                         ({"max_width": 0}, ValueError), ({"max_width": 2.5}, TypeError),
                                         ({"max_width": 8, "solver": "scp"}, ValueError),
                                         ({"max_width": 8, "adversarial_eps": 0.1}, ValueError)])
def test_bad_params(params, exc):
    X, y = make_moons(20, random_state=0)
    with pytest.raises(exc):
        ConvexReLUClassifier(**params).fit(X, y)


def test_bad_data():
    X, y = make_moons(20, random_state=0)
    with pytest.raises(ValueError):
        ConvexReLUClassifier().fit(X, np.zeros(20))
    with pytest.raises(ValueError):
        ConvexReLUClassifier().fit(np.full((20, 2), np.nan), y)
    clf = ConvexReLUClassifier(n_patterns=4).fit(X, y)
    with pytest.raises(ValueError):
        clf.predict(np.ones((3, 5)))


from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(X=arrays(np.float64, st.tuples(st.integers(4, 12), st.integers(1, 3)),
                elements=st.floats(-1e3, 1e3, allow_nan=False)),
       seed=st.integers(0, 50), loss=st.sampled_from(["squared", "logistic"]),
       max_width=st.sampled_from([None, 1, 3, 8]), refine=st.sampled_from([None, 1.0]))
def test_fuzz_classifier_fit_predict(X, seed, loss, max_width, refine):
    """Any finite data with two classes fits and predicts known labels with finite scores, within its width."""
    y = np.arange(X.shape[0]) % 2
    clf = ConvexReLUClassifier(n_patterns=4, loss=loss, max_iter=50, random_state=seed, max_width=max_width,
                               pattern_refinement=refine).fit(X, y)
    pred = clf.predict(X)
    assert set(pred) <= {0, 1}
    f = clf.decision_function(X)
    assert np.all(np.isfinite(f))
    if max_width is not None:
        assert clf.n_neurons_ <= max_width


def _refine_reference(Xb, T, D, ridge):
    """Dense textbook form of the refinement: kernel ridge on the gated features, zero sets of the neurons."""
    n, P = D.shape
    F = np.hstack([D[:, [i]] * Xb for i in range(P)])               # n x dP gated features
    K = F @ F.T
    A = np.linalg.solve(K + ridge * np.trace(K) / n * np.eye(n), T)  # n x k
    V = (F.T @ A).reshape(P, Xb.shape[1], -1)                        # per gate, per target
    best = np.argmax(np.linalg.norm(V, axis=1), axis=1)
    return np.stack([Xb @ V[i, :, best[i]] >= 0 for i in range(P)], axis=1)


@pytest.mark.parametrize("k", [1, 3])
def test_refine_patterns_matches_dense_reference(k):
    from numopt.relu._problem import refine_patterns, sample_patterns
    rng = np.random.default_rng(k)
    X = np.hstack([rng.standard_normal((60, 4)), np.ones((60, 1))])
    D = sample_patterns(X, 10, np.random.default_rng(0))[0]
    T = rng.standard_normal((60, k))
    ref = _refine_reference(X, T if k > 1 else T[:, 0][:, None], D, 0.7)
    out = refine_patterns(X, T if k > 1 else T[:, 0], D, 0.7)
    # learned patterns first (duplicates and empty ones dropped), then the sampled ones fill the room
    keys = []
    for col in np.hstack([ref, D.astype(bool)]).T:
        if col.any() and col.tobytes() not in keys:
            keys.append(col.tobytes())
    expect = np.stack([np.frombuffer(kk, dtype=bool) for kk in keys[:D.shape[1]]], axis=1)
    assert out.shape == expect.shape and np.array_equal(out.astype(bool), expect)


def test_refine_patterns_cg_solves_the_kernel_ridge_system():
    """The matrix-free CG fit equals the dense kernel ridge solve: same patterns on a larger problem, and a
    CG cut short at maxiter still returns valid, distinct 0/1 patterns."""
    from numopt.relu._problem import refine_patterns, sample_patterns
    rng = np.random.default_rng(5)
    X = np.hstack([rng.standard_normal((400, 6)), np.ones((400, 1))])
    D = sample_patterns(X, 16, np.random.default_rng(1))[0]
    y = np.sign(X[:, 0] * X[:, 1] + 0.3 * X[:, 2])
    ref = _refine_reference(X, y[:, None], D, 1.0)
    out = refine_patterns(X, y, D, 1.0)
    learned = [c for c in ref.T if c.any()]
    keys = {c.tobytes() for c in out.astype(bool).T}
    assert sum(c.tobytes() in keys for c in learned) >= len(learned) - 1     # at most a tie broken differently
    short = refine_patterns(X, y, D, 1.0, maxiter=2)
    assert short.shape[0] == 400 and 1 <= short.shape[1] <= 16 and set(np.unique(short)) <= {0.0, 1.0}
    assert np.all(short.any(axis=0)) and len({c.tobytes() for c in short.T}) == short.shape[1]


def test_pattern_refinement_estimator_keeps_the_equivalence_and_fits_better():
    """Learned gates: the recovered network still equals the convex model on the training data, and on an
    XOR-like problem whose cells random gates rarely fit, the training loss goes down."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    base = ConvexReLUClassifier(beta=0.1, n_patterns=6, random_state=0, tol=1e-6, max_iter=5000).fit(X, y)
    ref = ConvexReLUClassifier(beta=0.1, n_patterns=6, random_state=0, tol=1e-6, max_iter=5000,
                               pattern_refinement=1.0).fit(X, y)
    res = ref.solver_results_[0]
    assert res.success and abs(res.network_fun - res.fun) <= 1e-3 * res.fun
    pr = ref._problem
    conv = pr.predict_convex(*pr.unpack(res.x))
    assert np.max(np.abs(ref.decision_function(X) - conv)) <= 1e-3 * np.abs(conv).max()
    assert ref.objective_[0] < base.objective_[0]


def test_estimator_iterates_in_float32_at_prediction_tolerances():
    """tol >= 1e-3: float32 ADMM (same predictions as float64 up to a few boundary points); tighter: float64."""
    X, y = make_moons(200, noise=0.2, random_state=3)
    f32 = ConvexReLUClassifier(n_patterns=12, random_state=0).fit(X, y)
    f64 = ConvexReLUClassifier(n_patterns=12, random_state=0, solver_options={"dtype": np.float64}).fit(X, y)
    assert f32.solver_results_[0].dtype == "float32" and f64.solver_results_[0].dtype == "float64"
    assert f32.first_layer_weights_.dtype == np.float64
    assert np.mean(f32.predict(X) == f64.predict(X)) >= 0.98
    assert abs(f32.objective_[0] - f64.objective_[0]) <= 1e-2 * f64.objective_[0]
    tight = ConvexReLUClassifier(n_patterns=12, random_state=0, tol=1e-4).fit(X, y)
    assert tight.solver_results_[0].dtype == "float64"
    robust = ConvexReLUClassifier(n_patterns=6, random_state=0, adversarial_eps=0.05).fit(X[:60], y[:60])
    assert robust.solver_results_[0].get("dtype", "float64") == "float64"


def test_max_width_grows_then_caps_to_the_strongest_neurons():
    """Width left unused at n_patterns cells: a finer arrangement (max_width cells), then the max_width neurons of
    largest norm kept and the program re-solved with the others fixed at zero; the network still equals the
    convex model on the training data, and the capped objective is that of the constrained program."""
    X, y = make_moons(150, noise=0.2, random_state=0)
    W = 10
    clf = ConvexReLUClassifier(beta=0.1, n_patterns=3, max_width=W, random_state=0, tol=1e-6, max_iter=5000).fit(X, y)
    assert clf.n_patterns_ == W                          # 3 cells give at most 6 < 10 neurons: grown to 10 cells
    res = clf.solver_results_[0]
    pr = clf._problem
    assert pr.n_patterns_ == W and 0 < clf.n_neurons_ <= W
    UZ = np.hstack([res.v, res.w])
    act = np.linalg.norm(UZ, axis=0) > 0
    uncapped = numopt.minimize(pr.with_beta(0.1), method="admm", rtol=1e-6, maxiter=5000)
    assert np.count_nonzero(np.linalg.norm(np.hstack([uncapped.v, uncapped.w]), axis=0)) > W   # the cap binds
    ref = numopt.minimize(pr.with_beta(0.1), method="admm", rtol=1e-7, maxiter=20000, active=act)
    assert res.fun == pytest.approx(ref.fun, rel=1e-4) and res.fun > uncapped.fun
    conv = pr.predict_convex(res.v, res.w)
    assert np.max(np.abs(clf.decision_function(X) - conv)) <= 1e-3 * np.abs(conv).max()
    assert clf.score(X, y) >= 0.9


def test_max_width_below_the_cells_only_caps_and_applies_per_output():
    X, y = load_iris(return_X_y=True)
    clf = ConvexReLUClassifier(beta=0.1, n_patterns=8, max_width=5, random_state=0).fit(X, y)
    assert clf.n_patterns_ == 8                          # 8 cells >= max_width: no growth
    per_class = (clf.second_layer_weights_ != 0).sum(axis=0)
    assert per_class.shape == (3,) and np.all(per_class <= 5) and clf.n_neurons_ <= 15
    free = ConvexReLUClassifier(beta=0.1, n_patterns=8, random_state=0).fit(X, y)
    assert np.any((free.second_layer_weights_ != 0).sum(axis=0) > 5)     # the cap binds on some class
    assert clf.score(X, y) >= 0.9
    reg = ConvexReLURegressor(beta=0.1, n_patterns=8, max_width=4, random_state=0).fit(*make_data(60, 3, seed=1, kind="reg"))
    assert reg.n_neurons_ <= 4


def test_warm_start_refits_when_the_patterns_change():
    X, y = make_moons(60, noise=0.2, random_state=1)
    clf = ConvexReLUClassifier(n_patterns=6, warm_start=True, random_state=0).fit(X, y)
    prob = clf._problem
    clf.set_params(beta=0.5).fit(X, y)
    assert clf._problem is prob                          # beta only: same patterns and factorisation
    clf.set_params(n_patterns=9).fit(X, y)
    assert clf._problem is not prob and clf.n_patterns_ == 9


def test_max_width_with_warm_start_keeps_the_grown_cells_and_the_cap():
    X, y = make_moons(120, noise=0.2, random_state=2)
    clf = ConvexReLUClassifier(beta=0.1, n_patterns=3, max_width=8, warm_start=True, random_state=0).fit(X, y)
    prob = clf._problem
    assert clf.n_patterns_ == 8 and clf.n_neurons_ <= 8
    clf.set_params(beta=0.05).fit(X, y)                 # beta only: the grown problem is reused, the cap applied again
    assert clf._problem is prob and clf.n_patterns_ == 8 and clf.n_neurons_ <= 8
    cold = ConvexReLUClassifier(beta=0.05, n_patterns=3, max_width=8, random_state=0).fit(X, y)
    assert np.mean(clf.predict(X) == cold.predict(X)) >= 0.95
