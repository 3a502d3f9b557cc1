"""Input validation of the BCD problems and options; hypothesis fuzzing of the entry points."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import numopt
from numopt.problems import LabelPropagation, LeastSquares, Logistic, MultinomialLogistic, Quadratic

A = np.arange(12.0).reshape(4, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: LeastSquares(A, np.ones(3)), "b must have length 4"),
    (lambda: LeastSquares(A, np.ones(4), l1=-1), "l1 must be >= 0"),
    (lambda: LeastSquares(A, np.ones(4), l2=np.nan), "l2 must be finite"),
    (lambda: LeastSquares(np.ones(4), np.ones(4)), "A must have 2"),
    (lambda: LeastSquares(np.full((4, 3), np.inf), np.ones(4)), "A contains infinite"),
    (lambda: LeastSquares(A, [1, 2, np.nan, 4]), "b contains NaN"),
    (lambda: Logistic(A, [0, 1, 2, 1]), "labels"),
    (lambda: Logistic(A, [1, 1, 1]), "y must have length 4"),
    (lambda: MultinomialLogistic(A, [0, 1, -1, 1]), ">= 0"),
    (lambda: MultinomialLogistic(A, [0, 0, 0, 0]), "at least 2 classes"),
    (lambda: MultinomialLogistic(A, np.ones((4, 2))), "one-hot"),
    (lambda: Quadratic(np.array([[1.0, 2.0], [0.0, 1.0]]), np.ones(2)), "symmetric"),
    (lambda: Quadratic(np.array([[1.0, 0.0], [0.0, -1.0]]), np.ones(2)), "positive diagonal"),
    (lambda: Quadratic(np.eye(2), np.ones(3)), "c must have length 2"),
    (lambda: LabelPropagation(sp.eye(3) - sp.eye(3), np.ones(3), np.array([1, 0, 0])), "boolean"),
    (lambda: LabelPropagation(-sp.csr_matrix(np.ones((3, 3))), np.ones(3), np.array([True, False, False])),
     "nonnegative"),
    (lambda: LabelPropagation(sp.csr_matrix(np.ones((3, 3))), np.ones(3), np.array([False] * 3)), "at least one"),
    (lambda: LabelPropagation(sp.csr_matrix(np.ones((3, 3))), np.ones(2), np.array([True, False, False])),
     "y must have length"),
])
def test_bad_problems_raise(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_complex_and_object_inputs_raise():
    with pytest.raises(TypeError):
        LeastSquares(A.astype(complex), np.ones(4))
    with pytest.raises(TypeError):
        LeastSquares(A, np.array(["a", "b", "c", "d"], dtype=object))


@pytest.mark.parametrize("opts, match", [
    (dict(selection="best"), "selection"), (dict(partition="x"), "partition"), (dict(update="magic"), "update"),
    (dict(block_size=0), "block_size"), (dict(tol=-1.0), "tol"), (dict(maxiter=1.5), "maxiter"),
    (dict(update="tree-newton"), "smooth"), (dict(partition="tree"), "Quadratic"), (dict(foo=1), "unknown"),
    (dict(update="newton"), "smooth"),
])
def test_bad_options_raise(opts, match):
    pb = LeastSquares(A, np.ones(4), l1=0.1)
    with pytest.raises((ValueError, TypeError), match=match):
        numopt.minimize(pb, method="bcd", **opts)


def test_bad_x0_raises():
    with pytest.raises(ValueError, match="x0"):
        numopt.minimize(LeastSquares(A, np.ones(4)), np.ones(5), method="bcd")
    with pytest.raises(ValueError, match="x0 must be >= 0"):
        numopt.minimize(LeastSquares(A, np.ones(4), nonneg=True), -np.ones(3), method="bcd")
    with pytest.raises(ValueError, match="forest"):
        numopt.minimize(Quadratic(np.eye(3), np.ones(3)), method="bcd", update="tree-newton", partition="order")


def test_show_options_lists_bcd():
    text = numopt.show_options("bcd", disp=False)
    for opt in ("selection", "partition", "block_size", "update", "tol", "maxiter", "verbose", "progress"):
        assert opt in text


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 8), p=st.integers(1, 8), l1=st.floats(0, 50), l2=st.floats(0, 5), data=st.data(),
       nonneg=st.booleans(), sparse=st.booleans())
def test_fuzz_least_squares(n, p, l1, l2, data, nonneg, sparse):
    Ad = data.draw(arrays(np.float64, (n, p), elements=finite))
    b = data.draw(arrays(np.float64, (n,), elements=finite))
    pb = LeastSquares(sp.csc_matrix(Ad) if sparse else Ad, b, l1=l1, l2=l2, nonneg=nonneg)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = numopt.minimize(pb, method="bcd", maxiter=200)
    assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    assert res.fun <= pb.value(np.zeros(p)) + 1e-9 * max(1.0, abs(pb.value(np.zeros(p))))
    if nonneg:
        assert np.all(res.x >= 0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 8), p=st.integers(1, 6), l1=st.floats(0.01, 10), data=st.data(),
       sel=st.sampled_from(["gs", "gsl", "gsd", "cyclic", "random"]))
def test_fuzz_logistic(n, p, l1, data, sel):
    Ad = data.draw(arrays(np.float64, (n, p), elements=st.floats(-10, 10)))
    y = data.draw(arrays(np.float64, (n,), elements=st.sampled_from([-1.0, 1.0])))
    pb = Logistic(Ad, y, l1=l1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = numopt.minimize(pb, method="bcd", maxiter=100)
        res2 = numopt.minimize(pb, method="bcd", maxiter=100, selection=sel, update="pg", block_size=2)
    f0 = pb.value(np.zeros(p))
    assert res.fun <= f0 + 1e-9 and res2.fun <= f0 + 1e-9


@settings(max_examples=25, deadline=None)
@given(p=st.integers(1, 10), data=st.data())
def test_fuzz_quadratic(p, data):
    M = data.draw(arrays(np.float64, (p + 2, p), elements=st.floats(-5, 5)))
    c = data.draw(arrays(np.float64, (p,), elements=st.floats(-5, 5)))
    Q = M.T @ M + np.eye(p)
    res = numopt.minimize(Quadratic(Q, c), method="bcd", tol=1e-10, maxiter=20_000)
    np.testing.assert_allclose(res.x, np.linalg.solve(Q, c), atol=1e-6 * max(1, np.abs(c).max()))
