"""DCDM solver: the oracles of the brief (CG, PCG, exact inverse, nonlinear f, closed form, SciPy suite)."""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.fft import dstn, idstn

import numopt
from numopt.exceptions import ConvergenceWarning
from numopt.linalg import dcdm, poisson, random_scene
from numopt.linalg._dcdm import solve_dcdm

pyamg = pytest.importorskip("pyamg")


def cg_count(A, b, **kw):
    """scipy cg's iterate and iteration count (its callback runs once per iteration)."""
    count = [0]

    def cb(xk):
        count[0] += 1

    x, info = spla.cg(A, b, callback=cb, **kw)
    return x, info, count[0]


def energy(A, b, x):
    return 0.5 * x @ (A @ x) - b @ x


def dirichlet_solve(b, N):
    """Closed-form solve of the 7-point Dirichlet Laplacian on N^3 by DST-I (oracle 5)."""
    j = np.arange(1, N + 1)
    lam1 = 2 - 2 * np.cos(np.pi * j / (N + 1))
    lam = lam1[:, None, None] + lam1[None, :, None] + lam1[None, None, :]
    bh = dstn(b.reshape(N, N, N), type=1, norm="ortho")
    return idstn(bh / lam, type=1, norm="ortho").ravel()


@pytest.fixture(scope="module")
def p16():
    A = poisson((16, 16, 16))
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    return A, b


# --- oracle 1: f = identity is CG ---------------------------------------------------------------------
@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8])
def test_identity_is_cg(p16, rtol):
    A, b = p16
    x_cg, info, nit = cg_count(A, b, rtol=rtol)
    assert info == 0
    res = solve_dcdm(A, b, None, rtol=rtol, model="identity", true_residual=False)
    assert res.success and res.nit == nit
    assert res.n_fallback == 0 and res.n_network_calls == nit
    np.testing.assert_allclose(res.x, x_cg, rtol=1e-10, atol=1e-10 * np.abs(x_cg).max())
    # the true-residual variant takes the same number of iterations here
    res2 = solve_dcdm(A, b, None, rtol=rtol, model="identity", true_residual=True)
    assert abs(res2.nit - nit) <= 1


def test_identity_is_cg_on_obstacle_scene():
    A, b, fluid = random_scene(16, random_state=3)
    _, _, nit = cg_count(A, b, rtol=1e-6)
    x, info = dcdm(A, b, rtol=1e-6, model="identity", fluid_mask=fluid, true_residual=False)
    assert info == 0
    count = []
    dcdm(A, b, rtol=1e-6, model="identity", callback=count.append, true_residual=False)
    assert len(count) == nit


# --- oracle 2: f = fixed SPD M is PCG ----------------------------------------------------------------
def test_diagonal_m_is_pcg(p16):
    A, b = p16
    d = np.random.default_rng(1).uniform(0.5, 2.0, A.shape[0])
    M = sp.diags_array(d)
    _, info, nit = cg_count(A, b, rtol=1e-6, M=M)
    res = solve_dcdm(A, b, None, rtol=1e-6, model=M, true_residual=False)
    assert info == 0 and res.success and res.nit == nit


def test_amg_vcycle_is_pcg(p16):
    A, b = p16
    ml = pyamg.ruge_stuben_solver(A.tocsr())
    M = ml.aspreconditioner(cycle="V")
    x_ref, info, nit = cg_count(A, b, rtol=1e-8, M=M)
    res = solve_dcdm(A, b, None, rtol=1e-8, model=M)
    assert info == 0 and res.success
    assert res.nit == nit and res.n_fallback == 0
    np.testing.assert_allclose(res.x, x_ref, rtol=1e-6, atol=1e-8 * np.abs(x_ref).max())


# --- oracle 3: f = c A^-1 converges in one iteration, scale invariance ----------------------------
@pytest.mark.parametrize("c", [1.0, 1e-3, -2.5, 1e4])
def test_exact_inverse_one_iteration(p16, c):
    A, b = p16
    lu = spla.splu(A.tocsc())
    res = solve_dcdm(A, b, None, rtol=1e-10, model=lambda s: c * lu.solve(s))
    assert res.success and res.nit == 1
    assert np.linalg.norm(b - A @ res.x) <= 1e-10 * np.linalg.norm(b)


def test_scale_invariance(p16):
    A, b = p16
    rng = np.random.default_rng(5)
    W = rng.uniform(0.2, 1.0, A.shape[0])

    def f(s):  # nonlinear: different weights for positive / negative entries
        return W * s + 0.3 * np.abs(s)

    xs = []
    for c in (1.0, -7.0):
        it = []
        solve_dcdm(A, b, None, rtol=1e-8, model=lambda s, c=c: c * f(s), callback=lambda r: it.append(r.x.copy()))
        xs.append(np.array(it))
    assert xs[0].shape == xs[1].shape
    np.testing.assert_allclose(xs[0], xs[1], rtol=1e-8, atol=1e-10)


# --- oracle 4: nonlinear f converges; energy decreases; local A-orthogonality --------------------------
def test_nonlinear_vcycle_converges():
    N = 16
    A = poisson((N, N, N))
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    ml = pyamg.ruge_stuben_solver(A.tocsr())
    M = ml.aspreconditioner(cycle="V")
    iterates = []
    res = solve_dcdm(A, b, None, rtol=1e-6, model=lambda r: M @ (r + 0.05 * np.abs(r)),
                     callback=lambda r: iterates.append(r.x.copy()), n_directions=2)
    assert res.success and res.nit <= 10
    X = np.vstack([np.zeros(A.shape[0])] + iterates)
    phi = np.array([energy(A, b, x) for x in X])
    # strict decrease (each step removes (q^T r)^2 / 2 q^T A q > 0), up to the rounding of phi itself
    assert np.all(np.diff(phi) < 1e-13 * abs(phi[-1]))
    assert np.all(np.diff(np.r_[0.0, res.history["energy"]]) < 0)
    np.testing.assert_allclose(phi[1:], res.history["energy"], rtol=1e-10)
    P = np.diff(X, axis=0)  # directions up to scale
    AP = (A @ P.T).T
    for k in range(1, len(P)):
        for j in range(max(0, k - 2), k):
            cos = abs(P[k] @ AP[j]) / np.sqrt((P[k] @ AP[k]) * (P[j] @ AP[j]))
            assert cos < 1e-9, (k, j, cos)


def test_residual_not_required_monotone_but_energy_is():
    # a crude nonlinear generator: residual may go up, energy may not
    A = poisson((10, 10, 10))
    b = np.random.default_rng(7).standard_normal(A.shape[0])
    xs = []
    res = solve_dcdm(A, b, None, rtol=1e-8, model=lambda s: np.tanh(3 * s) + 0.1 * s ** 2,
                     callback=lambda r: xs.append(r.x.copy()))
    assert res.success
    phi = [energy(A, b, x) for x in xs]
    assert np.all(np.diff(phi) <= 1e-12 * abs(phi[0]))


# --- oracle 5: closed form -------------------------------------------------------------------------
def test_closed_form_dirichlet(p16):
    A, b = p16
    x_star = dirichlet_solve(b, 16)
    assert np.linalg.norm(b - A @ x_star) <= 1e-13 * np.linalg.norm(b)
    res = solve_dcdm(A, b, None, rtol=1e-10, model="jacobi")
    assert res.success
    err = np.sqrt((res.x - x_star) @ (A @ (res.x - x_star))) / np.sqrt(x_star @ (A @ x_star))
    assert err < 1e-9


# --- safeguard -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zero", "nan", "fixed", "noise", "wrong_shape"])
def test_bad_generator_still_converges(p16, kind):
    A, b = p16
    n = A.shape[0]
    rng = np.random.default_rng(0)
    fixed = rng.standard_normal(n)
    gens = {"zero": lambda s: np.zeros(n), "nan": lambda s: np.full(n, np.nan), "fixed": lambda s: fixed,
            "noise": lambda s: rng.standard_normal(n), "wrong_shape": lambda s: np.ones(3)}
    _, _, nit_cg = cg_count(A, b, rtol=1e-6)
    res = solve_dcdm(A, b, None, rtol=1e-6, model=gens[kind])
    assert res.success
    assert res.n_fallback >= 1
    assert np.linalg.norm(b - A @ res.x) <= 1e-6 * np.linalg.norm(b)
    assert res.nit <= 3 * nit_cg


def test_fallback_uses_preconditioner(p16):
    A, b = p16
    d = A.diagonal()
    M = spla.LinearOperator(A.shape, matvec=lambda v: v / d)
    res = solve_dcdm(A, b, None, rtol=1e-6, model=lambda s: np.zeros_like(s), M=M)
    _, _, nit = cg_count(A, b, rtol=1e-6, M=M)
    assert res.success and res.n_fallback == res.nit and res.nit == nit
    # restart=True drops the stored directions at each fallback: preconditioned steepest descent, slower
    res = solve_dcdm(A, b, None, rtol=1e-6, model=lambda s: np.zeros_like(s), M=M, restart=True)
    assert res.success and res.nit > 2 * nit


def test_semidefinite_consistent_neumann():
    # pure-Neumann 3-D Laplacian: singular, null space = constants; b with zero mean is consistent
    N = 8
    L1 = sp.diags_array([-np.ones(N - 1), np.r_[1, 2 * np.ones(N - 2), 1], -np.ones(N - 1)], offsets=[-1, 0, 1])
    A = sp.csr_matrix(sp.kronsum(sp.kronsum(L1, L1), L1))
    b = np.random.default_rng(0).standard_normal(N ** 3)
    b -= b.mean()
    res = solve_dcdm(A, b, None, rtol=1e-8, model="identity", grid_shape=(N, N, N))
    assert res.success
    assert np.linalg.norm(b - A @ res.x) <= 1e-8 * np.linalg.norm(b)


# --- SciPy-suite semantics (oracle 9) --------------------------------------------------------------
def _suite():
    n = 40
    p1 = sp.diags_array([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1], format="csr")
    p2 = sp.csr_matrix(sp.kronsum(p1, p1))
    rng = np.random.RandomState(1234)
    data = rng.rand(9, 9)
    rsp = data @ data.T
    return {"poisson1d": p1, "poisson2d": p2, "rand-sym-pd": rsp}


@pytest.mark.parametrize("name", ["poisson1d", "poisson2d", "rand-sym-pd"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scipy_suite(name, dtype):
    A = _suite()[name]
    A = A.astype(dtype)
    b = np.arange(A.shape[0], dtype=dtype) + 1
    rtol = 1e-2 if dtype == np.float32 else 1e-8
    x, info = dcdm(A, b, rtol=rtol, model="identity")
    assert info == 0
    assert np.linalg.norm(b - A @ x) <= rtol * np.linalg.norm(b) * (1 + 1e-6)


def test_maxiter_one_callback_once():
    A = _suite()["poisson1d"]
    b = np.ones(A.shape[0])
    calls = []
    x, info = dcdm(A, b, rtol=1e-12, maxiter=1, model="identity", callback=calls.append)
    assert len(calls) == 1 and info == 1
    with pytest.warns(ConvergenceWarning):
        res = numopt.solve(A, b, method="dcdm", rtol=1e-12, maxiter=1, model="identity")
    assert not res.success and res.status == 1


@pytest.mark.parametrize("x0", [None, "ones"])
def test_zero_rhs(x0):
    A = _suite()["poisson1d"]
    b = np.zeros(A.shape[0])
    x0 = None if x0 is None else np.ones(A.shape[0])
    x, info = dcdm(A, b, x0, model="identity")
    assert info == 0 and np.all(x == 0)


def test_x0_not_modified():
    A = _suite()["poisson2d"]
    b = np.ones(A.shape[0])
    x0 = np.random.default_rng(0).standard_normal(A.shape[0])
    keep = x0.copy()
    x, info = dcdm(A, b, x0, rtol=1e-8, model="identity")
    assert info == 0 and np.array_equal(x0, keep)
    # the paper's ||r0||-relative stopping rule
    res = solve_dcdm(A, b, x0, rtol=1e-4, model="identity", tol_mode="r0")
    r0 = np.linalg.norm(b - A @ x0)
    assert res.success and np.linalg.norm(b - A @ res.x) <= 1e-4 * r0 * (1 + 1e-8)


def test_exact_inverse_matvec_count():
    A = _suite()["poisson2d"]
    b = np.ones(A.shape[0])
    lu = spla.splu(A.tocsc())
    res = solve_dcdm(A, b, None, rtol=1e-8, model=lu.solve)
    assert res.success and res.n_matvec <= 3


@pytest.mark.parametrize("scale", [None, 1e-6, 1e6])
def test_precision_scaled_preconditioner(scale):
    rng = np.random.default_rng(3)
    U = rng.standard_normal((10, 10))
    A = U @ U.T + 10 * np.eye(10)
    b = rng.standard_normal(10)
    M0 = np.linalg.inv(np.diag(np.diag(A)))
    model = "identity" if scale is None else scale * M0
    for atol, rtol in [(1e-8, 1e-8), (0.0, 1e-6), (1e-3, 1e-12)]:
        x, info = dcdm(A, b, rtol=rtol, atol=atol, model=model)
        assert info == 0
        assert np.linalg.norm(b - A @ x) <= 1.00025 * max(atol, rtol * np.linalg.norm(b))


@pytest.mark.parametrize("atol", [None, "legacy", -1.0])
def test_invalid_atol(atol):
    A = _suite()["poisson1d"]
    with pytest.raises(ValueError, match="atol"):
        dcdm(A, np.ones(A.shape[0]), atol=atol, model="identity")


def test_rtol_keyword_only():
    A = _suite()["poisson1d"]
    with pytest.raises(TypeError):
        dcdm(A, np.ones(A.shape[0]), None, 1e-5)


def test_callback_stop_iteration():
    A = _suite()["poisson2d"]
    b = np.ones(A.shape[0])
    seen = []

    def cb(r):
        seen.append(r.x.copy())
        if r.nit == 3:
            raise StopIteration

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = numopt.solve(A, b, method="dcdm", rtol=1e-12, callback=cb, model="identity")
    assert res.status == 99 and res.nit == 3
    np.testing.assert_array_equal(res.x, seen[-1])


def test_solve_front_door_result_fields():
    A, b, fluid = random_scene(16, random_state=11)
    res = numopt.solve(A, b, method="dcdm", rtol=1e-6, model="identity", fluid_mask=fluid)
    for key in ("n_network_calls", "n_matvec", "n_fallback", "network_time", "krylov_time", "device", "model"):
        assert key in res
    assert res.success and len(res.history["residual_norm"]) == res.nit
    assert res.history["residual_norm"][-1] <= 1e-6 * np.linalg.norm(b)
    assert res.history["residual_norm"][-1] == pytest.approx(np.linalg.norm(b - A @ res.x), rel=1e-10)
    with pytest.raises(ValueError, match="unknown option"):
        numopt.solve(A, b, method="dcdm", not_an_option=1)


def test_linear_operator_input(p16):
    A, b = p16
    op = spla.aslinearoperator(A)
    res = solve_dcdm(op, b, None, rtol=1e-6, model="identity")
    _, _, nit = cg_count(A, b, rtol=1e-6)
    assert res.success and abs(res.nit - nit) <= 1


def test_more_directions_and_second_pass(p16):
    A, b = p16
    ml = pyamg.smoothed_aggregation_solver(A.tocsr())
    M = ml.aspreconditioner()
    for k, passes in [(1, 1), (4, 2)]:
        res = solve_dcdm(A, b, None, rtol=1e-8, model=lambda r: M @ (r + 0.05 * np.abs(r)), n_directions=k,
                         orth_passes=passes)
        assert res.success


# --- bad input --------------------------------------------------------------------------------------
def test_bad_inputs(p16):
    A, b = p16
    with pytest.raises(ValueError, match="b contains NaN"):
        dcdm(A, np.full(A.shape[0], np.nan), model="identity")
    with pytest.raises(ValueError, match="grid_shape"):
        dcdm(A, b, grid_shape=(16, 16, 15), model="identity")
    with pytest.raises(ValueError, match="grid_shape"):
        dcdm(A, b, grid_shape=(16, 256))
    with pytest.raises(TypeError, match="grid_shape"):
        dcdm(A, b, grid_shape=(16, 16, "a"))
    with pytest.raises(ValueError, match="fluid_mask"):
        dcdm(A, b, fluid_mask=np.ones((16, 16, 17), dtype=bool))
    with pytest.raises(TypeError, match="fluid_mask"):
        dcdm(A, b, fluid_mask=np.ones((16, 16, 16)))
    with pytest.raises(ValueError, match="grid_shape"):
        dcdm(A, b, model="pretrained")
    with pytest.raises(ValueError, match="model"):
        dcdm(A, b, model="no-such-model", grid_shape=(16, 16, 16))
    with pytest.raises(TypeError, match="model"):
        dcdm(A, b, model=3)
    with pytest.raises(ValueError, match="n_directions"):
        dcdm(A, b, model="identity", n_directions=0)
    with pytest.raises(ValueError, match="tol_mode"):
        dcdm(A, b, model="identity", tol_mode="abs")
    with pytest.raises(ValueError, match="b must be a vector"):
        dcdm(A, b[:-1], model="identity")


def test_not_spd_hints():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    with pytest.raises(ValueError, match="symmetric"):
        dcdm(B, np.ones(6), model="identity")
    S = np.diag([1.0, 2.0, -3.0, 4.0])
    with pytest.raises(ValueError, match="positive definite"):
        dcdm(S, np.ones(4), model="identity")
    with pytest.raises(ValueError, match="positive diagonal"):
        dcdm(S, np.ones(4), model="jacobi")


def test_no_grid_falls_back_to_identity_with_warning(p16):
    A, b = p16
    with pytest.warns(UserWarning, match="identity"):
        res = numopt.solve(A, b, method="dcdm", rtol=1e-6)
    assert res.success and res.model == "identity"


def test_no_grid_with_m_is_pcg(p16):
    A, b = p16
    ml = pyamg.ruge_stuben_solver(A.tocsr())
    M = ml.aspreconditioner(cycle="V")
    _, _, nit = cg_count(A, b, rtol=1e-8, M=M)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        res = numopt.solve(A, b, method="dcdm", rtol=1e-8, M=M)
    assert res.success and res.model == "M" and res.nit == nit
