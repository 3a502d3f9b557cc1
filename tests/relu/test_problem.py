"""TwoLayerReLU: validation, pattern sampling, network recovery identities."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from numopt.problems import TwoLayerReLU

from ._data import make_data


def test_patterns_deduplicated_nonzero_and_seeded():
    X, y = make_data(30, 2, seed=0)
    pr = TwoLayerReLU(X, y, 1.0, n_patterns=200, bias=False, random_state=0)
    D = pr.Dmat.astype(bool)
    assert D.shape[0] == 30 and D.any(axis=0).all()
    assert len({c.tobytes() for c in D.T}) == D.shape[1]          # distinct
    # 30 lines through the origin of R^2 cut it into at most 60 regions (one is all-zero)
    assert pr.n_patterns_ <= 59
    # each pattern is the sign pattern of its direction
    assert np.array_equal((pr.X @ pr.directions) >= 0, D)
    pr2 = TwoLayerReLU(X, y, 1.0, n_patterns=200, bias=False, random_state=0)
    assert np.array_equal(pr.Dmat, pr2.Dmat)


def test_bias_column_and_explicit_patterns():
    X, y = make_data(20, 3, seed=1)
    pr = TwoLayerReLU(X, y, 1.0, bias=False, n_patterns=5, random_state=0)
    assert pr.dim == 3
    pb = TwoLayerReLU(X, y, 1.0, n_patterns=5, random_state=0)
    assert pb.dim == 4 and np.all(pb.X[:, -1] == 1)
    D = np.zeros((20, 3), dtype=int)
    D[:5, 0] = 1
    D[:5, 1] = 1            # duplicate
    D[5:, 2] = 1
    pe = TwoLayerReLU(X, y, 1.0, patterns=D)
    assert pe.n_patterns_ == 2


def test_network_identities():
    """(beta/2)(||u||^2 + a^2) = beta ||v|| and relu(Xu) a = D X v where the cone holds."""
    X, y = make_data(25, 2, seed=2)
    pr = TwoLayerReLU(X, y, 0.7, n_patterns=6, random_state=0)
    rng = np.random.default_rng(0)
    # feasible V: each v_i a positive multiple of its generating direction satisfies its cone
    V = pr.directions * rng.uniform(0.5, 2, pr.n_patterns_)
    W = np.zeros_like(V)
    W[:, 0] = 2 * pr.directions[:, 0]
    assert pr.cone_violation(V, W) == 0
    U, a = pr.network_from(V, W)
    assert U.shape[1] == pr.n_patterns_ + 1
    assert np.allclose(np.maximum(pr.X @ U, 0) @ a, pr.predict_convex(V, W), atol=1e-12)
    assert pr.network_objective(U, a) == pytest.approx(pr.objective(V, W), rel=1e-12)


def test_beta_max_and_losses():
    X, y = make_data(25, 2, seed=3, kind="binary")
    pr = TwoLayerReLU(X, y, 0.1, n_patterns=4, loss="logistic", random_state=0)
    z = np.linspace(-2, 2, 25)
    assert pr.loss_value(z) == pytest.approx(np.sum(np.log1p(np.exp(2 * z)) - 2 * y * z))
    h = 1e-6
    num = np.array([(pr.loss_value(z + h * e) - pr.loss_value(z - h * e)) / (2 * h) for e in np.eye(25)])
    assert np.allclose(num, pr.loss_grad(z), atol=1e-6)
    g0 = pr.loss_grad(np.zeros(25))
    assert pr.beta_max() == pytest.approx(max(np.linalg.norm(pr.X.T @ (pr.Dmat[:, i] * g0))
                                              for i in range(pr.n_patterns_)))


def test_with_beta_and_targets_share_patterns():
    X, y = make_data(20, 2, seed=4)
    pr = TwoLayerReLU(X, y, 1.0, n_patterns=5, random_state=0)
    pb = pr.with_beta(2.0)
    assert pb.beta == 2.0 and pr.beta == 1.0 and pb.Dmat is pr.Dmat and pb._cache is pr._cache
    pt = pr.with_targets((y > 0).astype(float), loss="logistic")
    assert pt.loss == "logistic" and pt.Dmat is pr.Dmat
    with pytest.raises(ValueError, match="y"):
        pr.with_targets(y, loss="logistic")
    with pytest.raises(ValueError, match="y"):
        pr.with_targets(y[:3])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"X": np.ones((3,))}, ValueError, "X"),
    ({"X": np.array([[1.0, np.nan]] * 4)}, ValueError, "X"),
    ({"X": np.array([["a", "b"]] * 4)}, TypeError, "X"),
    ({"y": np.ones(3)}, ValueError, "y"),
    ({"y": np.array([np.inf, 1, 1, 1])}, ValueError, "y"),
    ({"X": np.arange(8.0).reshape(4, 2) * 1e160}, ValueError, "X has entries beyond"),
    ({"y": np.array([1e160, 1, 1, 1])}, ValueError, "y has entries beyond"),
    ({"beta": -1.0}, ValueError, "beta"),
    ({"beta": "x"}, TypeError, "beta"),
    ({"n_patterns": 0}, ValueError, "n_patterns"),
    ({"n_patterns": 2.5}, TypeError, "n_patterns"),
    ({"loss": "hinge"}, ValueError, "loss"),
    ({"loss": "logistic"}, ValueError, "y"),
    ({"bias": 1}, TypeError, "bias"),
    ({"adversarial_eps": -0.1}, ValueError, "adversarial_eps"),
    ({"patterns": np.ones((2, 2))}, ValueError, "patterns"),
    ({"patterns": np.full((4, 2), 2)}, ValueError, "patterns"),
    ({"patterns": np.zeros((4, 2))}, ValueError, "patterns"),
    ({"random_state": "seed"}, TypeError, "random_state"),
])
def test_bad_inputs(kwargs, exc, match):
    args = {"X": np.arange(8.0).reshape(4, 2), "y": np.array([1.0, -1, 1, -1]), "beta": 1.0}
    args.update(kwargs)
    X, y, beta = args.pop("X"), args.pop("y"), args.pop("beta")
    with pytest.raises(exc, match=match):
        TwoLayerReLU(X, y, beta, **args)


def test_degenerate_X_single_pattern():
    pr = TwoLayerReLU(np.zeros((5, 2)), np.ones(5), 1.0, bias=False, n_patterns=10, random_state=0)
    assert pr.n_patterns_ == 1 and np.all(pr.Dmat == 1)


@settings(max_examples=40, deadline=None)
@given(X=arrays(np.float64, st.tuples(st.integers(2, 8), st.integers(1, 3)),
                elements=st.floats(-1e3, 1e3, allow_nan=False)),
       beta=st.floats(0, 10), P=st.integers(1, 6), seed=st.integers(0, 100),
       dtype=st.sampled_from([np.float64, np.float32, "admm-rbcd"]))
def test_fuzz_problem_and_solve(X, beta, P, seed, dtype):
    """Any finite input builds a problem (or raises a clear ValueError) and ADMM returns finite output,
    in either precision of the iteration, and so does the factorisation-free ADMM-RBCD."""
    import warnings

    import numopt
    y = np.where(np.arange(X.shape[0]) % 2 == 0, 1.0, -1.0)
    pr = TwoLayerReLU(X, y, beta, n_patterns=P, random_state=seed)
    assert 1 <= pr.n_patterns_ <= P
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "admm-rbcd":                      # the factorisation-free method
            res = numopt.minimize(pr, method="admm-rbcd", maxiter=50, random_state=seed)
            assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and res.n_block_steps >= 0
            return
        res = numopt.minimize(pr, method="admm", maxiter=50, dtype=dtype,
                              **({"rtol": 1e-4} if dtype == np.float32 else {}))
    assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun) and res.dtype == np.dtype(dtype).name
