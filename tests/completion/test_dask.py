"""Distributed AltMin on a real two-process ``distributed.LocalCluster``: same iterates as one machine,
every input format, a worker killed mid-solve, and bad partitions named in the errors."""
import logging
import os
import signal
import time
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

from numopt.completion._altmin import gram_distance, minimize_altmin  # noqa: E402
from numopt.completion._dask import minimize_altmin_dask  # noqa: E402
from numopt.completion._dask_data import DaskMatrixCompletion  # noqa: E402
from numopt.exceptions import ConvergenceWarning  # noqa: E402
from numopt.problems import MatrixCompletion  # noqa: E402


def _instance(m=240, n=180, k=3, p=0.35, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    Us, Vs = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    r, c = np.nonzero(rng.random((m, n)) < p)
    vals = np.einsum("ij,ij->i", Us[r], Vs[c]) + noise * rng.standard_normal(r.size)
    return Us, Vs, r, c, vals


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def problem():
    Us, Vs, r, c, vals = _instance()
    return MatrixCompletion(r, c, vals, (240, 180), 3, truth=(Us, Vs))


def _rel_dist(a, b):
    d2, x2 = gram_distance(a.U, a.V, b.U, b.V)
    return np.sqrt(d2 / x2)


def _solve_both(problem, client, **opts):
    """Single-machine and distributed solves; ``iterate_gap`` = max over t of ||X_t - X'_t||_F / ||X_t||_F."""
    m, n = problem.shape
    k = problem.rank
    its = ([], [])

    def keep(store):
        def cb(res):
            store.append((res.x[:m * k].reshape(m, k).copy(), res.x[m * k:].reshape(n, k).copy()))
        return cb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = minimize_altmin(problem, callback=keep(its[0]), **opts)
        got = minimize_altmin_dask(problem, client=client, callback=keep(its[1]), **opts)
    assert len(its[0]) == len(its[1]) == ref.nit == got.nit
    gaps = [np.sqrt(d2 / x2) for d2, x2 in (gram_distance(*a, *b) for a, b in zip(*its))]
    got.iterate_gap = max(gaps)
    return ref, got


@pytest.mark.parametrize("opts", [
    dict(solver="cholesky", maxiter=8),
    dict(solver="sketch-cg", maxiter=5, inner_tol=1e-12),
    dict(solver="cg", cg_steps=2, maxiter=5, init="random", center="biases"),
    dict(solver="auto", maxiter=4, center="global", reg_scaling="count"),
])
def test_iterates_equal_single_machine(client, problem, opts):
    ref, got = _solve_both(problem, client, random_state=7, n_power_iter=2, **opts)
    # every iterate X_t = U_t V_t^T agrees to 1e-8 (in practice ~1e-13), and so do the histories
    assert got.iterate_gap < 1e-8
    for key in ("fun", "rmse", "rel_residual"):
        np.testing.assert_allclose(got.history[key], ref.history[key], rtol=1e-8, atol=0)
    np.testing.assert_allclose(got.history["rel_error"], ref.history["rel_error"], rtol=0, atol=1e-9)
    assert _rel_dist(got, ref) < 1e-8
    assert got.solver_counts == ref.solver_counts
    assert got.n_workers == 2


def test_ridge_and_sample_split_equal_single_machine(client):
    Us, Vs, r, c, vals = _instance(m=200, n=160, p=0.8, seed=3, noise=0.01)
    prob = MatrixCompletion(r, c, vals, (200, 160), 3, reg=0.5)
    ref, got = _solve_both(prob, client, maxiter=3, random_state=1, reg_scaling="count", n_power_iter=2)
    np.testing.assert_allclose(got.history["fun"], ref.history["fun"], rtol=1e-8)
    assert got.iterate_gap < 1e-8 and _rel_dist(got, ref) < 1e-8
    prob0 = MatrixCompletion(r, c, vals, (200, 160), 3)
    ref, got = _solve_both(prob0, client, maxiter=2, random_state=2, sample_split=True, n_power_iter=2)
    np.testing.assert_allclose(got.history["fun"], ref.history["fun"], rtol=1e-8)
    assert got.iterate_gap < 1e-8 and _rel_dist(got, ref) < 1e-8


def test_exact_recovery_and_only_factors_move(client):
    m, n, k = 300, 220, 3
    Us, Vs, r, c, vals = _instance(m, n, k, p=0.3, seed=5)
    prob = DaskMatrixCompletion.from_problem(MatrixCompletion(r, c, vals, (m, n), k, truth=(Us, Vs)),
                                             row_blocks=5, col_blocks=3)
    sent = []

    def snap(_):
        sent.append(sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values()))

    res = minimize_altmin_dask(prob, client=client, maxiter=60, random_state=0, callback=snap)
    assert res.success
    assert res.history["rel_error"][-1] < 1e-8
    # bytes the driver moves per iteration: broadcast of both factors to 2 workers, warm starts, the new
    # factors and O(m + n) per-row bookkeeping -- O((m + n) k), and far below |Omega| * 16 bytes
    per_factor_entry = res.bytes_per_iter / ((m + n) * k * 8)
    assert 3.5 < per_factor_entry < 7
    assert res.row_blocks == 5 and res.col_blocks == 3
    # what the workers sent per iteration (peer fetches of the scattered factor + results to the driver):
    # a few factors' worth, not Omega (pinned tasks; |Omega| * 16 B is ~25x a factor here). A rare
    # iteration may also move one block when a task was pinned to a replica that Dask then dropped.
    worker_sent = np.diff(sent)
    assert np.median(worker_sent) < 4 * (m + n) * k * 8 < r.size * 16 / 6
    assert worker_sent.max() < r.size * 16 / 2


def _write_parts(tmp_path, r, c, vals, nparts, fmt, order_seed=0):
    perm = np.random.default_rng(order_seed).permutation(r.size)   # entries in no particular order
    paths = []
    for i, idx in enumerate(np.array_split(perm, nparts)):
        if fmt == "parquet":
            p = tmp_path / f"part{i}.parquet"
            pd.DataFrame({"row": r[idx], "col": c[idx], "value": vals[idx]}).to_parquet(p)
        else:
            p = tmp_path / f"part{i}.npz"
            np.savez(p, row=r[idx], col=c[idx], value=vals[idx])
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("fmt", ["parquet", "npz", "dataframe", "array"])
def test_input_formats_same_result(client, problem, tmp_path, fmt):
    dd = pytest.importorskip("dask.dataframe")
    da = pytest.importorskip("dask.array")
    r, c, vals = problem.rows, problem.cols, problem.values
    perm = np.random.default_rng(1).permutation(r.size)
    if fmt in ("parquet", "npz"):
        source = _write_parts(tmp_path, r, c, vals, 3, fmt)
    elif fmt == "dataframe":
        df = pd.DataFrame({"i": r[perm], "j": c[perm], "x": vals[perm]})
        source = dd.from_pandas(df, npartitions=3)
    else:
        source = da.from_array(np.column_stack([r[perm], c[perm], vals[perm]]), chunks=(5000, 3))
    prob = DaskMatrixCompletion(source, problem.shape, 3, columns=("i", "j", "x") if fmt == "dataframe" else
                                ("row", "col", "value"))
    opts = dict(maxiter=3, random_state=3, solver="cholesky", init="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = minimize_altmin(problem, **opts)
        got = minimize_altmin_dask(prob, client=client, **opts)
    np.testing.assert_allclose(got.history["fun"], ref.history["fun"], rtol=1e-8)
    assert _rel_dist(got, ref) < 1e-8


def test_killed_worker_does_not_change_result(client, problem, tmp_path):
    """SIGKILL a worker process between half-steps: its persisted blocks are re-read from the partition
    files (lineage) and the solve finishes with the same iterates."""
    paths = _write_parts(tmp_path, problem.rows, problem.cols, problem.values, 4, "parquet")
    opts = dict(maxiter=5, random_state=11, solver="sketch-cg", tol=0.0, xtol=0.0, n_power_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = minimize_altmin(problem, **opts)
        prob = DaskMatrixCompletion(paths, problem.shape, 3)
        lay = prob.layout(client)
        holders = client.who_has(lay.row_blocks + lay.col_blocks)
        victim = next(iter(holders[lay.row_blocks[0].key]))
        pid = client.run(os.getpid, workers=[victim])[victim]
        killed = []

        def kill(res):
            if res.nit == 2:
                os.kill(pid, signal.SIGKILL)
                killed.append(res.nit)

        got = minimize_altmin_dask(prob, client=client, callback=kill, **opts)
    assert killed == [2]
    assert got.nit == ref.nit == 5
    np.testing.assert_allclose(got.history["fun"], ref.history["fun"], rtol=1e-8)
    assert _rel_dist(got, ref) < 1e-8
    assert pid not in client.run(os.getpid).values()          # the solve really lost that process
    client.wait_for_workers(2, timeout=120)                    # the nanny restarts it for the next tests


def test_worker_killed_during_layout_or_half_step(client, problem, tmp_path):
    """SIGKILL a worker 0.3 s into a fresh solve (reading/blocking the files, initialization or a half-step,
    whichever runs then): the solve still finishes with the single-machine iterates."""
    import threading

    client.wait_for_workers(2, timeout=120)
    paths = _write_parts(tmp_path, problem.rows, problem.cols, problem.values, 4, "npz")
    opts = dict(maxiter=4, random_state=2, solver="cg", tol=0.0, xtol=0.0, n_power_iter=2)
    pid = next(iter(client.run(os.getpid).values()))
    killed_at = []

    def kill():
        os.kill(pid, signal.SIGKILL)
        killed_at.append(time.perf_counter())

    timer = threading.Timer(0.3, kill)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = minimize_altmin(problem, **opts)
        timer.start()
        got = minimize_altmin_dask(DaskMatrixCompletion(paths, problem.shape, 3), client=client, **opts)
        finished_at = time.perf_counter()
    timer.join()
    assert killed_at[0] < finished_at                       # the worker died while the solve was running
    assert pid not in client.run(os.getpid).values()
    np.testing.assert_allclose(got.history["fun"], ref.history["fun"], rtol=1e-8)
    assert _rel_dist(got, ref) < 1e-8
    client.wait_for_workers(2, timeout=120)


# ---- bad inputs: clear errors that name the partition ---------------------------------------------
def _files(tmp_path, parts):
    paths = []
    for i, (r, c, v) in enumerate(parts):
        p = tmp_path / f"p{i}.npz"
        np.savez(p, row=np.asarray(r), col=np.asarray(c), value=np.asarray(v))
        paths.append(str(p))
    return paths


def _good(i):
    return [0, 1, 2, 3], [i, i + 1, i + 2, i + 3], [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("bad, match", [
    (([0, 1, 9], [0, 1, 2], [1.0, 2.0, 3.0]), r"partition 1 \(.*p1\.npz\): row index 9 out of range \[0, 8\)"),
    (([0, 1, 2], [0, -1, 2], [1.0, 2.0, 3.0]), r"partition 1 .*col index -1 out of range \[0, 6\)"),
    (([0, 1, 2], [0, 1], [1.0, 2.0, 3.0]), r"partition 1 .*different lengths 3, 2, 3 \(mismatched partition\)"),
    (([0, 1, 2], [0, 1, 2], [1.0, np.nan, 3.0]), r"partition 1 .*NaN or infinite"),
    (([0.5, 1, 2], [0, 1, 2], [1.0, 2.0, 3.0]), r"partition 1 .*row indices must be integers"),
])
def test_bad_partition_is_named(client, tmp_path, bad, match):
    paths = _files(tmp_path, [_good(0), bad, _good(1)])
    prob = DaskMatrixCompletion(paths, (8, 6), 2)
    with pytest.raises(ValueError, match=match):
        minimize_altmin_dask(prob, client=client, maxiter=2)


def test_duplicates_across_partitions_named(client, tmp_path):
    paths = _files(tmp_path, [_good(0), ([5], [1], [2.0]), ([7, 1], [0, 1], [1.0, 9.0])])
    prob = DaskMatrixCompletion(paths, (8, 6), 2)
    with pytest.raises(ValueError, match=r"duplicate observed entry \(row 1, col 1\) in partition 0 \(.*p0\.npz\) "
                                         r"and partition 2 \(.*p2\.npz\)"):
        minimize_altmin_dask(prob, client=client, maxiter=2)


def test_missing_columns_and_bad_sources(client, tmp_path):
    p = tmp_path / "x.parquet"
    pd.DataFrame({"row": [0, 1], "column": [0, 1], "value": [1.0, 2.0]}).to_parquet(p)
    with pytest.raises(ValueError, match=r"partition 0 \(.*x\.parquet\): missing column\(s\) \['col'\]"):
        minimize_altmin_dask(DaskMatrixCompletion([str(p)], (4, 4), 1), client=client, maxiter=1)
    with pytest.raises(FileNotFoundError, match=r"source\[0\]"):
        DaskMatrixCompletion([str(tmp_path / "nope.npz")], (4, 4), 1)
    with pytest.raises(ValueError, match=r"source\[0\].*\.parquet, \.pq or \.npz"):
        DaskMatrixCompletion([str(tmp_path / "a.csv")], (4, 4), 1)
    with pytest.raises(TypeError, match="source must be"):
        DaskMatrixCompletion(np.zeros((3, 3)), (4, 4), 1)
    with pytest.raises(ValueError, match="rank must be < min"):
        DaskMatrixCompletion([str(p)], (4, 4), 4)
    dd = pytest.importorskip("dask.dataframe")
    with pytest.raises(ValueError, match=r"no column\(s\) \['value'\]"):
        DaskMatrixCompletion(dd.from_pandas(pd.DataFrame({"row": [0], "col": [0]}), npartitions=1), (4, 4), 1)
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        minimize_altmin_dask(DaskMatrixCompletion([str(p)], (4, 4), 1), client=3)


def test_bad_dask_array_chunk_named(client):
    da = pytest.importorskip("dask.array")
    a = np.array([[0, 0, 1.0], [1, 1, 2.0], [2, 2, 3.0], [3, 9, 4.0]])
    with pytest.raises(ValueError, match=r"partition 1: col index 9 out of range \[0, 5\)"):
        minimize_altmin_dask(DaskMatrixCompletion(da.from_array(a, chunks=(2, 3)), (5, 5), 1), client=client,
                             maxiter=1)


# ---- the public doors: minimize(..., options={"client": ...}) and MatrixCompleter(client=...) --------
def test_minimize_with_client_option(client, problem, tmp_path):
    import numopt
    from numopt.completion import DaskMatrixCompletion as Exported

    assert Exported is DaskMatrixCompletion
    paths = _write_parts(tmp_path, problem.rows, problem.cols, problem.values, 2, "npz")
    dprob = DaskMatrixCompletion(paths, problem.shape, 3)
    opts = dict(maxiter=3, random_state=5, n_power_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = numopt.minimize(problem, method="altmin", options=opts)
        got = numopt.minimize(dprob, method="altmin", options={**opts, "client": client})
        mem = numopt.minimize(problem, method="altmin", options={**opts, "client": client})
    assert got.n_workers == mem.n_workers == 2 and not hasattr(ref, "n_workers")
    assert _rel_dist(got, ref) < 1e-8 and _rel_dist(mem, ref) < 1e-8
    with pytest.raises(ValueError, match="pass options=\\{'client': client\\}"):
        numopt.minimize(dprob, method="altmin")


def test_estimator_with_client(client):
    from numopt.completion import MatrixCompleter

    Us, Vs, r, c, vals = _instance(m=120, n=90, p=0.5, seed=8)
    X = np.full((120, 90), np.nan)
    X[r, c] = vals
    kw = dict(rank=3, max_iter=4, random_state=0, solver="cholesky")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MatrixCompleter(**kw).fit(X)
        got = MatrixCompleter(**kw, client=client.scheduler.address).fit(X)   # an address survives clone()
    assert got.result_.n_workers == 2
    np.testing.assert_allclose(got.predict(r, c), ref.predict(r, c), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got.transform(X), ref.transform(X), rtol=1e-8, atol=1e-10)
