"""The worker-side tasks of the Dask backend against NumPy/SciPy references (no cluster needed)."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("dask")

from numopt.completion._dask import _bias_numerators, _center_block, _matmul_task, _part, _solve_task  # noqa: E402
from numopt.completion._dask_data import _assemble, _check_partition, _cut, read_partition  # noqa: E402


def _triplets(m=13, n=9, p=0.4, seed=0):
    rng = np.random.default_rng(seed)
    r, c = np.nonzero(rng.random((m, n)) < p)
    perm = rng.permutation(r.size)
    return r[perm], c[perm], rng.standard_normal(r.size)


def _blocks(r, c, v, m, n, bounds, by_row, nparts=3):
    parts = [(r[i::nparts], c[i::nparts], v[i::nparts]) for i in range(nparts)]
    checked = [_check_partition(t, i, "", (m, n), np.float64) for i, t in enumerate(parts)]
    cuts = [_cut(t, bounds, by_row, i) for i, t in enumerate(checked)]
    return [_assemble([cu[b] for cu in cuts], int(bounds[b]), int(bounds[b + 1]), n if by_row else m, by_row,
                      [""] * nparts) for b in range(len(bounds) - 1)]


@pytest.mark.parametrize("by_row", [True, False])
def test_blocks_equal_scipy_csr_csc(by_row):
    m, n = 13, 9
    r, c, v = _triplets(m, n)
    bounds = np.array([0, 4, 5, 9, 13]) if by_row else np.array([0, 3, 9])
    blocks = _blocks(r, c, v, m, n, bounds, by_row)
    A = sp.csr_array((v, (r, c)), shape=(m, n))
    if not by_row:
        A = sp.csr_array(A.T)
    A.sort_indices()
    for b, blk in enumerate(blocks):
        ref = A[bounds[b]:bounds[b + 1]]
        np.testing.assert_array_equal(blk.indptr, ref.indptr)
        np.testing.assert_array_equal(blk.indices, ref.indices)
        np.testing.assert_array_equal(blk.values, ref.data)
        assert blk.offset == bounds[b] and blk.size == bounds[b + 1] - bounds[b]


def test_matmul_center_bias_and_split_tasks():
    m, n = 13, 9
    r, c, v = _triplets(m, n, seed=1)
    bounds = np.array([0, 6, 13])
    blocks = _blocks(r, c, v, m, n, bounds, True)
    A = sp.csr_array((v, (r, c)), shape=(m, n)).toarray()
    F = np.random.default_rng(2).standard_normal((n, 4))
    got = np.vstack([_matmul_task(b, F, 2.5, None) for b in blocks])
    np.testing.assert_allclose(got, 2.5 * A @ F, rtol=1e-13, atol=1e-13)
    # centring: value - mean - bu[i] - bv[j]
    bu, bv = np.arange(m) / 7.0, -np.arange(n) / 5.0
    cen = [_center_block(b, 0.3, bu[b.offset:b.offset + b.size], bv, np.float64, True) for b in blocks]
    ref = {(i, j): x - (0.3 + bu[i] + bv[j]) for i, j, x in zip(r, c, v)}    # single-machine order
    for b in cen:
        rows = np.repeat(np.arange(b.offset, b.offset + b.size), np.diff(b.indptr))
        for i, j, x in zip(rows, b.indices, b.values):
            assert x == ref[(i, j)]          # same order of additions: bitwise
    cb = np.array([0, 4, 9])
    for b in _blocks(r, c, v, m, n, cb, False):
        b = _center_block(b, 0.3, bv[b.offset:b.offset + b.size], bu, np.float64, False)
        cols = np.repeat(np.arange(b.offset, b.offset + b.size), np.diff(b.indptr))
        for j, i, x in zip(cols, b.indices, b.values):
            assert x == ref[(i, j)]
    num = np.concatenate([_bias_numerators(b, 0.3, bv) for b in blocks])
    np.testing.assert_allclose(num, np.bincount(r, weights=v - 0.3 - bv[c], minlength=m), atol=1e-13)
    # split parts: the union over parts is the block, the parts are disjoint
    parts = [_part(blocks[1], (5, 3, p, n, True)) for p in range(3)]
    assert sum(ip[-1] for ip, _, _ in parts) == blocks[1].indptr[-1]
    np.testing.assert_array_equal(sum(np.diff(ip) for ip, _, _ in parts), np.diff(blocks[1].indptr))


def test_solve_task_matches_lstsq_and_residual():
    m, n, k = 13, 9, 2
    r, c, v = _triplets(m, n, p=0.7, seed=3)
    blocks = _blocks(r, c, v, m, n, np.array([0, 7, 13]), True)
    V = np.random.default_rng(4).standard_normal((n, k))
    kw = dict(reg=0.0, reg_scaling="none", solver="cholesky", inner_tol=1e-12, cg_steps=3, sketch_size=None,
              sketch_nnz=8, seed=0, check=False, shift=0, by_row=True)
    for b in blocks:
        sol, res = _solve_task(b, None, dict(kw), None, True, V)
        rows = sol.rows
        np.testing.assert_allclose(sol.rss, res, rtol=1e-10, atol=1e-12)    # the kernel's own residuals
        for i in range(b.size):
            sl = slice(b.indptr[i], b.indptr[i + 1])
            x = np.linalg.lstsq(V[b.indices[sl]], b.values[sl], rcond=None)[0]
            np.testing.assert_allclose(rows[i], x, rtol=1e-8, atol=1e-10)
            assert res[i] == pytest.approx(np.sum((V[b.indices[sl]] @ rows[i] - b.values[sl]) ** 2), abs=1e-10)


def test_read_partition_formats(tmp_path):
    pd = pytest.importorskip("pandas")
    r, c, v = _triplets()
    pd.DataFrame({"row": r, "col": c, "value": v}).to_parquet(tmp_path / "a.parquet")
    np.savez(tmp_path / "a.npz", row=r, col=c, value=v)
    for name in ("a.parquet", "a.npz"):
        got = read_partition(str(tmp_path / name), 0)
        for x, y in zip(got, (r, c, v)):
            np.testing.assert_array_equal(x, y)
    np.savez(tmp_path / "b.npz", row=r, col=c)
    with pytest.raises(ValueError, match=r"partition 4 \(.*b\.npz\): missing array\(s\) \['value'\]"):
        read_partition(str(tmp_path / "b.npz"), 4)


_arrays = st.lists(st.one_of(st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True)), max_size=6)


@settings(max_examples=50, deadline=None)
@given(rows=_arrays, cols=_arrays, vals=_arrays, part=st.integers(0, 99))
def test_fuzz_partition_check(rows, cols, vals, part):
    """Any triplet partition is either accepted as valid int64/int64/float64 or rejected naming it."""
    try:
        r, c, v = _check_partition((np.array(rows), np.array(cols), np.array(vals)), part, "f.npz", (10, 8),
                                   np.float64)
    except (ValueError, TypeError) as exc:
        assert f"partition {part} (f.npz)" in str(exc)
        return
    assert r.dtype == c.dtype == np.int64 and v.dtype == np.float64
    assert r.size == c.size == v.size
    assert np.all((0 <= r) & (r < 10)) and np.all((0 <= c) & (c < 8)) and np.all(np.isfinite(v))
