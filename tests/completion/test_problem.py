"""MatrixCompletion: input semantics and validation."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from numopt.problems import MatrixCompletion


def test_coo_builds_csr_and_csc_copies():
    rows = np.array([2, 0, 1, 0])
    cols = np.array([1, 2, 0, 0])
    vals = np.array([4.0, 2.0, 3.0, 1.0])
    P = MatrixCompletion(rows, cols, vals, (3, 3), rank=1)
    dense = np.full((3, 3), np.nan)
    dense[rows, cols] = vals
    np.testing.assert_array_equal(P.to_csr().toarray(), np.nan_to_num(dense))
    assert P.nnz == 4 and P.dtype == np.float64
    np.testing.assert_array_equal(P.row_counts, [2, 1, 1])
    np.testing.assert_array_equal(P.col_counts, [2, 1, 1])
    # the CSC copy holds the same entries
    csc = sp.csc_array((P.csc_values, P.csc_indices, P.csc_indptr), shape=(3, 3))
    np.testing.assert_array_equal(csc.toarray(), P.to_csr().toarray())
    np.testing.assert_array_equal(P.csr_values[P._csr_to_csc], P.csc_values)


def test_dense_nan_and_coo_are_identical():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 5))
    X[rng.random((6, 5)) < 0.4] = np.nan
    A = MatrixCompletion.from_dense(X, rank=2)
    r, c = np.nonzero(~np.isnan(X))
    B = MatrixCompletion(r[::-1], c[::-1], X[r, c][::-1], X.shape, rank=2)   # any order
    for name in ("csr_indptr", "csr_indices", "csr_values", "csc_indptr", "csc_indices", "csc_values"):
        np.testing.assert_array_equal(getattr(A, name), getattr(B, name))


def test_sparse_mask_explicit_zero_is_observed():
    """A masked entry that X does not store (or stores as 0) is an observed 0; zeros are never missing."""
    X = sp.csr_array(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    mask = np.array([[1, 1, 0], [0, 1, 1]], dtype=bool)
    P = MatrixCompletion.from_sparse(X, mask, rank=1)
    assert P.nnz == 4
    got = dict(zip(zip(P.rows.tolist(), P.cols.tolist()), P.values.tolist()))
    assert got == {(0, 0): 1.0, (0, 1): 0.0, (1, 1): 3.0, (1, 2): 0.0}
    # entry (0, 2) = 2 is outside the mask: ignored
    smask = sp.coo_array(mask.astype(float))
    Q = MatrixCompletion.from_sparse(X, smask, rank=1)
    np.testing.assert_array_equal(Q.csr_values, P.csr_values)
    # an explicitly stored zero in X under the mask, and a mask entry stored as 0 (not observed)
    Xe = sp.csr_array((np.array([0.0, 5.0]), np.array([0, 1]), np.array([0, 1, 2])), shape=(2, 3))
    me = sp.csr_array((np.array([1.0, 0.0, 1.0]), np.array([0, 2, 1]), np.array([0, 2, 3])), shape=(2, 3))
    R = MatrixCompletion.from_sparse(Xe, me, rank=1)
    assert R.nnz == 2
    np.testing.assert_array_equal(R.csr_values, [0.0, 5.0])


def test_sparse_without_mask_raises():
    with pytest.raises(ValueError, match="explicit mask"):
        MatrixCompletion.from_sparse(sp.eye(3, format="csr"), None, rank=1)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(rows=[0, 3]), ValueError, "rows has index 3 out of range"),
    (dict(cols=[-1, 0]), ValueError, "cols has index -1"),
    (dict(values=[1.0, np.nan]), ValueError, "values contains NaN"),
    (dict(values=[1.0, np.inf]), ValueError, "values contains infinite"),
    (dict(rows=[0, 0], cols=[1, 1]), ValueError, r"duplicate observed entries: \(row 0, col 1\)"),
    (dict(rank=3), ValueError, "rank must be < min"),
    (dict(rank=0), ValueError, "rank must be >= 1"),
    (dict(rank=1.5), TypeError, "rank must be an integer"),
    (dict(reg=-0.1), ValueError, "reg must be >= 0"),
    (dict(shape=(3,)), ValueError, "shape must be a pair"),
    (dict(shape=(0, 3)), ValueError, r"shape\[0\] must be >= 1"),
    (dict(values=[1.0]), ValueError, "same length"),
    (dict(values=["a", "b"]), TypeError, "values must hold real numbers"),
    (dict(rows=[0.5, 1]), TypeError, "rows must hold integers"),
    (dict(values=[]), ValueError, "at least 1"),
    (dict(truth=(np.ones((3, 1)), np.ones((2, 1)))), ValueError, "truth factors must have shapes"),
])
def test_bad_inputs_raise(kwargs, exc, match):
    args = dict(rows=[0, 1], cols=[1, 2], values=[1.0, 2.0], shape=(3, 3), rank=2, reg=0.0)
    args.update(kwargs)
    if "values" in kwargs and kwargs["values"] == []:
        args["rows"], args["cols"] = [], []
    truth = args.pop("truth", None)
    with pytest.raises(exc, match=match):
        MatrixCompletion(args["rows"], args["cols"], args["values"], args["shape"], args["rank"], args["reg"],
                         truth=truth)


def test_dense_with_no_observation_raises():
    with pytest.raises(ValueError, match="no observed"):
        MatrixCompletion.from_dense(np.full((3, 3), np.nan), rank=1)


def test_float32_is_kept():
    P = MatrixCompletion([0, 1], [1, 0], np.array([1, 2], np.float32), (2, 2), rank=1)
    assert P.dtype == np.float32 and P.csc_values.dtype == np.float32


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 6), n=st.integers(1, 6), rank=st.integers(-1, 6),
       entries=st.lists(st.tuples(st.integers(-1, 6), st.integers(-1, 6),
                                  st.one_of(st.floats(-1e3, 1e3), st.just(float("nan")))), max_size=12))
def test_fuzz_constructor_raises_cleanly_or_builds(m, n, rank, entries):
    rows = [e[0] for e in entries]
    cols = [e[1] for e in entries]
    vals = [e[2] for e in entries]
    try:
        P = MatrixCompletion(np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), vals, (m, n), rank)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    assert P.nnz == len(set(zip(rows, cols))) == len(entries)
    assert 1 <= P.rank < min(m, n)
    assert np.all(np.isfinite(P.csr_values))
