"""Every compiled kernel of numopt.bcd against a short NumPy reference."""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from numopt._cy import _bcd as cy
from numopt.bcd import _kernels as K
from numopt.bcd._bcd import ForestCycle, forest_partition, red_black_partition

EMPTY8 = np.zeros(0, dtype=np.int8)
EMPTY64 = np.zeros(0, dtype=np.int64)


def _ref_prox(w, g, D, lam, nonneg):
    z = w - g / D
    if nonneg:
        return np.maximum(z - lam / D, 0.0)
    return np.sign(z) * np.maximum(np.abs(z) - lam / D, 0.0)


def _ref_lasso_qp(H, c, lam, nonneg, sweeps=20000):
    w = np.zeros(len(c))
    for _ in range(sweeps):
        old = w.copy()
        for i in range(len(c)):
            g = H[i] @ w - c[i]
            w[i] = _ref_prox(w[i], g, H[i, i], lam, nonneg)
        if np.abs(w - old).max() < 1e-15:
            break
    return w


@pytest.mark.parametrize("greedy", [True, False])
@pytest.mark.parametrize("nonneg", [True, False])
def test_cd_l1_gram_vs_numpy(greedy, nonneg):
    rng = np.random.default_rng(0)
    M = rng.standard_normal((30, 12))
    H = M.T @ M
    c = rng.standard_normal(12) * 5
    ref = _ref_lasso_qp(H, c, 2.0, nonneg)
    w = np.zeros(12)
    nup, kkt = K.cd_l1_gram(H, c, w, 2.0, nonneg, 1e-13, 10**7, greedy)
    assert kkt <= 1e-13 and nup > 0
    np.testing.assert_allclose(w, ref, atol=1e-10)


def test_block_qp_with_free_set_newton():
    # oracle: with H = M^T M and c = M^T b the block QP is a Lasso, solved by scikit-learn
    from sklearn.linear_model import Lasso
    from numopt.bcd._prox import solve_block_qp
    rng = np.random.default_rng(1)
    M = rng.standard_normal((40, 35)) + 1.0   # correlated columns
    b = rng.standard_normal(40) * 5
    H = M.T @ M
    c = M.T @ b
    for nonneg in (False, True):
        sk = Lasso(alpha=1.0 / 40, fit_intercept=False, positive=nonneg, tol=1e-14, max_iter=10**6).fit(M, b)
        w = np.zeros(35)
        solve_block_qp(H, c, w, 1.0, nonneg, 1e-12, 10**7, False)
        np.testing.assert_allclose(w, sk.coef_, atol=1e-7)


def test_prox_scores_vs_numpy():
    rng = np.random.default_rng(2)
    g, x, L = rng.standard_normal(50), rng.standard_normal(50), rng.uniform(0.1, 3, 50)
    L[3] = 0.0
    for nonneg in (False, True):
        xx = np.abs(x) if nonneg else x
        d, q = np.empty(50), np.empty(50)
        kkt = K.prox_scores(g, xx, L, 0.7, nonneg, d, q)
        Ls = np.where(L > 0, L, 1.0)
        dn = np.where(L > 0, _ref_prox(xx, g, Ls, 0.7, nonneg) - xx, 0.0)
        qn = g * dn + 0.5 * L * dn ** 2 + 0.7 * (np.abs(xx + dn) - np.abs(xx))
        np.testing.assert_allclose(d, dn, atol=1e-14)
        np.testing.assert_allclose(q, qn, atol=1e-14)
        assert kkt == pytest.approx(np.max(L * np.abs(dn)))
        assert np.all(q <= 1e-15)


@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_top_k_vs_argsort(k):
    rng = np.random.default_rng(3)
    s = rng.standard_normal(60)
    s[::7] = 0.0
    s[5] = s[6] = 9.0  # a tie
    out = K.top_k(s, k)
    pos = np.flatnonzero(s > 0)
    ref = np.sort(pos[np.argsort(-s[pos], kind="stable")][:k])
    np.testing.assert_array_equal(out, ref)


def test_abs_row_sums_vs_numpy():
    A = np.random.default_rng(4).standard_normal((7, 5))
    np.testing.assert_allclose(K.abs_row_sums(A), np.abs(A).T @ np.abs(A).sum(axis=1))
    np.testing.assert_array_less(np.abs(A.T @ A).sum(axis=1), K.abs_row_sums(A) + 1e-12)


@pytest.mark.parametrize("K_", [1, 3])
def test_rows_axpy_vs_numpy(K_):
    rng = np.random.default_rng(5)
    A = sp.random(40, 30, density=0.2, random_state=6, format="csc")
    cols = np.array([2, 7, 11, 29], dtype=np.int64)
    D = rng.standard_normal((4, K_))
    Z = rng.standard_normal((40, K_))
    ref = Z + A[:, cols] @ D
    mark = np.zeros(40, dtype=np.int8)
    touched = np.empty(40, dtype=np.int64)
    nt = cy.rows_axpy(A.indptr, A.indices, A.data, cols, D, Z, mark, touched, 0)
    np.testing.assert_allclose(Z, ref, atol=1e-14)
    np.testing.assert_array_equal(np.sort(touched[:nt]), np.flatnonzero(abs(A[:, cols]).sum(axis=1)))
    R = A.tocsr()
    G = np.zeros((30, K_))
    rows = np.array([0, 5, 39], dtype=np.int64)
    U = rng.standard_normal((3, K_))
    cy.rows_axpy(R.indptr, R.indices, R.data, rows, U, G, EMPTY8, EMPTY64, 0)
    np.testing.assert_allclose(G, R[rows].T @ U, atol=1e-14)


def _random_graph(p, density, seed):
    W = sp.random(p, p, density=density, random_state=seed, format="csr")
    W = W + W.T
    W.setdiag(0)
    W.eliminate_zeros()
    Q = (sp.diags(np.asarray(abs(W).sum(axis=1)).ravel() + 1.0) - W).tocsr()
    Q.sort_indices()
    return Q


def _is_forest(Q, b):
    sub = Q[b][:, b].tocsr()
    sub.setdiag(0)
    sub.eliminate_zeros()
    ncomp, _ = connected_components(sub, directed=False)
    edges = sub.nnz // 2
    return edges == len(b) - ncomp   # a graph is a forest iff |E| = |V| - #components


def _ref_greedy_forest(Q, order):
    # plain-Python union-find reference
    parent = {}

    def find(v):
        while parent[v] != v:
            v = parent[v]
        return v
    block = []
    for v in order:
        nb = [w for w in Q.indices[Q.indptr[v]:Q.indptr[v + 1]] if w != v and w in parent]
        roots = [find(w) for w in nb]
        if len(set(roots)) != len(roots):
            continue
        parent[v] = v
        for r in roots:
            parent[r] = v
        block.append(v)
    return block


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_forest_vs_python_and_acyclic(seed):
    Q = _random_graph(80, 0.05, seed)
    order = np.random.default_rng(seed).permutation(80).astype(np.int64)
    parent = np.arange(80, dtype=np.int64)
    inblock = np.zeros(80, dtype=np.int8)
    buf = np.empty(80, dtype=np.int64)
    m = cy.greedy_forest(Q.indptr, Q.indices, order, 80, parent, inblock, buf)
    b = buf[:m]
    assert list(b) == _ref_greedy_forest(Q, order)
    assert _is_forest(Q, np.sort(b))
    np.testing.assert_array_equal(parent, np.arange(80))   # scratch restored
    assert not inblock.any()
    # the size cap
    m2 = cy.greedy_forest(Q.indptr, Q.indices, order, 5, parent, inblock, buf)
    assert m2 == 5


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tree_solve_equals_dense_solve(seed):
    Q = _random_graph(120, 0.03, seed)
    order = np.random.default_rng(seed).permutation(120).astype(np.int64)
    for b in forest_partition(Q, order):
        rhs = np.random.default_rng(seed).standard_normal(b.size)
        x = np.empty(b.size)
        pos = np.full(120, -1, dtype=np.int64)
        assert cy.tree_solve(Q.indptr, Q.indices, Q.data, b.astype(np.int64), pos, rhs, x) == 0
        ref = np.linalg.solve(Q[b][:, b].toarray(), rhs)
        np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
        assert np.all(pos == -1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("unit", [False, True])
def test_forest_sweep_equals_dense_block_update(seed, dtype, unit):
    # reference: x_b <- x_b + omega (solve(Q_bb, c_b - Q_{b,~b} x_~b) - x_b), dense NumPy, original numbering;
    # unit=True: one weight on every edge (the sweep's scalar-coupling path)
    Q = _random_graph(120, 0.03, seed)
    if unit:
        W = Q.copy()
        W.setdiag(0)
        W.eliminate_zeros()
        W.data[:] = -0.7
        Q = (W + sp.diags(np.asarray(abs(W).sum(axis=1)).ravel() + 1.0)).tocsr()
        Q.sort_indices()
    Q = Q.astype(dtype)
    rng = np.random.default_rng(seed)
    order = rng.permutation(120).astype(np.int64)
    c = rng.standard_normal(120)
    x = rng.standard_normal(120)
    Qd = Q.toarray().astype(np.float64)
    blocks = forest_partition(Q, order)
    pos = np.full(120, -1, dtype=np.int64)
    for b in blocks:
        status, order_b, *_ = cy.forest_factor(Q.indptr, Q.indices, Q.data, b.astype(np.int64), pos)
        assert status == 0 and np.all(pos == -1) and sorted(order_b) == sorted(b)
    fc = ForestCycle(Q, blocks)
    assert all((blk[-1] is not None) == unit for blk in fc.blocks if blk[5].size)
    perm = fc.perm
    assert sorted(perm) == list(range(120))
    cp, xp = c[perm], x[perm]
    # gradient kernel against Q x - c
    np.testing.assert_allclose(fc.gradient(cp, xp, np.empty(120)), (Qd @ x - c)[perm], rtol=1e-12, atol=1e-12)
    for k, b in enumerate(blocks):
        omega = rng.uniform(0.2, 1.9)
        nb = np.setdiff1d(np.arange(120), b)
        star = np.linalg.solve(Qd[np.ix_(b, b)], c[b] - Qd[np.ix_(b, nb)] @ x[nb])
        ref = x.copy()
        ref[b] += omega * (star - x[b])
        x_old = x.copy()
        dd = fc.sweep(k, cp, xp, omega)
        x = np.empty(120)
        x[perm] = xp
        np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
        assert dd == pytest.approx(float(((x - x_old) ** 2).sum()), rel=1e-10)


def test_forest_factor_detects_indefinite():
    Q = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    status, *_ = cy.forest_factor(Q.indptr, Q.indices, Q.data, np.arange(3, dtype=np.int64),
                                  np.full(3, -1, dtype=np.int64))
    assert status < 0


def test_tree_solve_detects_indefinite():
    Q = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    x = np.empty(3)
    st = cy.tree_solve(Q.indptr, Q.indices, Q.data, np.arange(3, dtype=np.int64), np.full(3, -1, dtype=np.int64),
                       np.ones(3), x)
    assert st < 0


def test_partitions_cover_and_are_forests():
    Q = _random_graph(100, 0.04, 7)
    order = np.argsort(-Q.diagonal()).astype(np.int64)
    fb = forest_partition(Q, order)
    assert np.array_equal(np.sort(np.concatenate(fb)), np.arange(100))
    assert all(_is_forest(Q, b) for b in fb)
    rb = red_black_partition(Q, order)
    assert np.array_equal(np.sort(np.concatenate(rb)), np.arange(100))
    for b in rb:   # independent sets: Q_bb diagonal
        sub = Q[b][:, b].toarray()
        assert np.count_nonzero(sub - np.diag(np.diag(sub))) == 0


@pytest.mark.parametrize("nonneg", [False, True])
def test_cd_l1_residual_vs_sklearn(nonneg):
    from sklearn.linear_model import ElasticNet
    A = sp.random(60, 40, density=0.3, random_state=8, format="csc")
    b = np.random.default_rng(8).standard_normal(60)
    ws = np.arange(40, dtype=np.int64)
    l1, l2 = 0.05, 0.02
    L = np.asarray(A.multiply(A).sum(axis=0)).ravel() + l2
    w = np.zeros(40)
    r = b.copy()
    sweeps, kkt = K.cd_l1_residual(A.indptr, A.indices, A.data, ws, L, w, r, l1, l2, nonneg, 1e-13, 100_000)
    assert kkt <= 1e-13
    np.testing.assert_allclose(r, b - A @ w, atol=1e-12)
    # sklearn's ElasticNet: 1/(2n)|b - Aw|^2 + a*rho |w|_1 + a(1-rho)/2 |w|^2
    n = 60
    a = (l1 + l2) / n
    sk = ElasticNet(alpha=a, l1_ratio=l1 / (l1 + l2), fit_intercept=False, positive=nonneg, tol=1e-14,
                    max_iter=10**6).fit(A, b)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-8)


def test_prox_path_residual_mode_matches_sklearn(monkeypatch):
    import numopt
    import numopt.bcd._prox as P
    from numopt.problems import LeastSquares
    from sklearn.linear_model import Lasso
    monkeypatch.setattr(P, "GRAM_MAX", 0)   # force the residual-form inner solver
    A = sp.random(80, 200, density=0.1, random_state=9, format="csc")
    b = np.random.default_rng(9).standard_normal(80)
    alpha = 0.05 * np.abs(A.T @ b).max() / 80
    res = numopt.minimize(LeastSquares(A, b, l1=80 * alpha), method="bcd", tol=1e-12)
    sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=10**6).fit(A, b)
    assert res.success
    np.testing.assert_allclose(res.x, sk.coef_, atol=1e-6)


def test_problem_rejects_nan_in_sparse_A():
    from numopt.problems import LeastSquares
    A = sp.random(10, 8, density=0.5, random_state=0, format="csc")
    A.data[3] = np.nan
    with pytest.raises(ValueError, match="A contains NaN"):
        LeastSquares(A, np.ones(10), l1=1.0)
    A.data[3] = np.inf
    with pytest.raises(ValueError, match="A"):
        LeastSquares(A, np.ones(10), l1=1.0)
