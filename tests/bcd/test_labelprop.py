"""Label propagation and sparse quadratics: forest blocks, tree-Newton, against spsolve."""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

import numopt
from numopt.problems import LabelPropagation, Quadratic


def _lattice(r, w=1.0):
    e = np.ones(r)
    T = sp.diags([e[:-1], e[:-1]], [-1, 1], shape=(r, r))
    I = sp.identity(r)
    return (w * (sp.kron(I, T) + sp.kron(T, I))).tocsr()


@pytest.fixture(scope="module")
def dataset_d():
    W = _lattice(50, 1e5)
    rs = np.random.RandomState(1)
    lab = rs.choice(2500, 100, replace=False)
    y = 10 * rs.randn(100)
    mask = np.zeros(2500, dtype=bool)
    mask[lab] = True
    yfull = np.zeros(2500)
    yfull[lab] = y
    return LabelPropagation(W, yfull, mask)


def test_dataset_d_fstar(dataset_d):
    pb = dataset_d
    assert pb.Q.shape == (2400, 2400) and pb.Q.nnz == 11420
    xs = spsolve(pb.Q.tocsc(), pb.c)
    assert pb.value(xs) == pytest.approx(-1045999575.227, abs=1e-2)


def test_dataset_d_rules_ranked_like_fig6a(dataset_d):
    pb = dataset_d
    fs = pb.value(spsolve(pb.Q.tocsc(), pb.c))
    gap = {}
    for name, kw in {"greedy-tree": {}, "random-tree": dict(selection="random", random_state=0),
                     # the paper's plain (unrelaxed) cyclic rules
                     "tree-partition": dict(partition="tree", relax=1.0),
                     "red-black": dict(partition="red-black", relax=1.0),
                     "general": dict(update="lipschitz", selection="gs", block_size=13)}.items():
        with pytest.warns(numopt.ConvergenceWarning):
            res = numopt.minimize(pb, method="bcd", maxiter=300, tol=0.0, **kw)
        gap[name] = res.fun - fs
        assert np.all(np.diff(res.history["fun"]) <= 1e-9 * abs(fs))  # exact block solves: monotone
    assert gap["greedy-tree"] < 1e-2 * gap["random-tree"]
    assert gap["random-tree"] < gap["red-black"] < gap["general"]
    assert gap["tree-partition"] < gap["red-black"]


@pytest.mark.parametrize("kw", [{}, dict(partition="tree"), dict(partition="red-black"), dict(selection="gsl"),
                                dict(update="lipschitz", block_size=10), dict(update="gradient", block_size=10)])
def test_labelprop_converges_to_spsolve(kw):
    W = _lattice(12)
    rng = np.random.default_rng(0)
    mask = rng.random(144) < 0.1
    mask[0] = True
    pb = LabelPropagation(W, rng.standard_normal(144), mask)
    xs = spsolve(pb.Q.tocsc(), pb.c)
    res = numopt.minimize(pb, method="bcd", tol=1e-11, maxiter=100_000, **kw)
    assert res.success
    np.testing.assert_allclose(res.x, xs, atol=1e-8 * max(1, np.abs(xs).max()))
    full = pb.full_labels(res.x)
    assert full.shape == (144,) and np.allclose(full[mask], pb.y_labeled)


@pytest.mark.parametrize("partition", ["tree", "red-black"])
def test_relaxed_forest_bcd_fewer_iterations_same_solution(partition):
    # over-relaxed exact block steps (omega in (0, 2)) still decrease F at every check and reach the same
    # solution; the adaptive (Young) omega needs several times fewer block updates than plain cyclic BCD
    W = _lattice(40)
    rng = np.random.default_rng(3)
    mask = rng.random(1600) < 0.04
    mask[0] = True
    pb = LabelPropagation(W, 10 * rng.standard_normal(1600), mask)
    xs = spsolve(pb.Q.tocsc(), pb.c)
    res = {}
    for relax in (1.0, 1.5, "auto"):
        r = numopt.minimize(pb, method="bcd", partition=partition, relax=relax, tol=1e-10, maxiter=100_000)
        assert r.success
        np.testing.assert_allclose(r.x, xs, atol=1e-8 * np.abs(xs).max())
        assert np.all(np.diff(r.history["fun"]) <= 1e-12 * abs(r.fun))
        res[relax] = r
    assert res["auto"].nit < 0.4 * res[1.0].nit
    assert 1.3 < res["auto"].omega < 2.0 and res[1.0].omega == 1.0
    assert res[1.5].history["omega"][-1] == 1.5


def test_relax_validation():
    pb = Quadratic(np.eye(3) * 2, np.ones(3))
    for bad in (0.0, 2.0, -1.0, "fast"):
        with pytest.raises(ValueError, match="relax"):
            numopt.minimize(pb, method="bcd", partition="tree", relax=bad)
    with pytest.raises(ValueError, match="relax"):
        numopt.minimize(pb, method="bcd", partition="variable", relax=1.5)  # greedy forest blocks: no relaxation


def test_quadratic_dense_and_sparse():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((40, 25))
    Q = M.T @ M + np.eye(25)
    c = rng.standard_normal(25)
    xs = np.linalg.solve(Q, c)
    for Qi in (Q, sp.csr_matrix(Q)):
        res = numopt.minimize(Quadratic(Qi, c), method="bcd", tol=1e-12, maxiter=100_000)
        np.testing.assert_allclose(res.x, xs, atol=1e-9)


def test_singular_label_propagation_raises():
    W = sp.block_diag([_lattice(3), _lattice(3)]).tocsr()
    mask = np.zeros(18, dtype=bool)
    mask[0] = True   # the second lattice has no label
    with pytest.raises(ValueError, match="touch no labelled"):
        LabelPropagation(W, np.ones(18), mask)


def test_not_positive_definite_raises():
    Q = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite"):
        numopt.minimize(Quadratic(Q, np.ones(2)), method="bcd")


def test_default_partition_on_sparse_graphs():
    """``partition="auto"`` cycles the fixed forest partition on a sparse graph (same optimum as spsolve, far
    fewer iterations than fresh greedy forests), and keeps greedy forests when a greedy rule is asked for."""
    from numopt.bench.bcd import lattice

    pb = lattice(30)
    ref = spsolve(pb.Q.tocsc(), pb.c)
    auto = numopt.minimize(pb, method="bcd", tol=1e-10, maxiter=100000)
    greedy = numopt.minimize(pb, method="bcd", selection="gsd", tol=1e-10, maxiter=100000)
    for r in (auto, greedy):
        assert r.success
        np.testing.assert_allclose(r.x, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    assert "omega" in auto.history and "omega" not in greedy.history


def test_relax_auto_safeguard_beyond_two_blocks():
    """A dense quadratic splits into more than two forests, where Young's theory does not hold: ``relax="auto"``
    must still converge (the adaptive rule once drove omega to 1.98 and stalled here)."""
    Q = np.full((5, 5), 63.0) + np.eye(5)
    c = np.ones(5)
    res = numopt.minimize(Quadratic(Q, c), method="bcd", partition="tree", relax="auto", tol=1e-10, maxiter=20000)
    assert res.success and res.n_blocks > 2
    assert res.omega < 1.9
    np.testing.assert_allclose(res.x, np.linalg.solve(Q, c), atol=1e-7)
