"""Every Numba kernel of numopt.ot against a NumPy reference."""
import numpy as np
import pytest
from scipy.special import logsumexp

from numopt.ot import _kernels as kern
from numopt.ot._sns import select_threshold


def _state(n=37, m=23, seed=0, scale=50.0):
    rng = np.random.default_rng(seed)
    K = -rng.random((n, m)) * scale
    lu = rng.standard_normal(n)
    lv = rng.standard_normal(m)
    a = rng.random(n) + 0.1
    a /= a.sum()
    b = rng.random(m) + 0.1
    b /= b.sum()
    return K, lu, lv, a, b


def test_fexp_matches_numpy():
    x = np.concatenate([np.linspace(-707.9, 708.9, 200001), [0.0, 1e-300, -1e-300, 1.0, -1.0]])
    y = kern.fexp_array(x)
    np.testing.assert_allclose(y, np.exp(x), rtol=1e-15, atol=0)
    edge = kern.fexp_array(np.array([-745.0, -1e4, 710.0, np.inf, -np.inf, np.nan]))
    assert edge[0] == 0 and edge[1] == 0 and edge[2] == np.inf and edge[3] == np.inf and edge[4] == 0
    assert np.isnan(edge[5])


@pytest.mark.parametrize("nchunk", [1, 2, 5])
def test_dual_pass_matches_numpy(nchunk):
    K, lu, lv, a, b = _state()
    n, m = K.shape
    P, r, c = np.empty((n, m)), np.empty(n), np.empty(m)
    f = kern.dual_pass(K, lu, lv, a, b, P, r, c, np.empty((nchunk, m)))
    Pref = np.exp(lu[:, None] + K + lv[None, :])
    np.testing.assert_allclose(P, Pref, rtol=1e-14)
    np.testing.assert_allclose(r, Pref.sum(1), rtol=1e-13)
    np.testing.assert_allclose(c, Pref.sum(0), rtol=1e-13)
    assert f == pytest.approx(a @ lu + b @ lv - Pref.sum(), rel=1e-13)
    # both compiled twins (parallel and serial) of the fused pass, in every mode, whatever the size
    for fused in (kern._pass_par, kern._pass_ser):
        for mode in (kern.ROWS, kern.ROWS_COLS, kern.PLAN):
            acc = np.zeros((nchunk, m))
            P[:] = 0
            r[:] = 0
            fused(K, lu, lv, P, r, acc, mode)
            np.testing.assert_allclose(r, Pref.sum(1), rtol=1e-13)
            if mode != kern.ROWS:
                np.testing.assert_allclose(acc.sum(0), Pref.sum(0), rtol=1e-13)
            if mode == kern.PLAN:
                np.testing.assert_allclose(P, Pref, rtol=1e-14)


def test_parallel_sizes_match_numpy():
    # large enough for the parallel twins inside sinkhorn_block / histogram / extraction
    K, lu, lv, a, b = _state(n=520, m=510, scale=30.0, seed=9)
    assert K.size >= kern._PAR_MIN
    n, m = K.shape
    ru, rv = lu.copy(), lv.copy()
    ru = np.log(a) - logsumexp(K + rv[None, :], axis=1)
    rv = np.log(b) - logsumexp(K + ru[:, None], axis=0)
    r, c, acc = np.empty(n), np.empty(m), np.empty((2, m))
    kern.sinkhorn_block(K, a, b, np.log(a), np.log(b), lu, lv, 1, 0.0, r, c, acc)
    np.testing.assert_allclose(lu, ru, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(lv, rv, rtol=1e-12, atol=1e-10)
    P = np.exp(lu[:, None] + K + lv[None, :])
    count = np.empty((2, kern.N_KEYS), dtype=np.int64)
    mass = np.empty((2, kern.N_KEYS))
    kern.log2_histogram(P, count, mass)
    np.testing.assert_array_equal(count.sum(0), np.bincount(P.ravel().view(np.int64) >> 50,
                                                            minlength=kern.N_KEYS))
    # extraction of the scaled form (u = v = 1, B = P) above a key, with the histogram's chunk counts
    key = int(np.quantile(P, 0.95).view(np.int64) >> 50)
    rho = kern.key_threshold(key)
    ones_n, ones_m = np.ones(n), np.ones(m)
    indptr, indices, data = kern.extract_scaled(P, ones_n, ones_m, rho, count[:, key:].sum(1))
    rows, cols = np.nonzero(P >= rho)
    np.testing.assert_array_equal(indices, cols)
    np.testing.assert_array_equal(np.diff(indptr), np.bincount(rows, minlength=n))
    np.testing.assert_array_equal(data, P[rows, cols])
    M = np.abs(K)
    np.testing.assert_allclose(kern.neg_scaled_cost(M, 0.5, np.empty_like(M)), -M / 0.5, rtol=1e-15)


@pytest.mark.parametrize("scale", [5.0, 2000.0])
def test_sinkhorn_block_matches_numpy_sweeps(scale):
    # scale=2000: many row/column sums underflow from the cold start -> the max-shift path
    K, _, _, a, b = _state(scale=scale, seed=3)
    n, m = K.shape
    lu, lv = np.zeros(n), np.zeros(m)
    ru, rv = lu.copy(), lv.copy()
    for _ in range(4):
        ru = np.log(a) - logsumexp(K + rv[None, :], axis=1)
        rv = np.log(b) - logsumexp(K + ru[:, None], axis=0)
    r, c, acc = np.empty(n), np.empty(m), np.empty((2, m))
    done, err0 = kern.sinkhorn_block(K, a, b, np.log(a), np.log(b), lu, lv, 4, 0.0, r, c, acc)
    assert done == 4
    np.testing.assert_allclose(lu, ru, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(lv, rv, rtol=1e-12, atol=1e-9)
    P0 = np.exp(K)
    assert err0 == pytest.approx(np.abs(P0.sum(1) - a).sum() + np.abs(P0.sum(0) - b).sum(), rel=1e-12)
    # a zero-sweep block only measures the error of the current state
    done, err = kern.sinkhorn_block(K, a, b, np.log(a), np.log(b), lu, lv, 0, 0.0, r, c, acc)
    P = np.exp(ru[:, None] + K + rv[None, :])
    assert done == 0
    assert err == pytest.approx(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum(), rel=1e-8, abs=1e-16)


def test_histogram_and_threshold_match_numpy():
    rng = np.random.default_rng(1)
    P = np.exp(rng.standard_normal((40, 30)) * 20)
    P[0, :5] = 0.0
    count = np.empty((3, kern.N_KEYS), dtype=np.int64)
    mass = np.empty((3, kern.N_KEYS))
    kern.log2_histogram(P, count, mass)
    keys = P.ravel().view(np.int64) >> 50
    np.testing.assert_array_equal(count.sum(0), np.bincount(keys, minlength=kern.N_KEYS))
    np.testing.assert_allclose(mass.sum(0), np.bincount(keys, weights=P.ravel(), minlength=kern.N_KEYS),
                               rtol=1e-14)
    for key in (0, 3000, int(keys.max())):
        rho = kern.key_threshold(key)
        np.testing.assert_array_equal(P >= rho, (P.view(np.int64) >> 50) >= key)


def _chunk_counts(keep, nchunk):
    n = keep.shape[0]
    per_row = keep.sum(1)
    return np.array([per_row[t * n // nchunk:(t + 1) * n // nchunk].sum() for t in range(nchunk)])


def test_extract_scaled_matches_numpy():
    rng = np.random.default_rng(2)
    B = rng.random((50, 40))
    u, v = rng.random(50) + 0.5, rng.random(40) + 0.5
    P = (u[:, None] * B) * v[None, :]
    rho = 0.8
    import scipy.sparse as sp
    for nchunk in (1, 3):
        indptr, indices, bvals = kern.extract_scaled(B, u, v, rho, _chunk_counts(P >= rho, nchunk))
        S = sp.csr_matrix((bvals, indices, indptr), shape=P.shape).toarray()
        np.testing.assert_array_equal(S, np.where(P >= rho, B, 0.0))
    # a chunk given less room than it needs drops entries but never writes past its share
    short = _chunk_counts(P >= rho, 2) - 3
    indptr, indices, bvals = kern.extract_scaled(B, u, v, rho, short)
    assert indptr[-1] == short.sum()
    assert np.all(((u[:, None] * B) * v[None, :])[np.repeat(np.arange(50), np.diff(indptr)), indices] >= rho)


@pytest.mark.parametrize("rule,value", [("mass", 1e-5), ("mass", 0.3), ("k", 100), ("lambda", 2 / 60)])
def test_select_threshold_against_sorted_reference(rule, value):
    rng = np.random.default_rng(4)
    n, m = 60, 50
    P = np.exp(rng.standard_normal((n, m)) * 4)
    count = np.empty((1, kern.N_KEYS), dtype=np.int64)
    mass = np.empty((1, kern.N_KEYS))
    kern.log2_histogram(P, count, mass)
    key, kept = select_threshold(count[0], mass[0], rule, value, n, m, 1.0)
    rho = kern.key_threshold(key)
    keep = P >= rho
    assert keep.sum() == kept
    srt = np.sort(P.ravel())[::-1]
    if rule == "mass":
        assert P[~keep].sum() <= value * P.sum() * (1 + 1e-12)
        # minimal up to one key: dropping the next key up would drop too much
        # (or the floor of n + m entries is what set it)
        bigger = P >= kern.key_threshold(key + 1)
        assert P[~bigger].sum() > value * P.sum() or bigger.sum() < n + m
    else:
        target = max(value if rule == "k" else value * n * m, n + m)
        assert kept >= target
        assert (P >= kern.key_threshold(key + 1)).sum() < target
    assert srt[kept - 1] >= rho


def test_select_threshold_floor_and_cap():
    rng = np.random.default_rng(5)
    n, m = 30, 30
    P = np.exp(4 * rng.standard_normal((n, m)))      # spread over many keys
    count = np.empty((1, kern.N_KEYS), dtype=np.int64)
    mass = np.empty((1, kern.N_KEYS))
    kern.log2_histogram(P, count, mass)
    _, kept = select_threshold(count[0], mass[0], "k", 1, n, m, 1.0)
    assert kept >= n + m                       # floor
    _, kept = select_threshold(count[0], mass[0], "mass", 1e-12, n, m, 0.1)
    assert 0 < kept <= 0.1 * n * m             # cap


def test_schur_matvec_and_pcg_match_dense():
    rng = np.random.default_rng(6)
    n, m = 20, 15
    P = rng.random((n, m)) ** 4
    r, c = P.sum(1), P.sum(0)
    rho = 0.2
    indptr, indices, data = kern.extract_scaled(P, np.ones(n), np.ones(m), rho, _chunk_counts(P >= rho, 1))
    ridge = 1e-12
    Ps = np.where(P >= rho, P, 0.0)
    H = np.block([[np.diag(r), Ps], [Ps.T, np.diag(c)]]) + ridge * np.eye(n + m)
    Dr = r + ridge
    S = np.diag(c + ridge) - Ps.T @ (Ps / Dr[:, None])
    x = rng.standard_normal(m)
    np.testing.assert_allclose(kern.schur_matvec(indptr, indices, data, r, c, ridge, x), S @ x, rtol=1e-12,
                               atol=1e-14)
    # H_s: symmetric, diagonally dominant, PSD; so is its Schur complement
    assert np.all(2 * np.diag(H) >= np.abs(H).sum(1) - 1e-12)
    assert np.linalg.eigvalsh(H).min() >= -1e-12
    assert np.linalg.eigvalsh(S).min() >= -1e-12
    # CG solves the consistent system orthogonally to the gauge e = (1, -1): the dense solution
    e = np.concatenate([np.ones(n), -np.ones(m)])
    rhs = rng.standard_normal(n + m)
    rhs -= (rhs @ e) / (e @ e) * e
    dz, it, rel = kern.pcg_schur(indptr, indices, data, r, c, ridge, rhs, 1e-12, 10 * (n + m))
    assert rel <= 1e-12 and 0 < it <= m + 5
    assert abs(dz @ e) < 1e-8 * np.abs(dz).max()
    ref = np.linalg.lstsq(H, rhs, rcond=None)[0]
    ref -= (ref @ e) / (e @ e) * e
    np.testing.assert_allclose(dz, ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())
    He = H @ e

    def full_residual(d):        # the full system's, before the gauge projection (a shift along e)
        t = -((H @ d - rhs) @ He) / (He @ He)
        return np.linalg.norm(H @ (d + t * e) - rhs) / np.linalg.norm(rhs)
    # a row whose mass underflowed keeps a positive (ridge) pivot: a finite solution
    r0 = r.copy()
    r0[3] = 0.0
    dz0, _, _ = kern.pcg_schur(indptr, indices, data, r0, c, ridge, rhs, 1e-8, 10 * (n + m))
    assert np.all(np.isfinite(dz0))
    # a loose tolerance stops early with the residual it reports
    dz1, it1, rel1 = kern.pcg_schur(indptr, indices, data, r, c, ridge, rhs, 0.3, 100)
    assert rel1 <= 0.3 and it1 < it
    assert full_residual(dz1) <= rel1 * (1 + 1e-6)


def _scaled_state(n=37, m=29, seed=11, scale=40.0):
    rng = np.random.default_rng(seed)
    M = rng.random((n, m))
    inv = scale
    lu = rng.standard_normal(n)
    lv = rng.standard_normal(m)
    a = rng.random(n) + 0.1
    a /= a.sum()
    return M, inv, lu, lv, a


@pytest.mark.parametrize("twin", ["par", "ser", "dispatch"])
@pytest.mark.parametrize("nchunk", [1, 3])
def test_absorb_matches_numpy(twin, nchunk):
    M, inv, lu, lv, a = _scaled_state()
    n, m = M.shape
    B, lu0, S, rs = np.empty((n, m)), np.empty(n), np.empty(n), np.empty(n)
    acc_s, acc_u = np.empty((nchunk, m)), np.empty((nchunk, m))
    room = n * m
    cap = np.array([t * room // nchunk for t in range(nchunk + 1)])
    rowcnt, ccols, cvals, ovf = np.zeros(n, dtype=np.int64), np.empty(room, dtype=np.int64), np.empty(room), \
        np.zeros(nchunk, dtype=np.int64)
    thr = np.exp(-3.0)
    fn = {"par": kern._absorb_par, "ser": kern._absorb_ser, "dispatch": kern.absorb}[twin]
    fn(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u, True, thr, cap, rowcnt, ccols, cvals, ovf)
    E = lv[None, :] - M * inv
    mx = E.max(1)
    np.testing.assert_allclose(B, np.exp(E - mx[:, None]), rtol=1e-14)
    np.testing.assert_allclose(B.max(1), 1.0)
    np.testing.assert_allclose(lu0, -mx, rtol=1e-15)
    np.testing.assert_allclose(S, B.sum(1), rtol=1e-13)
    P = np.exp(lu[:, None] + E)                         # the plan at (lu, lv)
    np.testing.assert_allclose(rs, P.sum(1), rtol=1e-12)
    np.testing.assert_allclose(acc_s.sum(0), P.sum(0), rtol=1e-12)
    lu_upd = np.log(a) - logsumexp(E, axis=1)           # exact Sinkhorn row update
    np.testing.assert_allclose(acc_u.sum(0), np.exp(lu_upd[:, None] + E).sum(0), rtol=1e-12)
    # the candidates B_ij >= thr, in row order, compacted to CSR
    assert not ovf.any()
    np.testing.assert_array_equal(rowcnt, (B >= thr).sum(1))
    indptr, indices, bvals = kern.filter_candidates(cap, rowcnt, ccols, cvals, np.ones(n), np.ones(m), 0.0)
    rows, cols = np.nonzero(B >= thr)
    np.testing.assert_array_equal(indices, cols)
    np.testing.assert_array_equal(np.diff(indptr), np.bincount(rows, minlength=n))
    np.testing.assert_array_equal(bvals, B[rows, cols])
    # without a threshold nothing is collected; without start_cols no start column sums
    rowcnt[:] = -1
    fn(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u, False, 0.0, cap, rowcnt, ccols, cvals, ovf)
    assert np.all(acc_s == 0) and np.all(rowcnt == -1)
    # a chunk without room flags an overflow
    tiny = np.array([t * 3 // nchunk for t in range(nchunk + 1)])
    fn(M, inv, lu, lv, a, B, lu0, S, rs, acc_s, acc_u, False, 1e-300, tiny, rowcnt, ccols, cvals, ovf)
    assert ovf.all()
    j = 5
    assert kern.col_lse_cost(M, inv, lu, j) == pytest.approx(logsumexp(lu - M[:, j] * inv), rel=1e-13)


@pytest.mark.parametrize("twin", ["par", "ser"])
@pytest.mark.parametrize("n,nchunk", [(37, 1), (37, 3), (41, 2), (6, 2)])
def test_scaled_pass_every_mode_matches_numpy(twin, n, nchunk):
    rng = np.random.default_rng(n + nchunk)
    m = 29
    B = np.exp(-rng.random((n, m)) * 30)
    u, v = rng.random(n) + 0.5, rng.random(m) + 0.5
    a = rng.random(n) + 0.1
    fn = kern._scaled_par if twin == "par" else kern._scaled_ser
    floor = 1e-6
    room = n * m
    cap = np.array([t * room // nchunk for t in range(nchunk + 1)])
    for mode in (kern.RC, kern.SWEEP, kern.RC_HIST, kern.SWEEP_HIST):
        uu = u.copy()
        r, acc = np.empty(n), np.empty((nchunk, m))
        count, mass = np.empty((nchunk, kern.N_KEYS), dtype=np.int64), np.empty((nchunk, kern.N_KEYS))
        rowcnt, ccols, cvals, ovf = np.zeros(n, dtype=np.int64), np.empty(room, dtype=np.int64), np.empty(room), \
            np.zeros(nchunk, dtype=np.int64)
        fn(B, uu, v, a, r, acc, mode, count, mass, floor, cap, rowcnt, ccols, cvals, ovf)
        Bv = B @ v
        np.testing.assert_allclose(r, u * Bv, rtol=1e-13)            # row sums on entry
        sweep = mode in (kern.SWEEP, kern.SWEEP_HIST)
        unew = a / Bv if sweep else u
        np.testing.assert_allclose(uu, unew, rtol=1e-13)
        np.testing.assert_allclose(acc.sum(0), unew @ B, rtol=1e-13)
        if mode in (kern.RC_HIST, kern.SWEEP_HIST):
            P = (unew[:, None] * B) * v[None, :]
            keys = P.ravel().view(np.int64) >> 50
            klow = (np.float64(floor).view(np.int64) >> 50) - 1
            keys = np.where(P.ravel() >= floor, keys, klow)
            np.testing.assert_array_equal(count.sum(0), np.bincount(keys, minlength=kern.N_KEYS))
            np.testing.assert_allclose(mass.sum(0), np.bincount(keys, weights=P.ravel(), minlength=kern.N_KEYS),
                                       rtol=1e-12, atol=1e-300)
            assert not ovf.any()
            np.testing.assert_array_equal(rowcnt, (P >= floor).sum(1))
            # candidates -> the pattern above a threshold, as a NumPy filter
            rho = float(np.quantile(P, 0.8))
            indptr, indices, bvals = kern.filter_candidates(cap, rowcnt, ccols, cvals, unew, v, rho)
            rows, cols = np.nonzero(P >= rho)
            np.testing.assert_array_equal(indices, cols)
            np.testing.assert_array_equal(np.diff(indptr), np.bincount(rows, minlength=n))
            np.testing.assert_array_equal(bvals, B[rows, cols])
            # pattern values and sums at another (u, v)
            u2, v2 = rng.random(n) + 0.5, rng.random(m) + 0.5
            vals, pr, pc = kern.pattern_sums(indptr, indices, bvals, u2, v2)
            Ps = np.where(P >= rho, (u2[:, None] * B) * v2[None, :], 0.0)
            np.testing.assert_allclose(vals, Ps[rows, cols], rtol=1e-15)
            np.testing.assert_allclose(pr, Ps.sum(1), rtol=1e-13)
            np.testing.assert_allclose(pc, Ps.sum(0), rtol=1e-13)
    # a chunk without room flags an overflow and keeps what fits
    tiny = np.array([t * 5 // nchunk for t in range(nchunk + 1)])
    ovf = np.zeros(nchunk, dtype=np.int64)
    fn(B, u.copy(), v, a, np.empty(n), np.empty((nchunk, m)), kern.RC_HIST, np.empty((nchunk, kern.N_KEYS),
       dtype=np.int64), np.empty((nchunk, kern.N_KEYS)), 0.0, tiny, np.zeros(n, dtype=np.int64),
       np.empty(5, dtype=np.int64), np.empty(5), ovf)
    assert ovf.all()


@pytest.mark.parametrize("twin", ["par", "ser"])
@pytest.mark.parametrize("from_cost", [False, True])
def test_final_pass_matches_numpy(twin, from_cost):
    # the plan in place of the base B (P = diag(u) B diag(v)) or straight from the cost (exponentials)
    rng = np.random.default_rng(12)
    n, m, nchunk = 23, 19, 2
    B = rng.random((n, m))
    M = rng.random((n, m))
    if from_cost:
        x, y, inv = rng.standard_normal(n) - 3, rng.standard_normal(m), 7.0
        P = np.exp(x[:, None] + y[None, :] - M * inv)
    else:
        x, y, inv = rng.random(n), rng.random(m), 1.0
        P = (x[:, None] * B) * y[None, :]
    r, acc, cost = np.empty(n), np.empty((nchunk, m)), np.empty(nchunk)
    (kern._final_par if twin == "par" else kern._final_ser)(M, inv, B, x, y, B, r, acc, cost, from_cost)
    np.testing.assert_allclose(B, P, rtol=1e-14)
    np.testing.assert_allclose(r, P.sum(1), rtol=1e-13)
    np.testing.assert_allclose(acc.sum(0), P.sum(0), rtol=1e-13)
    assert cost.sum() == pytest.approx((P * M).sum(), rel=1e-13)


def test_window_counts_matches_numpy():
    M, inv, lu, lv, a = _scaled_state()
    for step in (1, 3):
        out = kern.window_counts(M, inv, lv, step, 7)
        E = (lv[None, :] - M * inv)[::step]
        d = E.max(1)[:, None] - E
        np.testing.assert_array_equal(out, np.bincount(np.floor(d[d < 7]).astype(int), minlength=7))


def test_value_histogram_and_filter_pattern_match_numpy():
    rng = np.random.default_rng(5)
    n, m = 17, 13
    dense = np.where(rng.random((n, m)) < 0.4, np.exp(-rng.random((n, m)) * 40), 0.0)
    rows, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    bvals = dense[rows, cols]
    vals = bvals * rng.random(bvals.size)
    count, mass = kern.value_histogram(vals)
    keys = vals.view(np.int64) >> 50
    np.testing.assert_array_equal(count, np.bincount(keys, minlength=kern.N_KEYS))
    np.testing.assert_allclose(mass, np.bincount(keys, weights=vals, minlength=kern.N_KEYS), rtol=1e-14,
                               atol=1e-300)
    rho = float(np.median(vals))
    sp, si, sb, sv, pr, pc = kern.filter_pattern(indptr, cols.astype(np.int64), bvals, vals, rho, m)
    keep = vals >= rho
    np.testing.assert_array_equal(si, cols[keep])
    np.testing.assert_array_equal(sb, bvals[keep])
    np.testing.assert_array_equal(sv, vals[keep])
    np.testing.assert_array_equal(np.diff(sp), np.bincount(rows[keep], minlength=n))
    Vk = np.zeros((n, m))
    Vk[rows[keep], cols[keep]] = vals[keep]
    np.testing.assert_allclose(pr, Vk.sum(1), rtol=1e-14)
    np.testing.assert_allclose(pc, Vk.sum(0), rtol=1e-14)


@pytest.mark.parametrize("twin", ["par", "ser", "dispatch"])
@pytest.mark.parametrize("nchunk,m", [(1, 29), (3, 29), (2, 130)])
def test_absorb_sparse_matches_numpy(twin, nchunk, m):
    # only the candidates B_ij >= exp(-window) get an exponential; sums over them; overflow flagged
    M, inv, lu, lv, a = _scaled_state(m=m)
    n = M.shape[0]
    window = 3.0
    lu0, S, rs = np.empty(n), np.empty(n), np.empty(n)
    acc_s, acc_u = np.empty((nchunk, m)), np.empty((nchunk, m))
    room = n * m
    cap = np.array([t * room // nchunk for t in range(nchunk + 1)])
    rowcnt, ccols, cvals, ovf = np.zeros(n, dtype=np.int64), np.empty(room, dtype=np.int64), np.empty(room), \
        np.zeros(nchunk, dtype=np.int64)
    fn = {"par": kern._absorb_sparse_par, "ser": kern._absorb_sparse_ser, "dispatch": kern.absorb_sparse}[twin]
    fn(M, inv, lu, lv, a, window, lu0, S, rs, acc_s, acc_u, True, cap, rowcnt, ccols, cvals, ovf)
    E = lv[None, :] - M * inv
    mx = E.max(1)
    B = np.exp(E - mx[:, None])
    C = E - mx[:, None] >= -window
    Bc = np.where(C, B, 0.0)
    assert not ovf.any()
    np.testing.assert_allclose(lu0, -mx, rtol=1e-15)
    np.testing.assert_array_equal(rowcnt, C.sum(1))
    indptr, indices, bvals = kern.filter_candidates(cap, rowcnt, ccols, cvals, np.ones(n), np.ones(m), 0.0)
    rows, cols = np.nonzero(C)
    np.testing.assert_array_equal(indices, cols)
    np.testing.assert_allclose(bvals, B[rows, cols], rtol=1e-14)
    np.testing.assert_allclose(S, Bc.sum(1), rtol=1e-13)
    u = np.exp(lu + mx)
    np.testing.assert_allclose(rs, u * Bc.sum(1), rtol=1e-12)
    np.testing.assert_allclose(acc_s.sum(0), u @ Bc, rtol=1e-12)
    np.testing.assert_allclose(acc_u.sum(0), (a / Bc.sum(1)) @ Bc, rtol=1e-12)
    assert np.all(B[~C] < np.exp(-window))
    tiny = np.array([t * 3 // nchunk for t in range(nchunk + 1)])
    fn(M, inv, lu, lv, a, window, lu0, S, rs, acc_s, acc_u, False, tiny, rowcnt, ccols, cvals, ovf)
    assert ovf.all()


def test_shift_range_and_bracket_match_numpy():
    rng = np.random.default_rng(22)
    n, m = 13, 11
    lu, lu0, lv, lv0 = (rng.standard_normal(k) for k in (n, n, m, m))
    s, w = kern.shift_range(lu, lu0, lv, lv0)
    assert s == pytest.approx(np.max(lu - lu0) + np.max(lv - lv0), rel=1e-15)
    assert w == pytest.approx(max(np.abs(lu - lu0).max(), np.abs(lv - lv0).max()), rel=1e-15)
    lu_nan = lu.copy()
    lu_nan[3] = np.nan
    assert np.isnan(kern.shift_range(lu_nan, lu0, lv, lv0)[0])
    # the estimates at (lu, lv) from a pattern and off-pattern intervals at a reference point
    mask = rng.random((n, m)) < 0.3
    rows, cols = np.nonzero(mask)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))])
    B = rng.random((n, m))
    ref_lu, ref_lv = lu + 0.1 * rng.standard_normal(n), lv + 0.1 * rng.standard_normal(m)
    or_lo, oc_lo = rng.random(n), rng.random(m)
    or_hi, oc_hi = or_lo + rng.random(n), oc_lo + rng.random(m)
    vals, r, c, bound, psum = kern.bracket(indptr, cols.astype(np.int64), B[rows, cols], lu, lu0, lv, lv0, ref_lu,
                                           ref_lv, or_lo, or_hi, oc_lo, oc_hi)
    u, v = np.exp(lu - lu0), np.exp(lv - lv0)
    Ps = np.where(mask, u[:, None] * B * v[None, :], 0.0)
    du, dv = lu - ref_lu, lv - ref_lv
    r_lo, r_hi = np.exp(du) * or_lo * np.exp(dv.min()), np.exp(du) * or_hi * np.exp(dv.max())
    c_lo, c_hi = np.exp(dv) * oc_lo * np.exp(du.min()), np.exp(dv) * oc_hi * np.exp(du.max())
    np.testing.assert_allclose(vals, Ps[rows, cols], rtol=1e-14)
    np.testing.assert_allclose(r, Ps.sum(1) + 0.5 * (r_lo + r_hi), rtol=1e-13)
    np.testing.assert_allclose(c, Ps.sum(0) + 0.5 * (c_lo + c_hi), rtol=1e-13)
    assert bound == pytest.approx(0.5 * ((r_hi - r_lo).sum() + (c_hi - c_lo).sum()), rel=1e-13)
    assert psum == pytest.approx(Ps.sum(), rel=1e-13)


def test_sparse_kernels_split_over_threads_match_serial():
    # a pattern above the parallel threshold: pattern_sums, bracket and pcg_schur with 2 row chunks
    # (split by nonzeros) agree with the serial ones
    rng = np.random.default_rng(23)
    n, m, per_row = 400, 300, 100
    indices = np.concatenate([np.sort(rng.choice(m, per_row, replace=False)) for _ in range(n)]).astype(np.int64)
    indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int64)
    indptr[150:] -= 60                     # uneven rows: drop 60 entries of row 149
    indices = np.delete(indices, np.arange(149 * per_row + 40, 150 * per_row))
    assert indptr[-1] == indices.size >= kern._SPARSE_PAR_MIN
    bvals = rng.random(indices.size)
    u, v = rng.random(n) + 0.5, rng.random(m) + 0.5
    for t, (lo, hi) in enumerate([kern._nnz_rows(indptr, t, 2) for t in range(2)]):
        assert (lo, hi) == ((0, int(np.searchsorted(indptr, indptr[-1] // 2))) if t == 0
                            else (int(np.searchsorted(indptr, indptr[-1] // 2)), n))
    ser = kern.pattern_sums(indptr, indices, bvals, u, v, 1)
    par = kern.pattern_sums(indptr, indices, bvals, u, v, 2)
    for x, y in zip(ser, par):
        np.testing.assert_allclose(x, y, rtol=1e-13)
    r, c = ser[1] * 1.01, ser[2] * 1.01          # dense marginals a little above the pattern's
    rhs = rng.standard_normal(n + m)
    d1, it1, rel1 = kern.pcg_schur(indptr, indices, ser[0], r, c, 1e-12, rhs, 1e-10, 500, 1)
    d2, it2, rel2 = kern.pcg_schur(indptr, indices, ser[0], r, c, 1e-12, rhs, 1e-10, 500, 2)
    assert it1 == it2 and rel1 <= 1e-10 and rel2 <= 1e-10
    np.testing.assert_allclose(d1, d2, rtol=1e-8, atol=1e-12 * np.abs(d1).max())
    x = rng.standard_normal(m)
    out = np.empty(m)
    kern._schur_mv_par(indptr, indices, ser[0], r + 1e-12, c + 1e-12, x, out, np.empty((2, m)))
    np.testing.assert_allclose(out, kern.schur_matvec(indptr, indices, ser[0], r, c, 1e-12, x), rtol=1e-12,
                               atol=1e-12 * np.abs(out).max())


def test_filter_pattern_split_over_threads_matches_serial():
    rng = np.random.default_rng(24)
    n, m, per_row = 500, 400, 80
    indices = np.concatenate([np.sort(rng.choice(m, per_row, replace=False)) for _ in range(n)]).astype(np.int64)
    indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int64)
    bvals = rng.random(indices.size)
    vals = bvals * rng.random(indices.size)
    rho = float(np.quantile(vals, 0.6))
    ser = kern.filter_pattern(indptr, indices, bvals, vals, rho, m, 1)
    par = kern.filter_pattern(indptr, indices, bvals, vals, rho, m, 2)
    for x, y in zip(ser, par):
        np.testing.assert_allclose(x, y, rtol=1e-13)
    assert ser[0][-1] == (vals >= rho).sum()
