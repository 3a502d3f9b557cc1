"""ADMM on the convex ReLU program: CVXPY oracle, equivalence with the recovered network, certificates."""
import warnings

import numpy as np
import pytest

import numopt
from numopt.exceptions import ConvergenceWarning
from numopt.problems import TwoLayerReLU
from numopt.relu._cvx import cvxpy_solve

from ._data import make_data



@pytest.mark.parametrize("path", ["cholesky", "woodbury"])
def test_matches_cvxpy_squared(small_sq, path):
    pr, (f_ref, _, _) = small_sq
    res = numopt.minimize(pr, method="admm", linear_solver=path)
    assert res.success, res.message
    assert res.linear_solver == path
    assert abs(res.fun - f_ref) / f_ref <= 1e-4
    assert res.cone_violation <= 1e-5 * np.abs(pr.X).max()


def test_matches_cvxpy_logistic(small_logistic):
    pr, (f_ref, _, _) = small_logistic
    res = numopt.minimize(pr, method="admm")
    assert res.success, res.message
    assert abs(res.fun - f_ref) / f_ref <= 1e-4


def test_regression_targets_woodbury_default():
    X, y = make_data(30, 4, seed=5, kind="reg")
    pr = TwoLayerReLU(X, y, 0.2, n_patterns=40, random_state=2)   # dP = 200 >> n = 30: Woodbury has fewer flops
    f_ref, _, _ = cvxpy_solve(pr)
    res = numopt.minimize(pr, method="admm")
    assert res.linear_solver == "woodbury"
    assert abs(res.fun - f_ref) / f_ref <= 1e-4


def test_network_equivalence(small_sq):
    """The recovered ReLU net reproduces the convex model on the training data, at the same objective."""
    pr, _ = small_sq
    res = numopt.minimize(pr, method="admm")
    conv = pr.predict_convex(res.v, res.w)
    net = np.maximum(pr.X @ res.first_layer, 0) @ res.second_layer
    scale = np.abs(conv).max()
    # equal up to the cone violation left at the residual tolerance
    assert np.max(np.abs(net - conv)) <= 1e-4 * scale
    assert res.network_gap == pytest.approx(np.max(np.abs(net - conv)))
    assert res.n_neurons == res.second_layer.size == res.first_layer.shape[1]
    assert res.n_neurons <= 2 * pr.n_patterns_
    assert abs(res.network_fun - res.fun) <= 1e-4 * res.fun


def test_beta_above_beta_max_gives_zero():
    X, y = make_data(30, 3, seed=2)
    pr = TwoLayerReLU(X, y, 1.0, n_patterns=6, random_state=0)
    pr = pr.with_beta(1.01 * pr.beta_max())
    res = numopt.minimize(pr, method="admm")
    assert np.all(res.v == 0) and np.all(res.w == 0)
    assert res.n_neurons == 0
    assert res.fun == pytest.approx(0.5 * y @ y, rel=1e-12)


def test_more_patterns_never_worse():
    X, y = make_data(40, 2, seed=4)
    big = TwoLayerReLU(X, y, 0.5, n_patterns=12, random_state=0)
    small = TwoLayerReLU(X, y, 0.5, patterns=big.Dmat[:, :4])
    f_small = numopt.minimize(small, method="admm").fun
    f_big = numopt.minimize(big, method="admm").fun
    assert f_big <= f_small * (1 + 1e-5)


def test_kkt_at_solution(small_sq):
    """Active blocks satisfy beta v_g/||v_g|| = rho lam_g; inactive ones ||rho lam_g|| <= beta."""
    pr, _ = small_sq
    res = numopt.minimize(pr, method="admm")
    V, Lam, rho = res.state["V"], res.state["Lam"], res.state["rho"]
    nv = np.linalg.norm(V, axis=0)
    act = nv > 1e-8
    lhs = pr.beta * V[:, act] / nv[act]
    assert np.max(np.abs(lhs - rho * Lam[:, act])) <= 1e-3 * pr.beta
    assert np.all(np.linalg.norm(rho * Lam[:, ~act], axis=0) <= pr.beta * (1 + 1e-6))


def test_warm_start_state_converges_immediately(small_sq):
    pr, _ = small_sq
    res = numopt.minimize(pr, method="admm")
    again = numopt.minimize(pr, method="admm", initial_state=res.state)
    assert again.nit <= 3
    assert again.fun == pytest.approx(res.fun, rel=1e-6)
    x0 = numopt.minimize(pr, method="admm", x0=res.x)
    assert x0.fun == pytest.approx(res.fun, rel=1e-4)


def test_permutation_invariance_and_determinism():
    X, y = make_data(30, 3, seed=6)
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=8, random_state=3)
    r1 = numopt.minimize(pr, method="admm")
    r2 = numopt.minimize(TwoLayerReLU(X, y, 0.5, n_patterns=8, random_state=3), method="admm")
    assert np.array_equal(r1.x, r2.x)
    perm = np.random.default_rng(0).permutation(30)
    pp = TwoLayerReLU(X[perm], y[perm], 0.5, patterns=pr.Dmat[perm])
    rp = numopt.minimize(pp, method="admm")
    assert rp.fun == pytest.approx(r1.fun, rel=1e-5)


def test_adaptive_rho_and_anderson_reach_same_optimum(small_sq):
    pr, (f_ref, _, _) = small_sq
    for opts in ({"adaptive_rho": True, "rho": 5.0}, {"anderson": 5}):
        res = numopt.minimize(pr, method="admm", **opts)
        assert abs(res.fun - f_ref) / f_ref <= 1e-4, opts


def test_history_callback_and_maxiter(small_sq):
    pr, _ = small_sq
    seen = []

    def cb(r):
        seen.append(r.nit)
        if r.nit == 5:
            raise StopIteration

    res = numopt.minimize(pr, method="admm", callback=cb)
    assert res.status == 99 and res.nit == 5 and seen == [1, 2, 3, 4, 5]
    for key in ("fun", "primal_residual", "dual_residual", "rho", "time"):
        assert len(res.history[key]) == 5
    with pytest.warns(ConvergenceWarning):
        res = numopt.minimize(pr, method="admm", maxiter=3)
    assert not res.success and res.nit == 3


@pytest.mark.parametrize("opts, exc", [
    ({"rho": 0}, ValueError), ({"rho": "a"}, TypeError), ({"relaxation": 2.0}, ValueError),
    ({"maxiter": 0}, ValueError), ({"linear_solver": "lu"}, ValueError), ({"rtol": 0, "atol": 0}, ValueError),
    ({"rho_mu": 1.0}, ValueError), ({"restart_factor": 0}, ValueError), ({"momentum": "yes"}, TypeError), ({"anderson_every": 0}, ValueError), ({"anderson_every": 2.5}, TypeError), ({"initial_state": {"UZ": 1}}, ValueError), ({"initial_state": 3}, TypeError),
    ({"bogus": 1}, ValueError),
])
def test_bad_options(small_sq, opts, exc):
    pr, _ = small_sq
    with pytest.raises(exc):
        numopt.minimize(pr, method="admm", **opts)


def test_bad_x0(small_sq):
    pr, _ = small_sq
    with pytest.raises(ValueError, match="x0"):
        numopt.minimize(pr, np.zeros(3), method="admm")
    with pytest.raises(ValueError, match="x0"):
        numopt.minimize(pr, np.full(2 * pr.n_patterns_ * pr.dim, np.nan), method="admm")


def test_verbose_logs(small_sq, caplog):
    pr, _ = small_sq
    import logging
    with caplog.at_level(logging.INFO, logger="numopt.admm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            numopt.minimize(pr, method="admm", verbose=2, maxiter=3)
    assert any("iter" in r.message for r in caplog.records)


def _reference_admm(pr, rho, alpha, iters):
    """Textbook relaxed scaled ADMM (Boyd et al. 3.4.3) on u = v, G u = s in NumPy, dense A."""
    from numopt.relu._linsolve import USolver
    X, D, y, beta = pr.X, pr.Dmat, pr.y, pr.beta
    n, d = X.shape
    P = D.shape[1]
    E = np.tile(2 * D - 1, 2)
    solver = USolver(pr, rho, "cholesky")
    Fty = X.T @ (D * y[:, None])
    V, Lam = np.zeros((d, 2 * P)), np.zeros((d, 2 * P))
    S, Nu = np.zeros((n, 2 * P)), np.zeros((n, 2 * P))
    for _ in range(iters):
        U = solver.solve(np.hstack([Fty, -Fty]) / rho + V - Lam + X.T @ (E * (S - Nu)))
        Uh = alpha * U + (1 - alpha) * V
        Z = Uh + Lam
        V_new = np.maximum(0, 1 - (beta / rho) / np.maximum(np.linalg.norm(Z, axis=0), 1e-300)) * Z
        Lam = Z - V_new
        Gh = alpha * E * (X @ U) + (1 - alpha) * S
        S = np.maximum(Gh + Nu, 0)
        Nu = Gh + Nu - S
        V = V_new
    return V


@pytest.mark.parametrize("alpha", [1.0, 1.6])
def test_douglas_rachford_form_equals_textbook_admm(small_sq, alpha):
    """The one-state (Douglas-Rachford) iteration reproduces the classic ADMM iterates."""
    pr, _ = small_sq
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = numopt.minimize(pr, method="admm", rho=0.7, relaxation=alpha, maxiter=25, rtol=1e-14, atol=1e-14,
                              momentum=False, anderson=0)
    # iterate k of the solver is v = prox(q_{k-1}): after 25 steps it holds the reference's 24th v
    V = _reference_admm(pr, 0.7, alpha, 24)
    P = pr.n_patterns_
    assert np.allclose(res.v, V[:, :P], atol=1e-9) and np.allclose(res.w, V[:, P:], atol=1e-9)


@pytest.mark.parametrize("opts", [{"momentum": False}, {"momentum": True, "restart_factor": 1.5},
                                  {"momentum": True, "relaxation": 1.0}])
def test_momentum_variants_reach_cvxpy_optimum(small_sq, opts):
    pr, (f_ref, _, _) = small_sq
    res = numopt.minimize(pr, method="admm", anderson=0, **opts)   # momentum runs only without Anderson
    assert res.success and abs(res.fun - f_ref) / f_ref <= 1e-4, opts
    # a lax restart lets momentum blow up here; the safeguard drops it and plain ADMM converges
    assert res.momentum_dropped == (opts.get("restart_factor", 1.0) > 1.0)


def test_momentum_extrapolation_kernel():
    from numopt.relu._kernels import momentum_point
    rng = np.random.default_rng(0)
    Tz, Tp = rng.standard_normal(9), rng.standard_normal(9)
    Tz0, Tp0 = Tz.copy(), Tp.copy()
    out = momentum_point(Tz, Tp, np.empty(9), 0.4)
    assert np.allclose(out, Tz0 + 0.4 * (Tz0 - Tp0), rtol=1e-14) and np.array_equal(Tz, Tz0)
    garbage = np.full(9, np.nan)                        # theta = 0 never reads the previous image
    assert np.array_equal(momentum_point(Tz0, garbage, np.empty(9), 0.0), Tz0)


@pytest.mark.parametrize("opts", [{}, {"anderson_every": 1}, {"anderson_every": 3, "anderson": 4},
                                  {"aa_safeguard": 1e-3}, {"loss": "logistic"}])
def test_anderson_on_k_fold_map_reaches_cvxpy_optimum(small_sq, small_logistic, opts):
    """Anderson on T^K (the default, K = anderson_every = 10), classic Anderson (K = 1), a safeguard that rejects
    almost every extrapolation (plain ADMM chains then), and the logistic loss (inexact u-step): same optimum."""
    opts = dict(opts)
    if opts.pop("loss", None) == "logistic":
        pr, (f_ref, _, _) = small_logistic
    else:
        pr, (f_ref, _, _) = small_sq
    res = numopt.minimize(pr, method="admm", rtol=1e-7, **opts)
    assert res.success and abs(res.fun - f_ref) / abs(f_ref) <= 1e-5, opts
    assert res.n_map_evals == res.nit                  # every chain step is one monitored ADMM iteration
    if opts.get("aa_safeguard") == 1e-3:
        assert res.n_aa_rejected > 0


def test_anderson_chains_match_plain_chain_steps(small_sq):
    """Within a chain the solver takes plain ADMM steps: the first K iterates equal anderson=0's."""
    pr, _ = small_sq
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = numopt.minimize(pr, method="admm", anderson=5, anderson_every=7, maxiter=7, rtol=1e-14, atol=1e-14)
        b = numopt.minimize(pr, method="admm", anderson=0, momentum=False, maxiter=7, rtol=1e-14, atol=1e-14)
    assert np.array_equal(a.history["fun"], b.history["fun"]) and np.array_equal(a.x, b.x)


def test_anderson_memory_wraps_and_matches_plain_optimum(small_sq):
    pr, (f_ref, _, _) = small_sq
    res = numopt.minimize(pr, method="admm", anderson=3)   # ring memory of 3 wraps many times
    assert res.success and abs(res.fun - f_ref) / f_ref <= 1e-4
    assert res.n_map_evals >= res.nit


@pytest.mark.parametrize("loss_fixture", ["small_sq", "small_logistic"])
def test_float32_iterations_reach_the_cvxpy_optimum(loss_fixture, request):
    """float32 state and products: float64 certificates and result, within 1e-3 of CVXPY at rtol = 1e-4."""
    pr, (f_ref, _, _) = request.getfixturevalue(loss_fixture)
    res = numopt.minimize(pr, method="admm", dtype=np.float32, rtol=1e-4)
    assert res.success, res.message
    assert res.dtype == "float32" and res.v.dtype == np.float64 and res.state["V"].dtype == np.float64
    assert abs(res.fun - f_ref) / f_ref <= 1e-3
    r64 = numopt.minimize(pr, method="admm", rtol=1e-4)
    assert r64.dtype == "float64"
    assert abs(res.fun - r64.fun) / r64.fun <= 1e-3
    # its state warm-starts a float64 run, which then needs only a few iterations
    warm = numopt.minimize(pr, method="admm", rtol=1e-4, initial_state=res.state)
    assert warm.success and abs(warm.fun - f_ref) / f_ref <= 1e-3 and warm.nit < r64.nit


@pytest.mark.parametrize("opts, match", [({"dtype": np.int64}, "dtype"), ({"dtype": "float16"}, "dtype"),
                                         ({"dtype": "bogus"}, "dtype"), ({"dtype": None}, "dtype"),
                                         ({"dtype": np.float32, "rtol": 1e-5}, "rtol")])
def test_bad_dtype(small_sq, opts, match):
    pr, _ = small_sq
    with pytest.raises(ValueError, match=match):
        numopt.minimize(pr, method="admm", **opts)


def test_float32_refuses_data_beyond_its_range():
    X, y = make_data(20, 2, seed=2, kind="sign")
    pr = TwoLayerReLU(X * 1e20, y, 0.5, n_patterns=4, random_state=0)
    with pytest.raises(ValueError, match="float32"):
        numopt.minimize(pr, method="admm", dtype=np.float32)
    assert numopt.minimize(pr, method="admm", maxiter=5).nit == 5       # float64 takes it


def test_float32_is_refused_for_the_robust_program():
    X, y = make_data(30, 2, seed=2, kind="sign")
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=6, random_state=0, adversarial_eps=0.05)
    with pytest.raises(ValueError, match="nominal"):
        numopt.minimize(pr, method="admm", dtype=np.float32)


@pytest.mark.parametrize("opts", [{}, {"adaptive_rho": True}, {"anderson": 0, "momentum": True},
                                  {"anderson": 0, "momentum": False}])
def test_float32_woodbury_path_and_variants_reach_the_cvxpy_optimum(opts):
    """float32 through the n x n Woodbury path (its S inverted in float32 when well conditioned), with residual
    balancing (new factors mid-run), momentum and plain ADMM: within 1e-3 of CVXPY at rtol = 1e-4."""
    X, y = make_data(30, 4, seed=5, kind="reg")
    pr = TwoLayerReLU(X, y, 0.2, n_patterns=40, random_state=2)   # dP = 200 >> n = 30: Woodbury
    f_ref, _, _ = cvxpy_solve(pr)
    res = numopt.minimize(pr, method="admm", dtype=np.float32, rtol=1e-4, maxiter=50000, **opts)
    assert res.success and res.linear_solver == "woodbury" and res.dtype == "float32"
    assert abs(res.fun - f_ref) / f_ref <= 1e-3
    assert res.cone_violation <= 1e-3 * np.abs(pr.X).max()


def _top_active(res, k):
    """The k neurons of largest ||u_g|| of a solve, as an ``active`` mask."""
    norms = np.linalg.norm(np.hstack([res.v, res.w]), axis=0)
    act = np.zeros(norms.size, dtype=bool)
    act[np.argsort(-norms)[:k]] = True
    return act


@pytest.mark.parametrize("loss_fixture", ["small_sq", "small_logistic"])
@pytest.mark.parametrize("path", ["cholesky", "woodbury"])
def test_active_fixes_neurons_at_zero_and_matches_cvxpy(loss_fixture, path, request):
    """Neurons outside ``active`` fixed at zero: the optimum of the constrained program (CVXPY with the same
    equality constraints), from a cold start and warm-started from the unconstrained state, both paths."""
    pr, _ = request.getfixturevalue(loss_fixture)
    full = numopt.minimize(pr, method="admm", rtol=1e-6, linear_solver=path)
    act = _top_active(full, 4)
    f_ref, V_ref, W_ref = cvxpy_solve(pr, active=act)
    assert f_ref > full.fun * (1 + 1e-4)                # the constraint binds: a different program
    for kw in ({}, {"initial_state": full.state}):
        res = numopt.minimize(pr, method="admm", rtol=1e-6, linear_solver=path, active=act, **kw)
        assert res.success and abs(res.fun - f_ref) / f_ref <= 1e-4
        UZ = np.hstack([res.v, res.w])
        assert np.all(UZ[:, ~act] == 0) and res.n_neurons <= 4
        assert abs(res.network_fun - res.fun) <= 1e-4 * res.fun     # the equivalence holds for the capped network
    # float32 iterations too
    r32 = numopt.minimize(pr, method="admm", rtol=1e-4, dtype=np.float32, active=act, initial_state=full.state)
    assert abs(r32.fun - f_ref) / f_ref <= 1e-3 and np.all(np.hstack([r32.v, r32.w])[:, ~act] == 0)


def test_active_all_true_is_the_plain_program(small_sq):
    pr, (f_ref, _, _) = small_sq
    m = 2 * pr.n_patterns_
    a = numopt.minimize(pr, method="admm", rtol=1e-6)
    b = numopt.minimize(pr, method="admm", rtol=1e-6, active=np.ones(m, dtype=bool))
    assert a.nit == b.nit and a.fun == b.fun
    none = numopt.minimize(pr, method="admm", active=np.zeros(m, dtype=bool), adaptive_rho=True)
    assert none.n_neurons == 0 and none.fun == pytest.approx(0.5 * np.sum(pr.y ** 2), rel=1e-12)


@pytest.mark.parametrize("active, exc, match", [(np.ones(5, dtype=bool), ValueError, "shape"),
                                                (np.ones(20), TypeError, "boolean"),
                                                (np.ones((2, 10), dtype=bool), ValueError, "shape")])
def test_bad_active(small_sq, active, exc, match):
    pr, _ = small_sq
    with pytest.raises(exc, match=match):
        numopt.minimize(pr, method="admm", active=active)


def test_active_is_refused_for_the_robust_program():
    X, y = make_data(30, 2, seed=2, kind="sign")
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=6, random_state=0, adversarial_eps=0.05)
    with pytest.raises(ValueError, match="nominal"):
        numopt.minimize(pr, method="admm", active=np.ones(12, dtype=bool))
