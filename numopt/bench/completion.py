"""Matrix completion: numopt ``altmin`` vs exact ALS peers, in one run.

``python -m numopt.bench completion [--quick] [--m 20000] [--nnz 4e6] [--ranks 8 32 64]``

Table 1 (scale, the issue's protocol): per-iteration wall time, CPU time and passes over |Omega|k of
the ``sketch-cg`` / ``cg`` / ``auto`` row solvers against exact-Cholesky ALS (numopt's compiled
``solver="cholesky"``), and the time each needs to reach the objective that exact ALS reaches after
``--target-iters`` iterations (same data, same initialization, same run).

Table 2 (peers, <= 2000 x 2000): numopt ``altmin`` against the **peer** implementations below, on the same
observed entries, scored on held-out entries:

- ``scipy-als``: a plain SciPy/NumPy exact ALS written here as the peer (``scipy_als``): per half-step one
  sparse product builds every row's Gram (``mask @ (v_j v_j^T)``), then a batched ``numpy.linalg.solve``.
- ``fancyimpute SoftImpute`` (0.7.0, if installed; dense NaN input, truncated SVD with ``max_rank=k``).
  fancyimpute 0.7.0 calls ``check_array(force_all_finite=...)``, removed in scikit-learn 1.8; ``softimpute_peer``
  rebinds fancyimpute's ``check_array`` to a wrapper that passes ``ensure_all_finite`` instead (no other change).

The peers run with BLAS pinned to ``NUMOPT_BENCH_PEER_BLAS_THREADS`` (default 1) threads, like numopt's
solver; set it to 2 to give them both cores.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads collapse on a loaded 2-core box

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

__all__ = ["main", "synthetic", "scipy_als", "softimpute_peer", "print_table"]

# BLAS threads given to the peers (numopt pins BLAS to 1 thread and runs its own kernels on all cores).
# On a loaded 2-core machine, 2 spinning OpenBLAS threads made SoftImpute ~10x slower than 1 thread.
BLAS_THREADS = int(os.environ.get("NUMOPT_BENCH_PEER_BLAS_THREADS", "1"))


def _blas_threads(n):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n, "blas")


# --------------------------------------------------------------------------------------------------
# data and peers
# --------------------------------------------------------------------------------------------------
def synthetic(m, n, nnz, rank, *, noise=0.0, seed=0):
    """Observed entries of ``U* V*^T + noise`` at ``nnz`` distinct uniform positions (never m x n)."""
    rng = np.random.default_rng(seed)
    key = np.unique(rng.integers(0, m * n, size=int(nnz * 1.02) + 16))
    key = rng.permutation(key)[:nnz]
    rows, cols = key // n, key % n
    Us = rng.standard_normal((m, rank)) / rank ** 0.25
    Vs = rng.standard_normal((n, rank)) / rank ** 0.25
    vals = np.einsum("ij,ij->i", Us[rows], Vs[cols]) + noise * rng.standard_normal(rows.size)
    return rows, cols, vals, (Us, Vs)


def scipy_als(rows, cols, vals, shape, k, *, reg=0.0, maxiter=10, U0=None, seed=0, callback=None):
    """**Peer**: plain SciPy/NumPy exact ALS (normal equations, batched ``numpy.linalg.solve``).

    U-step: ``G_i = sum_{j in Omega_i} v_j v_j^T + reg I`` for all rows at once as the sparse product
    ``P_Omega @ (V (x) V)``, ``r_i = M[i, Omega_i] V``, then one batched solve; the V-step is symmetric.
    Rows with fewer than k entries get a 1e-10 relative shift (plain normal equations would be singular).
    Memory O(|Omega| + (m+n) k^2).
    """
    m, n = shape
    S = sp.csr_array((vals, (rows, cols)), shape=shape)
    mask = sp.csr_array((np.ones_like(vals), (rows, cols)), shape=shape)
    St, maskt = S.T.tocsr(), mask.T.tocsr()
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((m, k)) if U0 is None else np.array(U0, dtype=np.float64)
    eye = np.eye(k)

    def half(Mv, Mmask, F):
        W = (F[:, :, None] * F[:, None, :]).reshape(F.shape[0], k * k)
        G = (Mmask @ W).reshape(-1, k, k)
        tr = np.trace(G, axis1=1, axis2=2)
        G += (reg + 1e-10 * tr[:, None, None] / k + 1e-300) * eye
        return np.linalg.solve(G, (Mv @ F)[:, :, None])[:, :, 0]

    V = np.zeros((n, k))
    with _blas_threads(BLAS_THREADS):
        for it in range(maxiter):
            V = half(St, maskt, U)
            U = half(S, mask, V)
            if callback is not None:
                callback(it + 1, U, V)
    return U, V


def softimpute_peer(X_nan, k, *, max_iters=100):
    """**Peer**: fancyimpute's SoftImpute on a dense NaN matrix (``max_rank=k``; ``k=None``: its defaults,
    full SVDs). Raises ImportError when fancyimpute is missing."""
    import fancyimpute.soft_impute
    import fancyimpute.solver
    from sklearn.utils import check_array

    def _check_array(X, force_all_finite=True, **kw):     # compat with scikit-learn >= 1.8
        return check_array(X, ensure_all_finite=force_all_finite, **kw)

    fancyimpute.solver.check_array = _check_array
    fancyimpute.soft_impute.check_array = _check_array
    with warnings.catch_warnings(), _blas_threads(BLAS_THREADS):
        warnings.simplefilter("ignore")
        if k is None:
            return fancyimpute.soft_impute.SoftImpute(max_iters=max_iters, verbose=False).fit_transform(X_nan)
        return fancyimpute.soft_impute.SoftImpute(max_rank=k, max_iters=max_iters, verbose=False,
                                                  init_fill_method="zero").fit_transform(X_nan)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def print_table(rows, title):
    """Print a list of dicts as an aligned plain-text table."""
    if not rows:
        return
    cols = list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, width)))
    print("  ".join("-" * w for w in width))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, width)))


def _warm():
    """Compile/load every kernel once (float64), so timings exclude JIT; returns the seconds spent."""
    import numopt
    from numopt.problems import MatrixCompletion

    t0 = time.perf_counter()
    r, c, v, _ = synthetic(60, 50, 1500, 3, seed=1)
    P = MatrixCompletion(r, c, v, (60, 50), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in ("cholesky", "cg", "sketch-cg", "auto"):
            numopt.minimize(P, method="altmin", options=dict(solver=s, maxiter=2, sketch_size=6))
    return time.perf_counter() - t0


def _run(P, **opts):
    import numopt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return numopt.minimize(P, method="altmin", options=opts)


# --------------------------------------------------------------------------------------------------
# table 1: the scale protocol
# --------------------------------------------------------------------------------------------------
def _best(h, key):
    """Best (smallest) per-iteration value, the first iteration excluded when there are more (it holds
    the cold first V-step and, for auto, the timing of the candidates)."""
    v = np.asarray(h[key], dtype=float)
    return float(v[1:].min() if v.size > 1 else v[0])


def scale_table(m, nnz, ranks, iters, target_iters, max_target_iters, seed=0,
                solvers=("cholesky", "cg", "sketch-cg", "auto"), sketch_iters=2):
    from numopt.problems import MatrixCompletion

    out = []
    for k in ranks:
        rows, cols, vals, _ = synthetic(m, m, nnz, k, noise=0.1, seed=seed + k)
        P = MatrixCompletion(rows, cols, vals, (m, m), k)
        per = {}
        load0 = os.getloadavg()[0]
        for solver in dict.fromkeys(("cholesky",) + tuple(solvers)):
            n_it = sketch_iters if solver == "sketch-cg" else iters
            per[solver] = _run(P, solver=solver, maxiter=n_it, tol=0.0, xtol=0.0, atol=0.0, random_state=seed)
        # the objective exact ALS reaches after target_iters iterations, and the time each solver needs
        ref = _run(P, solver="cholesky", maxiter=target_iters, tol=0.0, xtol=0.0, atol=0.0, random_state=seed)
        f_target = ref.history["fun"][-1] * (1 + 1e-6)
        reach = {"cholesky": (target_iters, float(np.sum(ref.history["iter_time"])),
                              float(np.sum(ref.history["iter_cpu"])))}
        for solver in [s for s in ("cg", "auto") if s in solvers]:
            def stop(r):
                if r.fun <= f_target:
                    raise StopIteration

            import numopt
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r2 = numopt.minimize(P, method="altmin", callback=stop,
                                     options=dict(solver=solver, maxiter=max_target_iters, tol=0.0, xtol=0.0,
                                                  atol=0.0, random_state=seed))
            ok = r2.history["fun"][-1] <= f_target
            reach[solver] = (r2.nit if ok else None, float(np.sum(r2.history["iter_time"])) if ok else None,
                             float(np.sum(r2.history["iter_cpu"])) if ok else None)
        load1 = os.getloadavg()[0]
        t_chol = _best(per["cholesky"].history, "iter_time")
        c_chol = _best(per["cholesky"].history, "iter_cpu")
        for solver, res in per.items():
            h = res.history
            t_it, cpu = _best(h, "iter_time"), _best(h, "iter_cpu")
            its, tt, tc = reach.get(solver, (None, None, None))
            used = "/".join(f"{a}:{b}" for a, b in res.solver_counts.items())
            if solver == "auto":
                used = "->" + "/".join(f"{side}:{c['solver']}" for side, c in res.auto_choice.items())
            rest = slice(1, None) if len(h["passes"]) > 1 else slice(None)
            out.append({
                "k": k, "solver": solver, "used": used, "iters": res.nit,
                "best_s_per_iter": t_it, "best_cpu_s_per_iter": cpu,
                "passes_per_iter": float(np.mean(h["passes"][rest])),
                "row_passes": float(np.mean(h["row_passes"][rest])),
                "dense_passes": float(np.mean(h["dense_passes"][rest])),
                "speedup_vs_cholesky": t_chol / t_it, "cpu_speedup": c_chol / cpu,
                f"iters_to_f(chol@{target_iters})": "-" if solver == "sketch-cg" else (its if its else "not reached"),
                "time_to_f_s": "-" if (solver == "sketch-cg" or tt is None) else tt,
                "cpu_to_f_s": "-" if (solver == "sketch-cg" or tc is None) else tc,
                "load1": f"{load0:.1f}-{load1:.1f}",
            })
    return out


# --------------------------------------------------------------------------------------------------
# table 2: peers on <= 2000 x 2000
# --------------------------------------------------------------------------------------------------
def peer_table(m, nnz, k, maxiter, seed=0):
    from numopt.completion._altmin import sparse_top_svd
    from numopt.problems import MatrixCompletion

    rows, cols, vals, _ = synthetic(m, m, nnz, k, noise=0.01, seed=seed)
    rng = np.random.default_rng(seed)
    test = rng.random(rows.size) < 0.1
    tr, te = ~test, test
    r, c, v = rows[tr], cols[tr], vals[tr]
    P = MatrixCompletion(r, c, v, (m, m), k)

    def test_rmse(U, V, offset=0.0):
        pred = np.einsum("ij,ij->i", U[rows[te]], V[cols[te]]) + offset
        return float(np.sqrt(np.mean((pred - vals[te]) ** 2)))

    def train_rmse(U, V):
        return float(np.sqrt(np.mean((np.einsum("ij,ij->i", U[r], V[c]) - v) ** 2)))

    out = []
    for solver in ("auto", "cg", "cholesky"):
        t0 = time.perf_counter()
        res = _run(P, solver=solver, maxiter=maxiter, random_state=seed)
        t = time.perf_counter() - t0
        out.append({"method": f"numopt altmin ({solver})", "iters": res.nit, "time_s": t, "s_per_iter": t / res.nit,
                    "train_rmse": train_rmse(res.U, res.V), "test_rmse": test_rmse(res.U, res.V)})
    # peer: plain SciPy exact ALS, same SVD initialization, as many iterations as numopt's exact solver used
    n_it = out[-1]["iters"]
    t0 = time.perf_counter()
    p0 = r.size / (m * m)
    S = sp.csr_array((v, (r, c)), shape=(m, m))
    Q, _, _ = sparse_top_svd(S.indptr, S.indices, S.data, (m, m), k, scale=1 / p0, rng=seed)
    U, V = scipy_als(r, c, v, (m, m), k, maxiter=n_it, U0=Q)
    t = time.perf_counter() - t0
    out.append({"method": "PEER scipy exact ALS", "iters": n_it, "time_s": t, "s_per_iter": t / n_it,
                "train_rmse": train_rmse(U, V), "test_rmse": test_rmse(U, V)})
    try:
        X = np.full((m, m), np.nan)
        X[r, c] = v
        t0 = time.perf_counter()
        Xs = softimpute_peer(X, k)
        t = time.perf_counter() - t0
        out.append({"method": "PEER fancyimpute SoftImpute", "iters": "<=100", "time_s": t, "s_per_iter": float("nan"),
                    "train_rmse": "n/a (keeps observed)",
                    "test_rmse": float(np.sqrt(np.mean((Xs[rows[te], cols[te]] - vals[te]) ** 2)))})
    except ImportError:
        out.append({"method": "PEER fancyimpute SoftImpute", "iters": "not installed"})
    ref = next(o["time_s"] for o in out if o["method"] == "PEER scipy exact ALS")
    for o in out:
        if "time_s" in o:
            o["time_vs_scipy_als"] = o["time_s"] / ref
    return out


def digits_table(seed=0):
    """Real-data-like check: scikit-learn digits (1797 x 64), 50% of the entries hidden."""
    from sklearn.datasets import load_digits

    from numopt.completion import MatrixCompleter

    D = load_digits().data.astype(np.float64)
    hide = np.random.default_rng(seed).random(D.shape) < 0.5
    X = np.where(hide, np.nan, D)
    truth = D[hide]

    def err(Y):
        return float(np.linalg.norm(Y[hide] - truth) / np.linalg.norm(truth))

    out = []
    col_mean = np.nan_to_num(np.nanmean(X, axis=0))
    out.append({"method": "column means", "rel_err_hidden": err(np.broadcast_to(col_mean, D.shape)), "time_s": 0.0})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MatrixCompleter(rank=15, reg=30.0, center="biases", random_state=seed).fit(X)
    out.append({"method": "numopt MatrixCompleter(rank=15, reg=30, biases)", "rel_err_hidden": err(est.reconstruct()),
                "time_s": time.perf_counter() - t0})
    try:
        t0 = time.perf_counter()
        Y = softimpute_peer(X, 15)
        out.append({"method": "PEER fancyimpute SoftImpute(max_rank=15)", "rel_err_hidden": err(Y),
                    "time_s": time.perf_counter() - t0})
        t0 = time.perf_counter()
        Y = softimpute_peer(X, None)
        out.append({"method": "PEER fancyimpute SoftImpute() defaults", "rel_err_hidden": err(Y),
                    "time_s": time.perf_counter() - t0})
    except ImportError:
        pass
    U, s, Vt = np.linalg.svd(D, full_matrices=False)
    out.append({"method": "oracle: best rank-15 of the full matrix", "rel_err_hidden": err((U[:, :15] * s[:15]) @ Vt[:15]),
                "time_s": 0.0})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m numopt.bench completion")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--m", type=int, help="rows = columns of the scale test (default 20000; quick 2000)")
    p.add_argument("--nnz", type=float, help="|Omega| of the scale test (default 4e6; quick 2e5)")
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--iters", type=int, default=4, help="iterations timed per solver (best of all but the first)")
    p.add_argument("--sketch-iters", type=int, default=2, help="iterations timed for sketch-cg (slow at k >= 32)")
    p.add_argument("--solvers", nargs="+", default=["cholesky", "cg", "sketch-cg", "auto"],
                   choices=["cholesky", "cg", "sketch-cg", "auto"], help="row solvers of the scale table")
    p.add_argument("--target-iters", type=int, default=5)
    p.add_argument("--peer-m", type=int, help="size of the peer comparison (default 1000; quick 500)")
    p.add_argument("--skip", nargs="*", default=[], choices=["scale", "peers", "digits"])
    args = p.parse_args(argv)
    m = args.m or (2000 if args.quick else 20000)
    nnz = int(args.nnz or (2e5 if args.quick else 4e6))
    peer_m = args.peer_m or (500 if args.quick else 1000)
    import numba

    print(f"numopt altmin benchmark: {os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"cold start (first calls, JIT compile or cache load): {_warm():.2f} s")
    if "scale" not in args.skip:
        print(f"\nPer-iteration cost, {m} x {m}, |Omega| = {nnz:.3g}, rank-k data + 0.1 noise, reg = 0 "
              f"(best of iterations 2..{args.iters}; passes = ALL FMAs of an iteration / (|Omega| k): row solves incl. "
              f"the residual, plus the dense O((m+n)k^2) QRs, warm-start maps and Grams (dense_passes); "
              f"exact-Cholesky ALS = solver 'cholesky'; cpu_s = CPU seconds of all threads per iteration, robust to other "
              f"jobs on the machine; load1 = 1-minute load average before-after)")
        for k in args.ranks:                     # one table per rank, printed as soon as it is measured
            rows = scale_table(m, nnz, [k], args.iters, args.target_iters, max_target_iters=10 * args.target_iters,
                               solvers=args.solvers, sketch_iters=args.sketch_iters)
            print_table(rows, f"k = {k}")
    if "peers" not in args.skip:
        pm = peer_m
        rows = peer_table(pm, int(0.1 * pm * pm), 8, maxiter=50)
        print_table(rows, f"Peers, {pm} x {pm}, 10% observed (10% of those held out), rank 8 + 0.01 noise")
    if "digits" not in args.skip:
        print_table(digits_table(), "scikit-learn digits (1797 x 64), 50% of the entries hidden")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
