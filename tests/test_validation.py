"""The shared input checks name the argument and the offending value."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numopt import _validation as v


def test_as_float_array_dtype_policy():
    assert v.as_float_array([1, 2], "x").dtype == np.float64
    assert v.as_float_array(np.ones(2, np.float32), "x").dtype == np.float32
    assert v.as_float_array(np.ones(2, np.float16), "x").dtype == np.float64
    with pytest.raises(TypeError, match="x must hold real"):
        v.as_float_array(np.ones(2, complex), "x")
    with pytest.raises(TypeError, match="x (must be numeric|could not be converted)"):
        v.as_float_array([[1], [1, 2]], "x")
    with pytest.raises(TypeError, match="dense"):
        v.as_float_array(sp.eye(2), "x")


def test_as_float_array_shape_and_finiteness():
    with pytest.raises(ValueError, match=r"y must have shape \(3, \*\); got \(2, 2\)"):
        v.as_float_array(np.ones((2, 2)), "y", shape=(3, None))
    with pytest.raises(ValueError, match="y must have 1 dimension"):
        v.as_float_array(np.ones((2, 2)), "y", ndim=1)
    with pytest.raises(ValueError, match="y contains NaN"):
        v.as_float_array([np.nan], "y")
    assert np.isnan(v.as_float_array([np.nan], "y", allow_nan=True)[0])


def test_as_matrix_sparse_canonical():
    A = sp.coo_matrix((np.array([1.0, 2.0]), (np.array([0, 0]), np.array([1, 1]))), shape=(2, 2))
    B = v.as_matrix(A, "A", sparse_format="csr")
    assert B.format == "csr" and B.nnz == 1 and B[0, 1] == 3.0 and B.indices.dtype == np.int32
    with pytest.raises(ValueError, match="A must be square"):
        v.as_matrix(np.ones((2, 3)), "A", square=True)
    with pytest.raises(ValueError, match="A contains NaN"):
        v.as_matrix(sp.csr_matrix(np.array([[np.nan]])), "A")


def test_scalar_checks():
    assert v.check_positive(2, "reg") == 2.0
    for bad, exc in [(0, ValueError), (-1, ValueError), (np.nan, ValueError), ("a", TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="reg"):
            v.check_positive(bad, "reg")
    assert v.check_int(np.int64(3), "k") == 3
    with pytest.raises(TypeError, match="k must be an integer"):
        v.check_int(3.0, "k")
    with pytest.raises(ValueError, match="k must be >= 1"):
        v.check_int(0, "k", min_value=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        v.check_choice("x", "mode", ("a", "b"))
    with pytest.raises(TypeError, match="flag"):
        v.check_bool(1, "flag")


def test_indices_and_histograms():
    np.testing.assert_array_equal(v.check_indices([0, 2], "rows", 3), [0, 2])
    with pytest.raises(ValueError, match="rows has index 3 out of range"):
        v.check_indices([0, 3], "rows", 3)
    with pytest.raises(ValueError, match="rows has index -1"):
        v.check_indices([-1], "rows", 3)
    with pytest.raises(TypeError, match="rows must hold integers"):
        v.check_indices([0.5], "rows", 3)
    with pytest.raises(ValueError, match="a must be nonnegative"):
        v.check_probability_vector([0.5, -0.1], "a")
    with pytest.raises(ValueError, match="a must have length 3"):
        v.check_probability_vector([0.5, 0.5], "a", n=3)
    assert isinstance(v.check_random_state(3), np.random.Generator)
    with pytest.raises(TypeError, match="random_state"):
        v.check_random_state("x")


@settings(max_examples=50, deadline=None)
@given(st.one_of(
    hnp.arrays(dtype=st.sampled_from([np.float32, np.float64]), shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
               elements=st.floats(width=32)),
    hnp.arrays(dtype=np.int32, shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))))
def test_fuzz_as_float_array(arr):
    try:
        out = v.as_float_array(arr, "z")
    except ValueError as exc:
        assert "z" in str(exc)
        return
    assert out.dtype in (np.float32, np.float64) and np.all(np.isfinite(out))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad, message", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_check_finite_min_max_fast_path(dtype, bad, message):
    """The fast path (min and max both finite) must still catch a single bad entry anywhere, and pass clean data."""
    from numopt._validation import check_finite

    x = np.linspace(-1e30, 1e30, 10_001).astype(dtype)
    assert check_finite(x, "x") is x
    for pos in (0, 5_000, 10_000):
        y = x.copy()
        y[pos] = bad
        with pytest.raises(ValueError, match=f"x contains {message}"):
            check_finite(y, "x")
    assert check_finite(y, "x", allow_nan=True, allow_inf=True) is y
