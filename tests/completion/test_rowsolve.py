"""The half-step block kernel against NumPy references."""
import numpy as np
import pytest
import scipy.sparse as sp

from numopt.completion import solve_rows


def _block(m, n, density, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    M = sp.random(m, n, density=density, random_state=seed, format="csr", dtype=np.float64)
    M.data = rng.standard_normal(M.nnz)
    F = rng.standard_normal((n, 5)).astype(dtype)
    return M, F


def ridge_reference(M, F, lam, count=False):
    """Per-row NumPy ridge / min-norm least squares."""
    k = F.shape[1]
    out = np.zeros((M.shape[0], k))
    for i in range(M.shape[0]):
        sl = slice(M.indptr[i], M.indptr[i + 1])
        A = F[M.indices[sl]].astype(np.float64)
        b = M.data[sl]
        if A.shape[0] == 0:
            continue
        s = lam * (A.shape[0] if count else 1.0)
        if s > 0:
            out[i] = np.linalg.solve(A.T @ A + s * np.eye(k), A.T @ b)
        else:
            out[i] = np.linalg.lstsq(A, b, rcond=None)[0]
    return out


@pytest.mark.parametrize("solver", ["cholesky", "cg", "sketch-cg", "auto"])
@pytest.mark.parametrize("lam,count", [(0.0, False), (0.3, False), (0.05, True)])
def test_solvers_match_numpy_reference(solver, lam, count):
    M, F = _block(120, 80, 0.35)
    ref = ridge_reference(M, F, lam, count)
    sol = solve_rows(M.indptr, M.indices, M.data, F, reg=lam, reg_scaling="count" if count else "none",
                     solver=solver, inner_tol=1e-14, cg_steps=60, sketch_size=10)
    np.testing.assert_allclose(sol.rows, ref, rtol=1e-9, atol=1e-9)
    assert sol.rows.dtype == np.float64
    if solver == "sketch-cg":
        assert np.any(sol.used == 2)          # the sketch path really ran (rows longer than the sketch)


def test_float32_matches_reference():
    M, F = _block(60, 40, 0.5, dtype=np.float32)
    ref = ridge_reference(M, F, 0.1)
    for solver in ("cholesky", "cg", "sketch-cg"):
        sol = solve_rows(M.indptr, M.indices, M.data.astype(np.float32), F, reg=0.1, solver=solver,
                         inner_tol=1e-12, cg_steps=40, sketch_size=10)
        assert sol.rows.dtype == np.float32
        np.testing.assert_allclose(sol.rows, ref, rtol=2e-4, atol=2e-4)


def test_cg_steps_match_numpy_cg_from_warm_start():
    """A fixed number of CG steps reproduces textbook CG on the normal equations."""
    M, F = _block(30, 40, 0.5, seed=3)
    rng = np.random.default_rng(1)
    warm = rng.standard_normal((30, 5))
    sol = solve_rows(M.indptr, M.indices, M.data, F, reg=0.2, solver="cg", warm=warm, cg_steps=2, inner_tol=0.0)
    for i in range(30):
        sl = slice(M.indptr[i], M.indptr[i + 1])
        A, b = F[M.indices[sl]], M.data[sl]
        H = A.T @ A + 0.2 * np.eye(5)
        x = warm[i].copy()
        r = A.T @ b - H @ x
        p = r.copy()
        for _ in range(2):
            Hp = H @ p
            alpha = (r @ r) / (p @ Hp)
            x += alpha * p
            r_new = r - alpha * Hp
            p = r_new + (r_new @ r_new) / (r @ r) * p
            r = r_new
        np.testing.assert_allclose(sol.rows[i], x, rtol=1e-10, atol=1e-12)
    assert np.all(sol.inner_steps == 2)


@pytest.mark.parametrize("solver", ["cholesky", "cg", "sketch-cg", "auto"])
def test_short_empty_and_collinear_rows_stay_finite(solver):
    k = 4
    rng = np.random.default_rng(0)
    F = rng.standard_normal((10, k))
    F[7] = F[6]                                  # duplicate columns of the design
    # row 0: empty, row 1: N < k, row 2: two identical design rows, row 3: full rank
    indptr = np.array([0, 0, 2, 4, 10])
    indices = np.array([0, 1, 6, 7, 0, 1, 2, 3, 4, 5])
    values = rng.standard_normal(10)
    sol = solve_rows(indptr, indices, values, F, solver=solver, inner_tol=1e-14, cg_steps=50)
    assert np.all(np.isfinite(sol.rows))
    assert sol.status[0] == 1 and np.all(sol.rows[0] == 0)
    assert sol.status[1] == 2 and sol.status[2] == 2 and sol.status[3] == 0
    assert sol.n_cold == 1 and sol.n_rank_deficient == 2
    # rank-deficient rows: (close to) the minimum-norm least-squares solution
    for i in (1, 2, 3):
        sl = slice(indptr[i], indptr[i + 1])
        x_ref = np.linalg.lstsq(F[indices[sl]], values[sl], rcond=None)[0]
        np.testing.assert_allclose(sol.rows[i], x_ref, atol=1e-6)


def test_zero_fixed_rows_give_zero():
    F = np.zeros((5, 3))
    sol = solve_rows(np.array([0, 3]), np.array([0, 1, 2]), np.ones(3), F, solver="cholesky")
    assert np.all(sol.rows == 0) and sol.status[0] == 2


@pytest.mark.parametrize("solver", ["cholesky", "cg", "sketch-cg"])
def test_block_partition_is_bitwise_invariant(solver):
    """Solving the rows in two blocks (as two workers would) gives bitwise the same rows."""
    M, F = _block(100, 60, 0.4, seed=5)
    warm = np.random.default_rng(2).standard_normal((100, 5))
    kw = dict(solver=solver, reg=0.01, sketch_size=10, seed=7, inner_tol=1e-6, cg_steps=3)
    full = solve_rows(M.indptr, M.indices, M.data, F, warm=warm, **kw)
    parts = []
    for lo, hi in ((0, 37), (37, 100)):
        sub = M[lo:hi]
        parts.append(solve_rows(sub.indptr, sub.indices, sub.data, F, warm=warm[lo:hi], row_offset=lo, **kw).rows)
    assert np.array_equal(full.rows, np.vstack(parts))


def test_sketch_seed_changes_only_within_tolerance():
    M, F = _block(50, 60, 0.6, seed=1)
    a = solve_rows(M.indptr, M.indices, M.data, F, solver="sketch-cg", sketch_size=10, seed=1, inner_tol=1e-13)
    b = solve_rows(M.indptr, M.indices, M.data, F, solver="sketch-cg", sketch_size=10, seed=2, inner_tol=1e-13)
    np.testing.assert_allclose(a.rows, b.rows, atol=1e-9)


def test_work_counts_are_consistent():
    """Exact Cholesky costs N k(k+1)/2 + N k + k^3/6 + k^2 FMAs per row; s CG steps cost (2 s + 1) N k:
    2 N k for the starting residual (fused with the gather), 2 N k per fused A p / A^T(A p) sweep, and
    N k for the last step, which needs only A p."""
    M, F = _block(40, 30, 0.5, seed=2)
    k = F.shape[1]
    deg = np.diff(M.indptr)
    chol = solve_rows(M.indptr, M.indices, M.data, F, reg=0.1, solver="cholesky")
    expect = deg * (k * (k + 1) // 2 + k) + k ** 3 // 6 + k * k + deg * k     # Gram, factor, solve, residual
    np.testing.assert_array_equal(chol.work, np.where(deg > 0, expect, 0))
    cg = solve_rows(M.indptr, M.indices, M.data, F, reg=0.1, solver="cg", cg_steps=3, inner_tol=0.0)
    np.testing.assert_array_equal(cg.work, np.where(deg > 0, (2 * 3 + 1) * deg * k, 0))


@pytest.mark.parametrize("kwargs,match", [
    (dict(indptr=np.array([1, 2])), "indptr must start at 0"),
    (dict(indptr=np.array([0, 3, 2])), "non-decreasing"),
    (dict(indices=np.array([0, 1, 9])), "indices has index 9 out of range"),
    (dict(indices=np.array([0, 1])), "indices must have"),
    (dict(values=np.array([1.0, np.nan, 2.0])), "values contains NaN"),
    (dict(values=np.ones(2)), "values must have"),
    (dict(fixed=np.full((4, 2), np.inf)), "fixed contains"),
    (dict(warm=np.ones((3, 2))), "warm must have shape"),
    (dict(solver="lu"), "solver must be one of"),
    (dict(reg=-1.0), "reg must be >= 0"),
    (dict(sketch_size=1), "sketch_size must be >= 2"),
    (dict(reg_scaling="rows"), "reg_scaling must be one of"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(indptr=np.array([0, 3]), indices=np.array([0, 1, 2]), values=np.ones(3), fixed=np.ones((4, 2)))
    args.update(kwargs)
    ip, ix, v, F = args.pop("indptr"), args.pop("indices"), args.pop("values"), args.pop("fixed")
    with pytest.raises((ValueError, TypeError), match=match):
        solve_rows(ip, ix, v, F, **args)


@pytest.mark.parametrize("solver,extra", [("cholesky", {}), ("cg", dict(cg_steps=2, inner_tol=0.0)),
                                          ("cg", dict(cg_steps=50, inner_tol=1e-14)),
                                          ("sketch-cg", dict(sketch_size=10)), ("sketch-cg", dict(sketch_size=40))])
def test_rss_is_the_residual_of_the_returned_rows(solver, extra):
    """The per-row ||A x - b||^2 the kernel returns (carried through CG) matches a direct evaluation."""
    M, F = _block(80, 50, 0.4, seed=8)
    warm = np.random.default_rng(3).standard_normal((80, 5))
    sol = solve_rows(M.indptr, M.indices, M.data, F, reg=0.05, solver=solver, warm=warm, **extra)
    ref = np.array([np.sum((F[M.indices[M.indptr[i]:M.indptr[i + 1]]] @ sol.rows[i]
                            - M.data[M.indptr[i]:M.indptr[i + 1]]) ** 2) for i in range(80)])
    np.testing.assert_allclose(sol.rss, ref, rtol=1e-9, atol=1e-12)


def test_want_rss_false_skips_the_exact_residual():
    M, F = _block(30, 20, 0.5, seed=9)
    a = solve_rows(M.indptr, M.indices, M.data, F, reg=0.1, solver="cholesky")
    b = solve_rows(M.indptr, M.indices, M.data, F, reg=0.1, solver="cholesky", want_rss=False)
    assert np.array_equal(a.rows, b.rows) and np.all(b.rss == 0) and np.all(a.rss > 0)
    np.testing.assert_array_equal(a.work - b.work, np.diff(M.indptr) * F.shape[1])
