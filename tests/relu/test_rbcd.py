"""ADMM with randomized block coordinate descent u-steps (method="admm-rbcd"): CVXPY oracle, the block
preconditioning bound, certificates, errors."""
import warnings

import numpy as np
import pytest

import numopt
from numopt.exceptions import ConvergenceWarning
from numopt.problems import TwoLayerReLU

from ._data import make_data



@pytest.mark.parametrize("fixture", ["small_sq", "small_logistic"])
@pytest.mark.parametrize("opts", [{}, {"block_size": 1}, {"block_size": 3, "inner_epochs": 2},
                                  {"max_inner_epochs": 5}])
def test_matches_cvxpy(fixture, opts, request):
    """Same optimum as CVXPY (1e-4 relative), cones held, and the recovered network equals the convex model."""
    pr, (f_ref, _, _) = request.getfixturevalue(fixture)
    res = numopt.minimize(pr, method="admm-rbcd", rtol=1e-6, maxiter=50000, random_state=0, **opts)
    assert res.success and res.n_block_steps >= res.nit
    assert res.u_residual <= 1e-4 * np.linalg.norm(pr.X.T @ (pr.Dmat * pr.loss_grad(np.zeros(pr.X.shape[0]))[:, None]))
    assert abs(res.fun - f_ref) / f_ref <= 1e-4
    assert res.cone_violation <= 1e-4 * np.abs(pr.X).max()
    assert abs(res.network_fun - res.fun) <= 1e-4 * res.fun
    exact = numopt.minimize(pr, method="admm", rtol=1e-6)
    UZ, UZe = np.hstack([res.v, res.w]), np.hstack([exact.v, exact.w])
    assert np.linalg.norm(UZ - UZe) <= 1e-2 * np.linalg.norm(UZe)


def test_block_preconditioner_bounds_the_condition_number():
    """The derivation behind the block steps: with C = I + X^T X, the u-subproblem's Hessian on a block of b
    patterns, F_B^T F_B + rho (I (x) C), has its C-preconditioned spectrum in [rho, rho + 2b], whatever X's scale."""
    rng = np.random.default_rng(0)
    for scale in (1e-2, 1.0, 30.0):
        Xb = np.hstack([scale * rng.standard_normal((40, 3)), np.ones((40, 1))])
        D = (rng.random((40, 6)) < 0.5).astype(float)         # the bound holds for any 0/1 patterns
        d = Xb.shape[1]
        C = np.eye(d) + Xb.T @ Xb
        L = np.linalg.cholesky(C)
        for rho, pats in ((0.1, [0, 1]), (1.0, [2, 3, 4]), (5.0, [5])):
            b = len(pats)
            F = np.hstack([D[:, [i]] * Xb for i in pats] + [-D[:, [i]] * Xb for i in pats])     # n x 2bd
            H = F.T @ F + rho * np.kron(np.eye(2 * b), C)
            Linv = np.linalg.inv(np.kron(np.eye(2 * b), L))
            ev = np.linalg.eigvalsh(Linv @ H @ Linv.T)
            assert ev.min() >= rho * (1 - 1e-9) and ev.max() <= (rho + 2 * b) * (1 + 1e-9)
            if scale > 1:                                      # unpreconditioned, the scale of X shows
                assert np.linalg.cond(H) > 10 * (1 + 2 * b / rho)


def test_x0_and_determinism(small_sq):
    pr, _ = small_sq
    a = numopt.minimize(pr, method="admm-rbcd", rtol=1e-5, random_state=3)
    b = numopt.minimize(pr, method="admm-rbcd", rtol=1e-5, random_state=3)
    assert a.nit == b.nit and np.array_equal(a.x, b.x)
    warm = numopt.minimize(pr, a.x, method="admm-rbcd", rtol=1e-5, random_state=3)
    assert warm.success and warm.fun == pytest.approx(a.fun, rel=1e-4)     # x0 starts u; the duals start at 0


def test_non_convergence_is_reported(small_sq):
    pr, _ = small_sq
    with pytest.warns(ConvergenceWarning):
        res = numopt.minimize(pr, method="admm-rbcd", maxiter=3)
    assert not res.success and res.nit == 3 and np.all(np.isfinite(res.x))


@pytest.mark.parametrize("opts", [{"block_size": 0}, {"inner_epochs": 0}, {"max_inner_epochs": 0},
                                  {"relaxation": 2.0}, {"rho": -1.0},
                                  {"rtol": 0.0, "atol": 0.0}])
def test_bad_options(small_sq, opts):
    pr, _ = small_sq
    with pytest.raises(ValueError):
        numopt.minimize(pr, method="admm-rbcd", **opts)


def test_robust_program_is_refused():
    X, y = make_data(30, 2, seed=2, kind="sign")
    pr = TwoLayerReLU(X, y, 0.5, n_patterns=6, random_state=0, adversarial_eps=0.05)
    with pytest.raises(ValueError, match="nominal"):
        numopt.minimize(pr, method="admm-rbcd")


def test_logs_progress(small_sq, caplog):
    import logging
    pr, _ = small_sq
    with caplog.at_level(logging.INFO, logger="numopt"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numopt.minimize(pr, method="admm-rbcd", maxiter=20, verbose=True)
    assert any("admm-rbcd" in r.name or "admm-rbcd" in r.getMessage() for r in caplog.records)
