"""SNS: derivatives, optimality, agreement with log-Sinkhorn and with POT, the LP limit, robustness."""
import warnings

import numpy as np
import ot
import pytest

import numopt
from numopt.exceptions import ConvergenceWarning
from numopt.ot._sinkhorn import Workspace
from numopt.problems import OptimalTransport

from _ot_cases import grid_problem, random_problem


def _fd_setup(seed=0):
    a, b, M = random_problem(8, 6, seed=seed)
    prob = OptimalTransport(a, b, M, 0.3)
    ws = Workspace(prob)
    rng = np.random.default_rng(seed)
    lu, lv = rng.standard_normal(8) * 0.3, rng.standard_normal(6) * 0.3
    return prob, ws, lu, lv, rng


def test_gradient_and_hessian_match_finite_differences():
    prob, ws, lu, lv, rng = _fd_setup()
    n, m = lu.size, lv.size

    def fg(z):
        f = ws.dual_pass(z[:n].copy(), z[n:].copy())
        return f, np.concatenate([ws.a - ws.r, ws.b - ws.c]), ws.plans[0].copy()

    z = np.concatenate([lu, lv])
    f0, g0, P = fg(z)
    H = np.block([[np.diag(P.sum(1)), P], [P.T, np.diag(P.sum(0))]])
    for _ in range(3):
        d = rng.standard_normal(n + m)
        h = 1e-6
        fp, gp, _ = fg(z + h * d)
        fm, gm, _ = fg(z - h * d)
        assert (fp - fm) / (2 * h) == pytest.approx(g0 @ d, rel=1e-7, abs=1e-9)
        np.testing.assert_allclose((gp - gm) / (2 * h), -H @ d, rtol=1e-6, atol=1e-9)
    # the brief's f(x, y) = reg (f~ + sum a) in the potentials x = reg (lu + 1), y = reg lv
    x, y = prob.reg * (lu + 1), prob.reg * lv
    E = (x[:, None] + y[None, :] - prob.M) / prob.reg - 1
    f_brief = -prob.reg * np.exp(E).sum() + ws.a @ x + ws.b @ y
    assert prob.reg * (f0 + ws.a.sum()) == pytest.approx(f_brief, rel=1e-12)
    # gauge: (1, -1) is in the null space of H
    e = np.concatenate([np.ones(n), -np.ones(m)])
    np.testing.assert_allclose(H @ e, 0, atol=1e-14)


def _optimality(res, prob, tol):
    P = res.plan
    assert np.abs(P.sum(1) - prob.a).sum() + np.abs(P.sum(0) - prob.b).sum() <= 10 * tol
    # strong duality: primal = dual
    assert res.fun == pytest.approx(res.dual, rel=1e-9, abs=1e-12)
    # P_ij = exp((x_i + y_j - M_ij)/reg - 1)
    x, y = res.x[:prob.n], res.x[prob.n:]
    np.testing.assert_allclose(P, np.exp((x[:, None] + y[None, :] - prob.M) / prob.reg - 1), rtol=1e-9,
                               atol=1e-300)


@pytest.mark.parametrize("case", ["random", "grid2", "grid1"])
def test_sns_optimality_and_agreement_with_log_sinkhorn(case):
    if case == "random":
        a, b, M = random_problem(60, 50, seed=1)
        reg = 0.01
    else:
        a, b, M = grid_problem(8, p=2 if case == "grid2" else 1)
        reg = 0.02
    prob = OptimalTransport(a, b, M, reg)
    res = numopt.minimize(prob, method="sns", tol=1e-12, maxiter=500)
    assert res.success, res.message
    assert res.marginal_error <= 1e-12
    assert res.nit_newton > 0 and res.nit == res.nit_sinkhorn + res.nit_newton + res.nit_fallback_sweeps
    _optimality(res, prob, 1e-12)
    ref = numopt.minimize(prob, method="sinkhorn_log", tol=1e-13, maxiter=200000)
    assert ref.success
    np.testing.assert_allclose(res.plan, ref.plan, rtol=1e-7, atol=1e-12)
    assert res.cost == pytest.approx(ref.cost, rel=1e-9)
    # potentials agree after centring the gauge
    def centred(r):
        x, y = r.x[:prob.n], r.x[prob.n:]
        t = (y.sum() - x.sum()) / (prob.n + prob.m)
        return np.concatenate([x + t, y - t])
    np.testing.assert_allclose(centred(res), centred(ref), atol=1e-7 * reg)


def test_sns_matches_pot_at_moderate_reg():
    rs = np.random.RandomState(0)
    x = rs.randn(100, 2)
    M = ot.dist(x, x)
    u = np.ones(100) / 100
    Pp = ot.sinkhorn(u, u, M, 1.0, stopThr=1e-13, numItermax=100000)
    for method in ("sns", "sinkhorn_log", "sinkhorn"):
        P = numopt.ot.sinkhorn(u, u, M, 1.0, method=method, stopThr=1e-12)
        np.testing.assert_allclose(P, Pp, rtol=1e-8, atol=1e-14)
        P10 = numopt.ot.sinkhorn(u, u, M, 1.0, method=method, stopThr=1e-10)
        np.testing.assert_allclose(P10.sum(0), u, atol=1e-5)
        np.testing.assert_allclose(P10.sum(1), u, atol=1e-5)
        np.testing.assert_allclose(P10, ot.sinkhorn(u, u, M, 1.0, stopThr=1e-10), atol=1e-5)


def test_cost_tends_to_emd2_within_entropic_bias():
    a, b, M = random_problem(40, 35, seed=2)
    lp = ot.emd2(a, b, M)
    H = min(-(a * np.log(a)).sum(), -(b * np.log(b)).sum())
    gaps = []
    for reg in (1e-1, 1e-2, 1e-3):
        res = numopt.minimize(OptimalTransport(a, b, M, reg), method="sns", tol=1e-10, maxiter=3000)
        assert res.success
        gap = res.cost - lp
        assert -1e-9 <= gap <= reg * H + 1e-9
        gaps.append(gap)
    assert gaps[-1] < gaps[0] and gaps[-1] < 1e-3


def test_zero_masses_small_reg_no_nan():
    a, b, M = random_problem(30, 25, seed=3, zeros=True)
    for reg in (1e-5 * M.max(), 1e-3):
        res = numopt.minimize(OptimalTransport(a, b, M, reg), method="sns", tol=1e-9, maxiter=2000, warn=False)
        for key in ("plan", "cost", "marginal_error", "fun", "dual"):
            assert np.all(np.isfinite(res[key])), key
        assert np.all(res.plan[a == 0] == 0) and np.all(res.plan[:, b == 0] == 0)
        assert np.all(np.isneginf(res.log_u[a == 0])) and np.all(np.isfinite(res.log_u[a > 0]))
        assert np.all(np.isneginf(res.log_v[b == 0]))
        if reg == 1e-3:
            assert res.success
            np.testing.assert_allclose(res.plan.sum(1), a, atol=1e-9)
            np.testing.assert_allclose(res.plan.sum(0), b, atol=1e-9)


def test_sparsity_rules_and_options():
    a, b, M = random_problem(50, 50, seed=4)
    prob = OptimalTransport(a, b, M, 0.005)
    base = numopt.minimize(prob, method="sns", tol=1e-11)
    assert base.success
    for sp in (("lambda", 6 / 50), ("k", 300), ("mass", 1e-3)):
        res = numopt.minimize(prob, method="sns", tol=1e-11, sparsity=sp, maxiter=3000)
        assert res.success, sp
        np.testing.assert_allclose(res.plan, base.plan, rtol=1e-6, atol=1e-12)
        assert np.all((res.density > 0) & (res.density <= 0.1 + 1e-12))
    with pytest.raises(ValueError, match="sparsity"):
        numopt.minimize(prob, method="sns", sparsity=("top", 3))
    with pytest.raises(TypeError, match="sparsity"):
        numopt.minimize(prob, method="sns", sparsity=1e-5)
    with pytest.raises(ValueError, match="density_max"):
        numopt.minimize(prob, method="sns", density_max=2.0)
    with pytest.raises(ValueError, match="unknown option"):
        numopt.minimize(prob, method="sns", foo=1)


def test_fallback_sweeps_still_converge(monkeypatch):
    # every other Newton direction is turned into a descent direction: the line search must reject it
    # and fall back to an exact Sinkhorn sweep
    from numopt.ot import _sns
    real = _sns.kern.pcg_schur
    calls = []

    def flaky(*args):
        dz, it, rel = real(*args)
        calls.append(it)
        return (-dz if len(calls) % 2 else dz), it, rel

    monkeypatch.setattr(_sns.kern, "pcg_schur", flaky)
    a, b, M = grid_problem(5, p=2)
    prob = OptimalTransport(a, b, M, 0.05)
    res = numopt.minimize(prob, method="sns", tol=1e-10, n_sinkhorn=0, maxiter=500)
    assert res.success
    assert res.n_fallback > 0 and res.nit_newton > 0
    stages = np.asarray(res.history["stage"])
    assert np.sum(stages == 2) == res.n_fallback and np.sum(stages == 1) == res.nit_newton
    ref = numopt.minimize(prob, method="sinkhorn_log", tol=1e-12, maxiter=100000)
    np.testing.assert_allclose(res.plan, ref.plan, rtol=1e-6, atol=1e-12)


def test_warm_start_from_solution_returns_at_once():
    a, b, M = random_problem(20, 20, seed=5)
    prob = OptimalTransport(a, b, M, 0.05)
    res = numopt.minimize(prob, method="sns", tol=1e-11)
    again = numopt.minimize(prob, res.x, method="sns", tol=1e-10)
    assert again.nit == 0 and again.success
    np.testing.assert_allclose(again.plan, res.plan, rtol=1e-10)
    with pytest.raises(ValueError, match="x0"):
        numopt.minimize(prob, np.zeros(3), method="sns")
    bad = res.x.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="x0"):
        numopt.minimize(prob, bad, method="sns")


def test_maxiter_callback_and_history():
    a, b, M = random_problem(30, 30, seed=6)
    prob = OptimalTransport(a, b, M, 1e-3)
    with pytest.warns(ConvergenceWarning):
        res = numopt.minimize(prob, method="sns", maxiter=22)
    assert not res.success and res.status == 1 and res.nit == 22
    seen = []

    def cb(r):
        seen.append(r.err)
        if len(seen) == 4:
            raise StopIteration

    res = numopt.minimize(prob, method="sns", callback=cb)
    assert res.status == 99 and len(seen) == 4
    res = numopt.minimize(prob, method="sns", tol=1e-10)
    err = res.history["err"]
    assert err[-1] == pytest.approx(res.marginal_error) and err[-1] <= 1e-10
    assert len(res.cg_iters) == res.nit_newton + res.n_fallback


def test_float32_inputs_keep_dtype():
    a, b, M = random_problem(25, 20, seed=7)
    a32, b32, M32 = a.astype(np.float32), b.astype(np.float32), M.astype(np.float32)
    for method in ("sns", "sinkhorn_log"):
        res = numopt.minimize(OptimalTransport(a32, b32, M32, 0.01), method=method, tol=1e-9, maxiter=5000)
        assert res.plan.dtype == np.float32 and res.x.dtype == np.float32
        assert res.success
        np.testing.assert_allclose(res.plan.sum(1), a32, atol=1e-6)


def test_verbose_logs(caplog):
    a, b, M = random_problem(10, 10, seed=8)
    with caplog.at_level("INFO", logger="numopt.sns"):
        numopt.minimize(OptimalTransport(a, b, M, 0.05), method="sns", verbose=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        numopt.minimize(OptimalTransport(a, b, M, 0.05), method="sns", maxiter=1, warn=False)


def test_newton_estimates_stay_within_their_bound():
    # the marginal estimates between dense passes: exact on the pattern, bracketed off it
    from numopt.ot._sns import _Newton, _Scaled
    a, b, M = random_problem(60, 50, seed=12)
    prob = OptimalTransport(a, b, M, 0.01)
    sc = _Scaled(prob, floor_frac=1e-8)
    rng = np.random.default_rng(0)
    lu = rng.standard_normal(60)
    lv = rng.standard_normal(50)
    sc.absorb(lu, lv)
    r, c = sc.rc(lu, lv, hist=True)
    newton = _Newton(sc, lu, lv, r, c, "mass", 1e-3, 0.1)
    assert 0 < newton.dropped <= 1e-3 * (1 + 1e-9)
    for step in (1e-3, 1e-1, 1.0):
        lu2 = lu + step * rng.standard_normal(60)
        lv2 = lv + step * rng.standard_normal(50)
        vals, re, ce, bound = newton.estimate(lu2, lv2)
        P = np.exp(lu2[:, None] - prob.M_red / prob.reg + lv2[None, :])
        err_true = np.abs(P.sum(1) - sc.a).sum() + np.abs(P.sum(0) - sc.b).sum()
        err_est = np.abs(re - sc.a).sum() + np.abs(ce - sc.b).sum()
        assert np.abs(re - P.sum(1)).sum() + np.abs(ce - P.sum(0)).sum() <= bound * (1 + 1e-9) + 1e-15
        assert abs(err_est - err_true) <= bound * (1 + 1e-9) + 1e-15
        # and the dense refresh: exact sums, zero bound
        _, r2, c2, bound2 = newton.refresh(lu2, lv2, reselect=step == 1.0, dense=True)
        np.testing.assert_allclose(r2, P.sum(1), rtol=1e-12)
        np.testing.assert_allclose(c2, P.sum(0), rtol=1e-12)
        assert bound2 == 0.0


def test_newton_from_candidates_brackets_the_dense_sums():
    # references from the candidates of the base (no dense pass): exact on them, bounded off them
    from numopt.ot._sns import _Newton, _Scaled
    a, b, M = random_problem(60, 50, seed=14)
    prob = OptimalTransport(a, b, M, 0.02)
    sc = _Scaled(prob, floor_frac=1e-8, window=6.0)
    sc.cand_limit = np.inf             # (only the brackets are tested here)
    rng = np.random.default_rng(1)
    lu = rng.standard_normal(60)
    lv = rng.standard_normal(50)
    sc.absorb(lu, lv)
    assert sc.win == 6.0 and sc.cand is not None
    E = lv[None, :] - prob.M_red / prob.reg
    B = np.exp(E - E.max(1)[:, None])
    assert sc.cand[0][-1] == (B >= np.exp(-6.0)).sum() < B.size and not sc.dense
    newton = _Newton.from_candidates(sc, lu, lv, "mass", 1e-3, 0.1)
    assert newton is not None and newton.from_cand
    for step in (0.0, 1e-2, 0.3):
        lu2 = lu + step * rng.standard_normal(60)
        lv2 = lv + step * rng.standard_normal(50)
        _, re, ce, bound = newton.estimate(lu2, lv2)
        P = np.exp(lu2[:, None] - prob.M_red / prob.reg + lv2[None, :])
        assert 0 < bound
        assert np.abs(re - P.sum(1)).sum() + np.abs(ce - P.sum(0)).sum() <= bound * (1 + 1e-9) + 1e-15
        _, r2, c2, bound2 = newton.refresh(lu2, lv2, reselect=True)
        assert newton.from_cand and sc.passes["rc"] == sc.passes["hist"] == sc.passes["absorb"] == 0
        assert np.abs(r2 - P.sum(1)).sum() + np.abs(c2 - P.sum(0)).sum() <= bound2 * (1 + 1e-9) + 1e-15
    # a limit the bound cannot meet: no candidate reference, the refresh makes a dense pass
    sc.cand_limit = 0.0
    assert _Newton.from_candidates(sc, lu, lv, "mass", 1e-3, 0.1) is None
    _, r3, c3, bound3 = newton.refresh(lu, lv, reselect=False)
    assert bound3 == 0.0 and sc.passes["rc"] == 0 and sc.passes["hist"] == sc.passes["absorb"] == 1
    P = np.exp(lu[:, None] - prob.M_red / prob.reg + lv[None, :])
    np.testing.assert_allclose(r3, P.sum(1), rtol=1e-12)
    np.testing.assert_allclose(c3, P.sum(0), rtol=1e-12)


def test_sns_candidates_replace_the_dense_passes():
    # random assignment at small reg: the Newton stage makes no dense pass (only the Sinkhorn sweeps,
    # the exponential pass and the final pass touch n x m data), and the answer is the one of the
    # dense-pass path (candidate_window=0)
    rng = np.random.default_rng(15)
    n = 600
    M = rng.random((n, n))
    a = np.full(n, 1.0 / n)
    prob = OptimalTransport(a, a, M, 1 / 1200)
    res = numopt.minimize(prob, method="sns", tol=1e-10)
    ref = numopt.minimize(prob, method="sns", tol=1e-10, candidate_window=0.0)
    assert res.success and ref.success and res.marginal_error <= 1e-10
    assert res.passes["scan"] == 1 and res.passes["final"] == 1
    assert res.passes["rc"] + res.passes["hist"] + res.passes["extract"] == 0
    assert ref.passes["rc"] + ref.passes["hist"] >= 2
    np.testing.assert_allclose(res.plan, ref.plan, rtol=1e-6, atol=1e-12)
    assert res.cost == pytest.approx(ref.cost, rel=1e-9)
    with pytest.raises(ValueError, match="candidate_window"):
        numopt.minimize(prob, method="sns", candidate_window=-1.0)


def test_sns_counts_passes_and_reaches_tol_at_small_reg():
    a, b, M = random_problem(80, 70, seed=13)
    prob = OptimalTransport(a, b, M, 1e-3)
    res = numopt.minimize(prob, method="sns", tol=1e-10, maxiter=2000)
    assert res.success and res.marginal_error <= 1e-10
    P = res.plan
    assert np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum() == pytest.approx(res.marginal_error, rel=1e-6,
                                                                                  abs=1e-15)
    assert res.passes["absorb"] + res.passes["scan"] >= 1 and res.passes["final"] == 1
    assert res.cost == pytest.approx((P * M).sum(), rel=1e-12)
    with pytest.raises(ValueError, match="refresh_ratio"):
        numopt.minimize(prob, method="sns", refresh_ratio=0.0)


def _fuzz_case(want):
    # the random-problem generator under which a loose Schur-CG solve once made Newton stall
    rng = np.random.default_rng(123)
    for trial in range(want + 1):
        n, m = int(rng.integers(2, 700)), int(rng.integers(2, 700))
        kind = trial % 4
        if kind == 0:
            M = rng.random((n, m))
        elif kind == 1:
            x, y = rng.random((n, 2)), rng.random((m, 2))
            M = ((x[:, None] - y[None]) ** 2).sum(-1)
            M /= M.max()
        elif kind == 2:
            M = rng.random((n, m)) * 10 - 5
        else:
            M = np.abs(rng.random((n, 1)) - rng.random((m, 1)).T)
        a, b = rng.random(n) ** 3, rng.random(m) ** 3
        if trial % 5 == 0:
            a[rng.integers(0, n)] = 0.0
        a, b = a / a.sum(), b / b.sum()
        reg = float(10 ** rng.uniform(-3.5, -0.5)) * (np.ptp(M) + 1e-12)
    return a, b, M, reg


@pytest.mark.parametrize("trial", [1, 14])
def test_sns_tightens_cg_after_damped_steps(trial):
    # trial 1 (a W2 cloud, small reg) stalled near 1e-5 and trial 14 (large reg) near 1e-7 with the loose
    # forcing term alone; both converge once a damped step tightens the next solve
    a, b, M, reg = _fuzz_case(trial)
    res = numopt.minimize(OptimalTransport(a, b, M, reg), method="sns", tol=1e-9, maxiter=500)
    assert res.success and res.marginal_error <= 1e-9
    P = res.plan
    assert np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum() <= 1e-9


def test_candidate_window_narrows_to_fit_and_gives_up_below_its_floor():
    # the window is the widest integer in [30, window] whose candidates (estimated on a sample of rows)
    # fill at most half the room; none fits: no candidates, the dense path
    from numopt.ot._sns import _Scaled
    rng = np.random.default_rng(16)
    n = 400
    M = rng.random((n, n))
    a = np.full(n, 1.0 / n)
    lv = np.zeros(n)
    for reg, expect in ((1 / 1200, 40.0), (1 / 700, None), (1 / 20, 0.0)):
        sc = _Scaled(OptimalTransport(a, a, M, reg))
        w = sc._choose_window(lv)
        half_room = 0.5 * sc.ccols.size
        E = -M / reg
        dist = E.max(1)[:, None] - E                   # distances below the row maximum
        if expect is None:                             # narrowed: 30 <= w < 40, and w + 1 would not fit
            assert 30.0 <= w < 40.0
            assert (dist < w + 1).sum() > 0.8 * half_room
        else:
            assert w == expect
        if w > 0:
            assert (dist < w).sum() <= 1.2 * half_room   # (a sample: within 20 %)
    res = numopt.minimize(OptimalTransport(a, a, M, 1 / 20), method="sns", tol=1e-9)
    assert res.success and res.passes["scan"] == 0 and res.passes["absorb"] == 1


def _pot_reference(a, b, M, reg):
    # POT's log-domain Sinkhorn run far past our tolerance (an independent oracle; ~4,000 sweeps here)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        G = ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", numItermax=100000, stopThr=1e-13)
    assert np.abs(G.sum(1) - a).sum() + np.abs(G.sum(0) - b).sum() <= 1e-10
    return G


@pytest.mark.parametrize("trial", [48, 139])
def test_sns_converges_where_sinkhorn_does_with_few_points_on_one_side(trial):
    # trial 48: 669 x 2, reg = 5.0e-4 of the cost range. The density cap (10 % of n m = 134 entries) left
    # most rows out of the Newton pattern, and Newton crawled like Sinkhorn (which needs 3,440 sweeps):
    # success=False at maxiter. Trial 139: 3 x 162 (the semi-dual rescue then eliminates the columns).
    a, b, M, reg = _fuzz_case(trial)
    assert min(M.shape) <= 3 and reg < 1e-3 * np.ptp(M)
    res = numopt.minimize(OptimalTransport(a, b, M, reg), method="sns", tol=1e-9)
    assert res.success and res.marginal_error <= 1e-9
    P = res.plan
    assert np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum() <= 1e-9
    G = _pot_reference(a, b, M, reg)
    np.testing.assert_allclose(P, G, atol=1e-9)
    assert res.cost == pytest.approx((G * M).sum(), rel=1e-9)
    # the pattern is no longer cut to density_max (10 %) below one entry per row of the longer side
    assert np.all(res.density * M.size >= max(M.shape))
    # the POT-style front door, default options, reports the rescue in its log
    G2, log = numopt.ot.sinkhorn(a, b, M, reg, stopThr=1e-9, log=True)
    np.testing.assert_allclose(G2, P, atol=1e-12)
    assert log["nit_rescue"] == res.nit_rescue


def test_stalled_newton_finishes_with_the_semidual_rescue():
    # trial 187 (163 x 195, 1-D |x - y| cost: non-unique LP optima, reg = 3.6e-4 of the range): the sparse
    # Newton stage stalls near 4e-3 and log-Sinkhorn needs 14,720 sweeps; the rescue converges
    a, b, M, reg = _fuzz_case(187)
    prob = OptimalTransport(a, b, M, reg)
    res = numopt.minimize(prob, method="sns", tol=1e-9)
    assert res.success and res.marginal_error <= 1e-9 and res.nit <= 1000
    assert res.nit_rescue > 0 and 3 in set(np.asarray(res.history["stage"]).tolist())
    assert res.nit == res.nit_sinkhorn + res.nit_newton + res.nit_fallback_sweeps + res.nit_rescue
    ref = numopt.minimize(prob, method="sinkhorn_log", tol=1e-11, maxiter=40000)   # 15,920 sweeps, ~1 s
    assert ref.success
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-9)
    assert res.cost == pytest.approx(ref.cost, rel=1e-9)
    # without the rescue a stall takes Sinkhorn sweeps instead: measured 819 iterations (358 with it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        off = numopt.minimize(prob, method="sns", tol=1e-9, rescue_flops=0)
    assert off.nit_rescue == 0 and (not off.success or off.nit > 2 * res.nit)


def test_stall_without_the_rescue_takes_sinkhorn_sweeps():
    # trial 214 (258 x 529, reg = 7.6e-3 of the range): Newton stalled near 2e-8 for 987 steps although
    # Sinkhorn converges in 80 sweeps; with the rescue off, a stall now makes fallback sweeps
    a, b, M, reg = _fuzz_case(214)
    res = numopt.minimize(OptimalTransport(a, b, M, reg), method="sns", tol=1e-9, rescue_flops=0)
    assert res.success and res.marginal_error <= 1e-9 and res.nit_rescue == 0 and res.n_fallback >= 1
    G = _pot_reference(a, b, M, reg)
    np.testing.assert_allclose(res.plan, G, atol=1e-9)


def test_semidual_rescue_options_are_checked():
    prob = OptimalTransport(*random_problem(6, 5)[:2], random_problem(6, 5)[2], 0.1)
    with pytest.raises(ValueError, match="stall_iters"):
        numopt.minimize(prob, method="sns", stall_iters=0)
    with pytest.raises(ValueError, match="rescue_flops"):
        numopt.minimize(prob, method="sns", rescue_flops=-1.0)


def test_rescue_without_an_ascent_step_reports_a_breakdown(monkeypatch):
    # a rescue that ends above tol before maxiter (no acceptable step left) must not read "maxiter reached"
    import numopt.ot._sns as sns_mod
    a, b, M, reg = _fuzz_case(187)                # stalls, then goes to the rescue (see above)

    def no_progress(problem, lu, lv, tol, maxiter, report=None, armijo=1e-4):
        return lu, lv, 0, 60, 1.0
    monkeypatch.setattr(sns_mod, "_semidual_rescue", no_progress)
    with pytest.warns(ConvergenceWarning):
        res = numopt.minimize(OptimalTransport(a, b, M, reg), method="sns", tol=1e-9)
    assert not res.success and res.status == 3 and res.nit < 1000
    assert "rescue found no ascent step" in res.message
