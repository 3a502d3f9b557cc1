"""Adversarial (l_inf-robust) convex ReLU program: kernels, solver vs CVXPY, certificates, attacks, inputs."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import numopt
from numopt.problems import TwoLayerReLU
from numopt.relu import _kernels as K
from numopt.relu._robust import minimize_robust

from ._data import make_data

# --- NumPy references of the two kernels -----------------------------------------------------------------


def _wsoft(q, w, kappa):
    return np.sign(q) * np.maximum(np.abs(q) - kappa * w, 0.0)


def ref_loss_prox(T0, Q0, w, y, logistic, step):
    """Prox of step * l(||q||_{1,w} + h(t)) by plain bisection on the slope theta (row by row)."""
    T, Q = np.empty_like(T0), np.empty_like(Q0)
    for k in range(T0.size):
        q0, t0, yk = Q0[k], T0[k], y[k]
        s = 2 * yk - 1

        def Z(th):
            kap = th * step
            S = w @ np.abs(_wsoft(q0, w, kap))
            return S - s * t0 - kap if logistic else S + max(abs(t0 - yk) - kap, 0.0)

        lprime = (lambda z: 2.0 / (1.0 + np.exp(-2.0 * z))) if logistic else (lambda z: max(z, 0.0))
        lo, hi = 0.0, (2.0 if logistic else Z(0.0))
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid - lprime(Z(mid)) < 0:
                lo = mid
            else:
                hi = mid
        kap = 0.5 * (lo + hi) * step
        Q[k] = _wsoft(q0, w, kap)
        T[k] = t0 + s * kap if logistic else yk + np.sign(t0 - yk) * max(abs(t0 - yk) - kap, 0.0)
    return T, Q


def ref_cone_project(g0, q0, w):
    """Projection onto {min g >= ||q||_{1,w}} by bisection on theta (KKT of the module docstring)."""
    def tau(th):
        return w @ np.abs(_wsoft(q0, w, th))

    def psi(th):
        return np.sum(np.maximum(tau(th) - g0, 0.0)) - th

    lo, hi = 0.0, max(psi(0.0), 0.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if psi(mid) > 0:
            lo = mid
        else:
            hi = mid
    th = 0.5 * (lo + hi)
    return np.maximum(g0, tau(th)), _wsoft(q0, w, th)


@pytest.mark.parametrize("seed", range(6))
def test_cone_project_kernel_matches_reference_and_is_a_projection(seed):
    rng = np.random.default_rng(seed)
    n, J, m = 25, 3, int(rng.integers(0, 5))
    G0 = rng.standard_normal((n, J)) * rng.uniform(0.1, 3) + rng.uniform(-1, 1)
    Q0 = rng.standard_normal((J, m)) * rng.uniform(0.1, 3)
    w = rng.uniform(0.05, 1.0, m)
    G, Q = K.robust_cone_project(G0, Q0, w, np.empty_like(G0), np.empty_like(Q0))
    for j in range(J):
        g, q = ref_cone_project(G0[:, j], Q0[j], w)
        assert np.allclose(G[:, j], g, atol=1e-10) and np.allclose(Q[j], q, atol=1e-10)
        assert G[:, j].min() >= w @ np.abs(Q[j]) - 1e-12                     # feasible
        # projection onto a closed convex cone: <x0 - P x0, P x0> = 0 and the distance is below that to
        # random feasible points
        r = np.concatenate([G0[:, j] - G[:, j], Q0[j] - Q[j]])
        assert abs(r @ np.concatenate([G[:, j], Q[j]])) < 1e-9 * (1 + r @ r)
        for _ in range(20):
            qf = rng.standard_normal(m)
            gf = w @ np.abs(qf) + np.abs(rng.standard_normal(n))
            assert r @ r <= np.sum((G0[:, j] - gf) ** 2) + np.sum((Q0[j] - qf) ** 2) + 1e-12
    if m == 0:
        assert np.array_equal(G, np.maximum(G0, 0.0))


@pytest.mark.parametrize("logistic", [False, True])
def test_loss_prox_kernel_matches_reference(logistic):
    rng = np.random.default_rng(1 + logistic)
    for trial in range(40):
        n, m = 6, int(rng.integers(1, 6))
        T0 = rng.standard_normal(n) * rng.uniform(0.1, 5)
        Q0 = rng.standard_normal((n, m)) * rng.uniform(0.01, 5)
        if trial % 5 == 0:
            Q0[:, 0] = 0.0
        w = rng.uniform(0.01, 2.0, m)
        y = rng.integers(0, 2, n).astype(float) if logistic else np.sign(rng.standard_normal(n))
        step = rng.uniform(0.01, 5.0)
        T, Q = np.empty(n), np.empty((n, m))
        total = K.robust_loss_prox(T0, Q0, w, y, logistic, step, T, Q)
        Tr, Qr = ref_loss_prox(T0, Q0, w, y, logistic, step)
        assert np.allclose(T, Tr, atol=1e-10) and np.allclose(Q, Qr, atol=1e-10)
        z = np.abs(Q) @ w + (-(2 * y - 1) * T if logistic else np.abs(T - y))
        assert total == pytest.approx(np.sum(np.logaddexp(0, 2 * z)) if logistic else 0.5 * z @ z, rel=1e-12)


@pytest.mark.parametrize("case", ["ties", "zero_q", "at_target", "huge_step", "tiny_step", "many_active"])
def test_squared_loss_prox_newton_edge_cases(case):
    """The sort-free Newton of the squared-loss prox on boundary cases, against the bisection reference."""
    rng = np.random.default_rng(7)
    n, m = 5, 6
    T0 = rng.standard_normal(n)
    Q0 = rng.standard_normal((n, m))
    w = rng.uniform(0.05, 1.0, m)
    y = np.sign(rng.standard_normal(n))
    step = 1.0
    if case == "ties":
        Q0[:] = 0.7
        w[:] = 0.3
    elif case == "zero_q":
        Q0[:] = 0.0
    elif case == "at_target":
        T0 = y.copy()
    elif case == "huge_step":
        step = 1e6
    elif case == "tiny_step":
        step = 1e-9
    else:
        Q0 *= 50.0
        w[:] = 0.02
    T, Q = np.empty(n), np.empty((n, m))
    K.robust_loss_prox(T0, Q0, w, y, False, step, T, Q)
    Tr, Qr = ref_loss_prox(T0, Q0, w, y, False, step)
    assert np.allclose(T, Tr, atol=1e-9) and np.allclose(Q, Qr, atol=1e-9)


# --- the problem: robust objective, cones, network ----------------------------------------------------------

def _robust_problem(loss="squared", eps=0.05, n=40, p=3, seed=0, beta=0.5, P=6):
    X, y = make_data(n, p, seed=seed, kind="binary" if loss == "logistic" else "sign")
    return TwoLayerReLU(X, y, beta, n_patterns=P, loss=loss, adversarial_eps=eps, random_state=0)


def test_robust_objective_and_cones_reduce_to_nominal_at_eps0():
    pr0 = _robust_problem(eps=0.0)
    pr = _robust_problem(eps=0.1)
    rng = np.random.default_rng(0)
    V, W = rng.standard_normal((2, pr.dim, pr.n_patterns_))
    assert not pr0.robust and pr.robust
    assert pr0.objective(V, W) == pr0.nominal_objective(V, W) == pytest.approx(pr.nominal_objective(V, W))
    assert pr.objective(V, W) > pr.nominal_objective(V, W)
    # the bias coordinate (last) is never perturbed
    assert pr.eps_weights[-1] == 0 and np.all(pr.eps_weights[:-1] == 0.1)
    E = 2 * pr.Dmat - 1
    l1v = 0.1 * np.abs(V[:-1]).sum(axis=0)
    assert pr.cone_violation(V, W) >= np.max(l1v - E * (pr.X @ V))
    # worst-case squared loss is attained at an end of the prediction interval
    yhat, r = pr.predict_convex(V, W), pr.robust_radius(V, W)
    ends = np.maximum((yhat - r - pr.y) ** 2, (yhat + r - pr.y) ** 2)
    reg = np.linalg.norm(V, axis=0).sum() + np.linalg.norm(W, axis=0).sum()
    assert pr.objective(V, W) == pytest.approx(0.5 * ends.sum() + pr.beta * reg, rel=1e-12)


_SOLVED = {}


def _solved(loss):
    """The small robust instance solved once per session (shared by the CVXPY and attack tests)."""
    if loss not in _SOLVED:
        pr = _robust_problem(loss)
        _SOLVED[loss] = (pr, numopt.minimize(pr, method="admm", rtol=1e-7, maxiter=20000))
    return _SOLVED[loss]


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_robust_solver_matches_cvxpy(loss):
    from numopt.relu._cvx import cvxpy_solve
    pr, res = _solved(loss)
    f_ref, Vr, Wr = cvxpy_solve(pr)
    assert pr.cone_violation(Vr, Wr) < 1e-6
    assert res.success, res.message
    assert abs(res.fun - f_ref) <= 1e-4 * abs(f_ref)
    assert res.cone_violation <= 1e-4 * max(1.0, np.abs(res.v).max(), np.abs(res.w).max())
    # certificate: robust objective >= nominal objective at the solution, and >= the nominal optimum
    assert res.fun >= res.nominal_fun
    f_nom = cvxpy_solve(_robust_problem(loss, eps=0.0))[0]
    assert res.fun >= f_nom - 1e-4 * abs(f_nom)
    # the recovered network's robust objective (activations frozen on the balls) is the convex one
    assert res.network_fun == pytest.approx(res.fun, rel=1e-4)


def test_per_feature_eps_with_unperturbed_features_matches_cvxpy():
    from numopt.relu._cvx import cvxpy_solve
    X, y = make_data(40, 3, seed=0)
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=6, adversarial_eps=[0.1, 0.0, 0.03], random_state=0)
    assert np.array_equal(pr.eps_weights, [0.1, 0.0, 0.03, 0.0])
    res = numopt.minimize(pr, method="admm", rtol=1e-7)
    f_ref = cvxpy_solve(pr)[0]
    assert res.success and abs(res.fun - f_ref) <= 1e-4 * f_ref


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_eps0_robust_solver_reproduces_nominal(loss):
    pr = _robust_problem(loss, eps=0.0)
    nominal = numopt.minimize(pr, method="admm", rtol=1e-8)
    robust = minimize_robust(pr, rtol=1e-8, maxiter=20000)
    assert robust.success
    assert robust.fun == pytest.approx(nominal.fun, rel=1e-5)
    assert np.allclose(pr.predict_convex(robust.v, robust.w), pr.predict_convex(nominal.v, nominal.w), atol=1e-3)


def test_sign_attack_attains_worst_case_margin():
    """With robust cones the net is linear on each ball: x_k - eps y_k sign(c_k) hits y_k x_k^T c_k - eps ||c_k||_1."""
    pr, res = _solved("squared")
    U, a = res.first_layer, res.second_layer
    C = pr.Dmat @ (res.v - res.w).T                      # n x d, row k = c_k (bias coordinate last)
    delta = -0.05 * pr.y[:, None] * np.sign(C)
    delta[:, -1] = 0.0                                   # the bias is not perturbable
    net = np.maximum((pr.X + delta) @ U, 0.0) @ a
    margin = pr.y * pr.predict_convex(res.v, res.w) - 0.05 * np.abs(C[:, :-1]).sum(axis=1)
    scale = 1.0 + np.abs(a).max() * np.abs(U).max()
    assert np.allclose(pr.y * net, margin, atol=1e-5 * scale)
    # and no random point of the balls does worse
    rng = np.random.default_rng(0)
    for _ in range(20):
        dr = rng.uniform(-0.05, 0.05, pr.X.shape)
        dr[:, -1] = 0.0
        assert np.all(pr.y * (np.maximum((pr.X + dr) @ U, 0.0) @ a) >= margin - 1e-5 * scale)


def _pgd_attack(W1, b1, w2, b2, X, y, eps, steps=30, rng=None):
    """l_inf PGD (with a random start) on the margin y f(x) of f(x) = relu(x W1 + b1) w2 + b2; y in {-1, +1}."""
    rng = np.random.default_rng(0) if rng is None else rng
    Xa = X + rng.uniform(-eps, eps, X.shape)
    for _ in range(steps):
        act = (Xa @ W1 + b1 > 0).astype(float)
        grad = (act * w2) @ W1.T * y[:, None]           # d(y f)/dx
        Xa = np.clip(Xa - 0.25 * eps * np.sign(grad), X - eps, X + eps)
    return Xa


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_robust_model_beats_standard_under_pgd(loss):
    """Robust accuracy (PGD at eps) of adversarial training exceeds that of standard training.

    Data with a *non-robust* feature: x2 = 0.1 y + small noise separates the classes perfectly but an eps = 0.15
    perturbation flips it; x1 = y + noise is robust but noisy. Standard training leans on x2.
    """
    from numopt.relu import ConvexReLUClassifier
    rng = np.random.default_rng(0)
    n, eps = 120, 0.15
    y = np.where(rng.random(n) > 0.5, 1, -1)
    X = np.column_stack([y + 0.5 * rng.standard_normal(n), 0.1 * y + 0.02 * rng.standard_normal(n)])
    acc = {}
    for name, e in (("standard", 0.0), ("robust", eps)):
        clf = ConvexReLUClassifier(beta=1.0, n_patterns=10, loss=loss, adversarial_eps=e, random_state=0).fit(X, y)
        Xa = _pgd_attack(clf.first_layer_weights_, clf.first_layer_bias_, clf.second_layer_weights_[:, 0],
                         clf.output_bias_[0], X, y.astype(float), eps)
        assert np.all(np.abs(Xa - X) <= eps + 1e-12)
        acc[name] = (clf.score(X, y), float(np.mean(clf.predict(Xa) == y)))
    assert acc["standard"][0] >= 0.98 and acc["robust"][0] >= 0.95           # both fit the clean data
    assert acc["robust"][1] >= 0.9 and acc["robust"][1] > acc["standard"][1] + 0.3, acc


def test_estimator_end_to_end_per_feature_eps_in_original_units():
    from numopt.relu import ConvexReLUClassifier, ConvexReLURegressor
    X, y = make_data(40, 2, seed=5)
    X = X * np.array([10.0, 0.1]) + 3.0                      # scales differ: eps is in X's units
    clf = ConvexReLUClassifier(beta=0.5, n_patterns=4, adversarial_eps=[0.5, 0.005], random_state=0,
                               max_iter=500).fit(X, y)
    pr = clf._problem
    assert np.allclose(pr.eps_weights[:2], np.array([0.5, 0.005]) / clf.x_scale_) and pr.eps_weights[2] == 0
    res = clf.solver_results_[0]
    assert res.fun >= res.nominal_fun and np.isfinite(res.fun)
    # the fitted network is the recovered one, folded back to X's units
    Z = (X - clf.x_mean_) / clf.x_scale_
    net = np.maximum(np.column_stack([Z, np.ones(len(Z))]) @ res.first_layer, 0.0) @ res.second_layer
    assert np.allclose(clf.decision_function(X), net, atol=1e-9)
    # refitting with another eps rebuilds the problem even with warm_start
    clf2 = ConvexReLUClassifier(beta=0.5, n_patterns=4, random_state=0, warm_start=True, max_iter=100).fit(X, y)
    clf2.set_params(adversarial_eps=0.5).fit(X, y)
    assert clf2._problem.robust
    reg = ConvexReLURegressor(beta=0.5, n_patterns=4, adversarial_eps=0.1, random_state=0, max_iter=300).fit(X, y)
    assert np.isfinite(reg.predict(X)).all()


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"adversarial_eps": -0.1}, ValueError, "adversarial_eps"),
    ({"adversarial_eps": np.nan}, ValueError, "adversarial_eps"),
    ({"adversarial_eps": [0.1]}, ValueError, "adversarial_eps"),
    ({"adversarial_eps": [0.1, -0.1, 0.1]}, ValueError, "adversarial_eps"),
    ({"adversarial_eps": "a"}, TypeError, "adversarial_eps"),
    ({"adversarial_eps": 0.1, "loss": "hinge"}, ValueError, "loss"),
])
def test_bad_robust_inputs(kwargs, exc, match):
    X, y = make_data(10, 3, seed=0)
    with pytest.raises(exc, match=match):
        TwoLayerReLU(X, y, 1.0, n_patterns=3, **kwargs)


def test_robust_solver_bad_options_and_scp_refuses():
    pr = _robust_problem(eps=0.05)
    with pytest.raises(ValueError, match="relaxation"):
        numopt.minimize(pr, method="admm", relaxation=2.5)
    with pytest.raises(ValueError, match="rho_mu"):
        minimize_robust(pr, rho_mu=0.5)
    with pytest.raises(ValueError, match="initial_state"):
        minimize_robust(pr, initial_state={"z": []})
    with pytest.raises(NotImplementedError, match="admm"):
        numopt.minimize(pr, method="scp")
    from numopt.relu import ConvexReLUClassifier
    X, y = make_data(20, 2, seed=0)
    with pytest.raises(ValueError, match="adversarial_eps"):
        ConvexReLUClassifier(adversarial_eps=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="solver"):
        ConvexReLUClassifier(adversarial_eps=0.1, solver="scp").fit(X, y)


def test_warm_start_state_resumes():
    pr = _robust_problem(eps=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r1 = minimize_robust(pr, maxiter=200)
    r2 = minimize_robust(pr, initial_state=r1.state, rtol=1e-4)
    r3 = minimize_robust(pr, rtol=1e-4)
    assert r2.success and r2.nit < r3.nit
    assert r2.fun == pytest.approx(r3.fun, rel=1e-3)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 10), p=st.integers(1, 3), eps=st.floats(1e-4, 2), beta=st.floats(0, 5),
       loss=st.sampled_from(["squared", "logistic"]), seed=st.integers(0, 50), scale=st.floats(1e-3, 1e3))
def test_fuzz_robust_entry_point(n, p, eps, beta, loss, seed, scale):
    """Any finite input gives finite output, feasible-ish cones and robust >= nominal objective."""
    rng = np.random.default_rng(seed)
    X = scale * rng.standard_normal((n, p))
    y = (rng.random(n) > 0.5).astype(float) if loss == "logistic" else np.sign(rng.standard_normal(n))
    pr = TwoLayerReLU(X, y, beta, n_patterns=3, loss=loss, adversarial_eps=eps * scale, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = numopt.minimize(pr, method="admm", maxiter=100)
    assert np.all(np.isfinite(res.x)) and np.isfinite(res.fun)
    assert res.fun >= res.nominal_fun - 1e-12 * max(1.0, abs(res.fun))


# --- presolve: robust cones without interior (the cause of the non-convergence on full breast_cancer) ------


def test_cone_margins_match_cvxpy_lp():
    """The LP depth of every robust cone equals CVXPY's (Clarabel) on the same LP; 0 exactly where no interior."""
    import cvxpy as cp
    from numopt.relu._robust import robust_cone_margins
    X, y = make_data(30, 3, seed=0, kind="reg")
    pr = TwoLayerReLU(X, y, 0.1, n_patterns=8, adversarial_eps=0.1, random_state=0)
    m = robust_cone_margins(pr.X, pr.Dmat, pr.eps_weights)
    E = 2 * pr.Dmat - 1
    for i in range(pr.n_patterns_):
        v, s = cp.Variable(pr.dim), cp.Variable()
        cons = [cp.multiply(E[:, i], pr.X @ v) >= pr.eps_weights @ cp.abs(v) + s, cp.abs(v) <= 1]
        ref = cp.Problem(cp.Maximize(s), cons).solve(solver="CLARABEL")
        assert m[i] == pytest.approx(max(ref, 0.0), abs=1e-7)
    assert np.any(m <= 1e-9) and np.any(m > 1e-3)        # the instance has both kinds of cones


def test_presolve_regression_thin_and_trivial_cones_match_cvxpy():
    """Regression: with cones of no interior ADMM crawled (not converged in 4000 iterations, gap -3.6e-4 with
    cone violation 3e-4 on this instance); the presolve drops them and the solver converges to CVXPY's optimum."""
    from numopt.relu._cvx import cvxpy_solve
    from numopt.relu._robust import robust_cone_margins
    X, y = make_data(50, 4, seed=2, kind="reg")
    pr = TwoLayerReLU(X, y, 0.1, n_patterns=8, adversarial_eps=0.05, random_state=0)
    f_ref, Vr, Wr = cvxpy_solve(pr)
    keep = robust_cone_margins(pr.X, pr.Dmat, pr.eps_weights) > 1e-7
    assert 0 < keep.sum() < pr.n_patterns_
    # dropped patterns are 0 in the oracle's solution too
    assert np.abs(Vr[:, ~keep]).max() < 1e-6 and np.abs(Wr[:, ~keep]).max() < 1e-6
    res = minimize_robust(pr, maxiter=4000)          # 1672 iterations at the default rtol = 1e-5
    assert res.success, res.message
    assert res.n_patterns_kept == keep.sum()
    assert np.all(res.v[:, ~keep] == 0) and np.all(res.w[:, ~keep] == 0)
    assert abs(res.fun - f_ref) <= 1e-4 * f_ref
    assert res.cone_violation <= 2e-4


def test_presolve_all_cones_trivial_gives_zero():
    """eps far above every pattern's margin: the only feasible point is 0 (objective = loss at 0)."""
    X, y = make_data(30, 3, seed=1)
    pr = TwoLayerReLU(X, y, 0.1, n_patterns=5, adversarial_eps=5.0, random_state=0)
    res = minimize_robust(pr)
    assert res.success and res.n_patterns_kept == 0 and res.nit == 1
    assert np.all(res.x == 0) and res.fun == pytest.approx(0.5 * np.sum(pr.y ** 2))


def test_anderson_option_reaches_the_same_optimum():
    """The ``anderson`` option (it raised a TypeError before this round) converges to the plain run's optimum."""
    pr = _robust_problem(eps=0.05)
    plain = minimize_robust(pr, rtol=1e-6, maxiter=20000)
    acc = minimize_robust(pr, rtol=1e-6, maxiter=20000, anderson=5)
    assert plain.success and acc.success
    assert acc.fun == pytest.approx(plain.fun, rel=1e-4)


def test_minimize_keeps_the_robust_solvers_own_defaults():
    """minimize(method="admm") on a robust problem runs the robust ADMM with its own over-relaxation (1.6) and no
    Anderson acceleration, although the nominal ADMM defaults to relaxation 1.9 and Anderson on T^10."""
    pr = _robust_problem(eps=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = numopt.minimize(pr, method="admm", maxiter=40)
        b = minimize_robust(pr, maxiter=40, rtol=1e-6, relaxation=1.6, anderson=0)
    assert np.array_equal(a.x, b.x) and a.nit == b.nit
