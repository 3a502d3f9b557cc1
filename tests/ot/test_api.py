"""numopt.ot.sinkhorn / sinkhorn2 keep POT's conventions; bad inputs raise clear errors; fuzzing."""
import warnings

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numopt
import numopt.ot as not_
from numopt.exceptions import ConvergenceWarning
from numopt.problems import OptimalTransport

from _ot_cases import random_problem

METHODS = ["sns", "sinkhorn_log", "sinkhorn"]


@pytest.mark.parametrize("method", METHODS)
def test_log_keys_and_uniform_default(method):
    n = 20
    rng = np.random.RandomState(0)
    x = rng.randn(n, 2)
    M = ot.dist(x, x)
    G, log = not_.sinkhorn([], [], M, 1.0, method=method, log=True, stopThr=1e-10, numItermax=100000)
    for key in ("niter", "err", "u", "v", "log_u", "log_v", "marginal_error", "nit_sinkhorn", "nit_newton"):
        assert key in log
    np.testing.assert_allclose(G.sum(0), np.ones(n) / n, atol=1e-10)
    np.testing.assert_allclose(G, log["u"][:, None] * np.exp(-M / 1.0) * log["v"][None, :], rtol=1e-10)
    Gp, logp = ot.sinkhorn([], [], M, 1.0, method="sinkhorn_log", log=True, stopThr=1e-12, numItermax=100000)
    np.testing.assert_allclose(G, Gp, atol=1e-9)
    assert log["err"][-1] <= 1e-10


def test_unknown_method_and_warnings():
    a, b, M = random_problem(10, 10)
    with pytest.raises(ValueError, match="Unknown method"):
        not_.sinkhorn(a, b, M, 1.0, method="greenkhornish")
    for method in METHODS:
        with pytest.warns(UserWarning):
            not_.sinkhorn(a, b, M, 1.0, method=method, numItermax=1, stopThr=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            not_.sinkhorn(a, b, M, 1.0, method=method, numItermax=1, stopThr=0, warn=False)
    with pytest.raises(ValueError, match="unknown option"):
        not_.sinkhorn(a, b, M, 1.0, method="sns", bogus=3)


@pytest.mark.parametrize("method", METHODS)
def test_dtype_kept(method):
    a, b, M = random_problem(12, 10, seed=1)
    G32 = not_.sinkhorn(a.astype(np.float32), b.astype(np.float32), M.astype(np.float32), 0.5, method=method)
    assert G32.dtype == np.float32
    assert not_.sinkhorn2([], [], M.astype(np.float32), 0.5, method=method).dtype == np.float32
    assert not_.sinkhorn(a, b, M, 0.5, method=method).dtype == np.float64


def test_warmstart_from_emd_duals():
    m, n = 10, 20
    rng = np.random.RandomState(42)
    x, y = rng.randn(m, 2), rng.randn(n, 2)
    a, b = ot.utils.unif(m), ot.utils.unif(n)
    M = ot.dist(x, y)
    _, lg = ot.emd(a, b, M, log=True)
    warm = (lg["u"], lg["v"])
    for method in METHODS:
        G_cold = not_.sinkhorn(a, b, M, 1.0, method=method, stopThr=1e-11)
        G_warm, log = not_.sinkhorn(a, b, M, 1.0, method=method, stopThr=1e-11, warmstart=warm, log=True)
        np.testing.assert_allclose(G_warm, G_cold, atol=1e-5)
        # our own (log_u, log_v) restart converges immediately
        _, log2 = not_.sinkhorn(a, b, M, 1.0, method=method, stopThr=1e-10, log=True,
                                warmstart=(log["log_u"], log["log_v"]))
        assert log2["niter"] == 0
    with pytest.raises(ValueError, match="warmstart"):
        not_.sinkhorn(a, b, M, 1.0, warmstart=(np.zeros(3), np.zeros(n)))
    with pytest.raises(TypeError, match="warmstart"):
        not_.sinkhorn(a, b, M, 1.0, warmstart=np.zeros(m))


def test_warmstart_from_pot_log_potentials_with_zeros():
    a, b, M = random_problem(15, 12, seed=2, zeros=True)
    _, lp = ot.sinkhorn(a, b, M, 0.1, method="sinkhorn_log", log=True, stopThr=1e-12, numItermax=10000)
    assert np.isneginf(lp["log_u"][a == 0]).all()
    G, log = not_.sinkhorn(a, b, M, 0.1, stopThr=1e-10, warmstart=(lp["log_u"], lp["log_v"]), log=True)
    assert log["niter"] <= 1
    np.testing.assert_allclose(G, ot.sinkhorn(a, b, M, 0.1, method="sinkhorn_log", stopThr=1e-12), atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_multiple_b(method):
    n = 10
    rng = np.random.RandomState(0)
    x = rng.randn(n, 2)
    M = ot.dist(x, x)
    u = ot.utils.unif(n)
    b = rng.rand(n, 3)
    b /= b.sum(0)
    loss, log = not_.sinkhorn(u, b, M, 0.1, method=method, log=True, stopThr=1e-10, numItermax=10000)
    assert loss.shape == (3,) and len(log["log_u"]) == 3
    each = [not_.sinkhorn2(u, b[:, k], M, 0.1, method=method, stopThr=1e-10, numItermax=10000) for k in range(3)]
    np.testing.assert_allclose(loss, each, atol=1e-4)
    np.testing.assert_allclose(not_.sinkhorn2(u, b, M, 0.1, method=method, stopThr=1e-10, numItermax=10000), each,
                               atol=1e-12)
    pot = ot.sinkhorn2(u, b, M, 0.1, method="sinkhorn_log", stopThr=1e-12, numItermax=10000)
    np.testing.assert_allclose(loss, pot, atol=1e-8)


def test_sinkhorn2_is_the_transport_cost_without_entropy():
    a, b, M = random_problem(25, 20, seed=3)
    loss, log = not_.sinkhorn2(a, b, M, 0.05, log=True, stopThr=1e-11)
    G = not_.sinkhorn(a, b, M, 0.05, stopThr=1e-11)
    assert loss == pytest.approx(np.sum(G * M), rel=1e-10)
    assert loss == pytest.approx(ot.sinkhorn2(a, b, M, 0.05, method="sinkhorn_log", stopThr=1e-13,
                                              numItermax=100000), rel=1e-8)


def test_kernel_sinkhorn_reports_underflow_instead_of_nan():
    a, b, M = random_problem(30, 30, seed=4)
    with pytest.warns(UserWarning, match="sinkhorn_log"):
        res = numopt.minimize(OptimalTransport(a, b, M * 1000, 1e-3), method="sinkhorn", maxiter=50)
    assert res.status == 3 and not res.success
    assert np.all(np.isfinite(res.plan)) and np.isfinite(res.marginal_error)


@pytest.mark.parametrize("bad,match", [
    (dict(a=-np.ones(4) / 4), "a must be nonnegative"),
    (dict(b=np.ones(5)), "same total mass"),
    (dict(a=np.ones(3) / 3), "a must have length 4"),
    (dict(M=np.ones((4, 4))), "b must have length 4"),
    (dict(M=np.full((4, 5), np.nan)), "M contains NaN"),
    (dict(M=np.full((4, 5), np.inf)), "M contains infinite"),
    (dict(reg=0.0), "reg must be > 0"),
    (dict(reg=-1.0), "reg must be > 0"),
    (dict(reg=np.nan), "reg must be finite"),
    (dict(reg=1e-320), "too small"),
    (dict(a=np.zeros(4)), "positive total mass"),
    (dict(M=np.ones(5)), "M must have 2"),
    (dict(M=np.ones((0, 5))), "non-empty"),
])
def test_bad_inputs_raise(bad, match):
    kw = dict(a=np.ones(4) / 4, b=np.ones(5) / 5, M=np.ones((4, 5)), reg=0.1)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        not_.sinkhorn(kw["a"], kw["b"], kw["M"], kw["reg"])
    with pytest.raises(ValueError, match=match):
        OptimalTransport(kw["a"], kw["b"], kw["M"], kw["reg"])


def test_bad_types_raise():
    with pytest.raises(TypeError, match="reg"):
        OptimalTransport([], [], np.ones((3, 3)), "0.1")
    with pytest.raises(TypeError, match="M"):
        OptimalTransport([], [], np.array([["a", "b"]]), 0.1)
    with pytest.raises(TypeError):
        numopt.minimize(OptimalTransport([], [], np.ones((3, 3)), 0.1), method="sns", maxiter=1.5)


_floats = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 6), seed=st.integers(0, 2**16), reg=st.floats(1e-4, 10.0),
       zero_frac=st.floats(0.0, 0.6), method=st.sampled_from(METHODS))
def test_fuzz_front_door_never_nan(n, m, seed, reg, zero_frac, method):
    rng = np.random.default_rng(seed)
    a = rng.random(n) * (rng.random(n) >= zero_frac)
    b = rng.random(m) * (rng.random(m) >= zero_frac)
    if a.sum() == 0:
        a[0] = 1.0
    if b.sum() == 0:
        b[-1] = 1.0
    a, b = a / a.sum(), b / b.sum()
    M = rng.random((n, m)) * rng.choice([1e-3, 1.0, 100.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        G, log = not_.sinkhorn(a, b, M, reg, method=method, log=True, numItermax=300)
    assert G.shape == (n, m) and np.all(np.isfinite(G)) and np.all(G >= 0)
    assert np.isfinite(log["marginal_error"])
    if log["result"].success:
        np.testing.assert_allclose(G.sum(1), a, atol=1e-8)
        np.testing.assert_allclose(G.sum(0), b, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.one_of(_floats, st.just(np.nan), st.just(-1.0)), min_size=0, max_size=4),
       b=st.lists(st.one_of(_floats, st.just(np.inf)), min_size=0, max_size=4),
       shape=st.tuples(st.integers(0, 4), st.integers(0, 4)),
       reg=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2)))
def test_fuzz_bad_inputs_give_clean_errors(a, b, shape, reg):
    M = np.ones(shape)
    try:
        G = not_.sinkhorn(a, b, M, reg, numItermax=50, warn=False)
    except (ValueError, TypeError) as exc:
        assert str(exc)
    else:
        assert np.all(np.isfinite(G))

def test_kernel_sinkhorn_success_is_about_the_returned_plan():
    # hypothesis found it: the kernel iteration met tol while exp(-M/reg) had underflowed in a column;
    # the plan recomputed from its potentials missed tol by far, yet success was reported
    rng = np.random.default_rng(0)
    a = rng.random(1) * (rng.random(1) >= 0)
    b = rng.random(2) * (rng.random(2) >= 0)
    a, b = a / a.sum(), b / b.sum()
    M = rng.random((1, 2)) * rng.choice([1e-3, 1.0, 100.0])
    with pytest.warns(ConvergenceWarning):
        res = numopt.minimize(OptimalTransport(a, b, M, 1e-3), method="sinkhorn", tol=1e-9, maxiter=300)
    P = res.plan
    err = np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum()
    assert err == pytest.approx(res.marginal_error, rel=1e-9) and err > 1e-9
    assert not res.success and res.status == 3 and "underflowed" in res.message
    # the log-domain solvers meet it
    for method in ("sinkhorn_log", "sns"):
        ref = numopt.minimize(OptimalTransport(a, b, M, 1e-3), method=method, tol=1e-9)
        assert ref.success and ref.marginal_error <= 1e-9
