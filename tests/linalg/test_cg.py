"""numopt.linalg.cg against scipy.sparse.linalg.cg: the intent of SciPy's iterative-solver test cases."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from numopt.linalg import cg, ichol0, jacobi, poisson


def _count(fn, *args, **kw):
    calls = []
    x, info = fn(*args, callback=lambda xk: calls.append(xk.copy()), **kw)
    return x, info, calls


def _cases():
    rng = np.random.default_rng(1234)
    data = rng.random((9, 9))
    return {
        "poisson1d": sp.diags_array([-np.ones(39), 2 * np.ones(40), -np.ones(39)], offsets=[-1, 0, 1]).tocsr(),
        "poisson2d": poisson((40, 40)),
        "rand-sym-pd": data @ data.T + 1e-3 * np.eye(9),
        "poisson3d": poisson((8, 9, 10)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("form", ["matrix", "operator"])
def test_matches_scipy_iterates(name, dtype, form):
    A = CASES[name]
    A = A.astype(dtype)
    n = A.shape[0]
    b = np.random.default_rng(0).standard_normal(n).astype(dtype)
    rtol = 1e-2 if dtype == np.float32 else 1e-8
    Aop = sla.aslinearoperator(A) if form == "operator" else A
    x, info, ours = _count(cg, Aop, b, rtol=rtol)
    xs, infos, theirs = _count(sla.cg, Aop, b, rtol=rtol)
    assert info == infos == 0
    assert len(ours) == len(theirs) > 0
    assert x.dtype == xs.dtype
    tol = 1e-4 if dtype == np.float32 else 1e-10
    if not sp.issparse(A) or form == "operator":
        tol = 0.0  # dense and operator paths run SciPy's NumPy operations in SciPy's order: bit-identical
    for a, c in zip(ours, theirs):
        np.testing.assert_allclose(a, c, rtol=tol, atol=tol * float(np.abs(c).max()))
    res = np.linalg.norm(b - A @ x)
    assert res <= rtol * np.linalg.norm(b) * 1.0001


@pytest.mark.parametrize("name", ["poisson2d", "rand-sym-pd"])
def test_preconditioned_matches_scipy(name):
    A = CASES[name]
    b = np.ones(A.shape[0])
    d = np.random.default_rng(3).uniform(0.5, 2.0, A.shape[0])
    M = sp.diags_array(d)
    x, info, ours = _count(cg, A, b, rtol=1e-10, M=M)
    xs, infos, theirs = _count(sla.cg, A, b, rtol=1e-10, M=M)
    assert info == infos == 0 and len(ours) == len(theirs)
    np.testing.assert_allclose(x, xs, rtol=1e-10, atol=1e-10 * np.abs(xs).max())


def test_poisson3d_iteration_counts_match_scipy():
    A = poisson((16, 16, 16))
    b = np.random.default_rng(7).standard_normal(A.shape[0])
    for rtol in (1e-4, 1e-6, 1e-8):
        _, _, ours = _count(cg, A, b, rtol=rtol)
        _, _, theirs = _count(sla.cg, A, b, rtol=rtol)
        assert len(ours) == len(theirs)


def test_maxiter_one_calls_callback_once():
    A = CASES["poisson2d"]
    b = np.ones(A.shape[0])
    x, info, calls = _count(cg, A, b, rtol=1e-12, maxiter=1)
    assert len(calls) == 1 and info == 1


def test_zero_rhs_returns_zero():
    A = CASES["poisson1d"]
    for x0 in (None, np.ones(40)):
        x, info = cg(A, np.zeros(40), x0=x0)
        assert info == 0 and np.all(x == 0)


def test_x0_not_modified_and_used():
    A = CASES["poisson2d"]
    b = np.ones(A.shape[0])
    x0 = np.full(A.shape[0], 0.5)
    keep = x0.copy()
    x, info = cg(A, b, x0=x0, rtol=1e-10)
    xs, _ = sla.cg(A, b, x0=x0.copy(), rtol=1e-10)
    np.testing.assert_array_equal(x0, keep)
    np.testing.assert_allclose(x, xs, rtol=1e-10, atol=1e-12)


def test_x0_Mb():
    A = CASES["poisson2d"]
    b = np.ones(A.shape[0])
    M = jacobi(A)
    x, info = cg(A, b, x0="Mb", M=M, rtol=1e-10)
    xs, _ = sla.cg(A, b, x0="Mb", M=M, rtol=1e-10)
    assert info == 0
    np.testing.assert_allclose(x, xs, rtol=1e-9, atol=1e-12)


def test_exact_inverse_preconditioner_converges_fast():
    A = CASES["rand-sym-pd"]
    b = np.arange(1.0, 10.0)
    Minv = np.linalg.inv(A)
    matvecs = []
    Aop = sla.LinearOperator(A.shape, matvec=lambda v: (matvecs.append(1), A @ v)[1], dtype=float)
    x, info = cg(Aop, b, M=Minv, rtol=1e-10)
    assert info == 0 and len(matvecs) <= 3


@pytest.mark.parametrize("scale", [None, 1e-6, 1e6])
def test_atol_semantics_with_scaled_preconditioner(scale):
    rng = np.random.default_rng(0)
    U = rng.standard_normal((10, 10))
    A = U @ U.T + 10 * np.eye(10)
    b = rng.standard_normal(10)
    M0 = np.diag(rng.uniform(0.5, 2, 10))
    M = None if scale is None else scale * M0
    for atol, rtol in [(1e-8, 0.0), (0.0, 1e-8), (1e-6, 1e-6)]:
        x, info = cg(A, b, M=M, atol=atol, rtol=rtol)
        assert info == 0
        err = np.linalg.norm(A @ x - b)
        assert err <= 1.00025 * max(atol, rtol * np.linalg.norm(b))


@pytest.mark.parametrize("atol", [None, "legacy", -1.0])
def test_invalid_atol(atol):
    A = CASES["poisson1d"]
    with pytest.raises((ValueError, TypeError), match="atol"):
        cg(A, np.ones(40), atol=atol)


def test_tolerances_are_keyword_only():
    A = CASES["poisson1d"]
    with pytest.raises(TypeError):
        cg(A, np.ones(40), None, 1e-5)


def test_ic0_pcg_halves_iterations_on_3d_poisson():
    A = poisson((32, 32, 32))
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    _, info_cg, it_cg = _count(cg, A, b, rtol=1e-8)
    x, info_pcg, it_pcg = _count(cg, A, b, rtol=1e-8, M=ichol0(A))
    assert info_cg == info_pcg == 0
    assert len(it_pcg) <= 0.5 * len(it_cg)
    assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b) * 1.0001


def test_pyamg_preconditioner_accepted():
    pyamg = pytest.importorskip("pyamg")
    A = poisson((12, 12, 12))
    b = np.ones(A.shape[0])
    M = pyamg.ruge_stuben_solver(A).aspreconditioner(cycle="V")
    x, info, calls = _count(cg, A, b, rtol=1e-8, M=M)
    xs, infos, theirs = _count(sla.cg, A, b, rtol=1e-8, M=M)
    assert info == 0 and len(calls) == len(theirs) < 15


def test_not_spd_breaks_down_cleanly():
    A = sp.diags_array([1.0, -1.0, 2.0]).tocsr()
    x, info = cg(A, np.array([1.0, 1.0, 1.0]))
    assert info == -1 and np.all(np.isfinite(x))


def test_maxiter_not_converged_info():
    A = poisson((20, 20))
    x, info = cg(A, np.ones(400), rtol=1e-12, maxiter=5)
    assert info == 5
