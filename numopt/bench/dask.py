"""``python -m numopt.bench dask``: distributed AltMin, time per iteration vs. workers, bytes moved.

A synthetic rank-k problem is generated *on the workers* (a Dask DataFrame of (row, col, value)
partitions built by delayed tasks, never on the driver), laid out as CSR/CSC blocks and solved by
``minimize_altmin_dask`` on ``LocalCluster(n_workers=w, threads_per_worker=1)`` for w = 1, 2. The
single-machine solver on the same data (Numba threads = w) is the peer, same run.

Per iteration it reports seconds, the bytes the driver scattered/gathered (factors only) and the bytes
the workers sent each other (peer fetches of the scattered factor), and their sum against the size of
the factors (m + n) k * 8 B and against |Omega| * 16 B (what shipping Omega once per iteration would cost).
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np

__all__ = ["main", "synthetic_source"]


def _part(lo, hi, n, p, k, seed, noise):
    """Triplets of rows ``lo..hi-1``: each entry observed with probability p; values of a rank-k truth."""
    import pandas as pd

    rng = np.random.default_rng([seed, 2, lo])
    rows, cols = [], []
    step = max(1, int(4e6 // n))               # bounded temporaries
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        r, c = np.nonzero(rng.random((b - a, n), dtype=np.float32) < p)
        rows.append(r + a)
        cols.append(c)
    r = np.concatenate(rows).astype(np.int64)
    c = np.concatenate(cols).astype(np.int64)
    Ub = np.random.default_rng([seed, 0]).standard_normal((hi, k))[lo:]    # rows lo..hi-1 of U*
    Vs = np.random.default_rng([seed, 1]).standard_normal((n, k))
    v = np.einsum("ij,ij->i", Ub[r - lo], Vs[c])
    if noise:
        v += noise * rng.standard_normal(v.size)
    return pd.DataFrame({"row": r, "col": c, "value": v})


def synthetic_source(m, n, nnz, k, *, parts=16, seed=0, noise=0.0):
    """A Dask DataFrame of about ``nnz`` observed entries of a rank-``k`` m x n matrix (built lazily)."""
    import dask
    import dask.dataframe as dd
    import pandas as pd

    p = min(1.0, nnz / (m * n))
    bounds = np.linspace(0, m, parts + 1).astype(np.int64)
    meta = pd.DataFrame({"row": np.zeros(0, np.int64), "col": np.zeros(0, np.int64), "value": np.zeros(0)})
    return dd.from_delayed([dask.delayed(_part, pure=True)(int(a), int(b), n, p, k, seed, noise)
                            for a, b in zip(bounds[:-1], bounds[1:])], meta=meta)


def _single_machine(source, shape, k, opts, workers):
    from numopt.completion._altmin import minimize_altmin
    from numopt.problems import MatrixCompletion

    df = source.compute(scheduler="threads")
    prob = MatrixCompletion(df["row"].to_numpy(), df["col"].to_numpy(), df["value"].to_numpy(), shape, k)
    del df
    out = {}
    for w in workers:
        t = time.perf_counter()
        res = minimize_altmin(prob, workers=w, **opts)
        out[w] = (res, time.perf_counter() - t)
    return prob.nnz, out


def _worker_sent(dask_worker):
    return int(dask_worker.transfer_outgoing_bytes_total)


def _cpu():
    return time.process_time()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m numopt.bench dask", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small problem (|Omega| = 1e6)")
    ap.add_argument("--m", type=int, default=40000)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--nnz", type=float, default=2e7)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--maxiter", type=int, default=3)
    ap.add_argument("--solver", default="auto")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--no-peer", action="store_true", help="skip the single-machine run")
    args = ap.parse_args(argv)
    if args.quick:
        args.m, args.n, args.nnz = 8000, 4000, 1e6
    from distributed import Client, LocalCluster

    from numopt.completion._dask import minimize_altmin_dask
    from numopt.completion._dask_data import DaskMatrixCompletion

    warnings.simplefilter("ignore")
    m, n, k = args.m, args.n, args.rank
    nworkers = [int(w) for w in args.workers.split(",")]
    opts = dict(maxiter=args.maxiter, solver=args.solver, random_state=0, n_power_iter=2, tol=0.0, xtol=0.0)
    factor_bytes = (m + n) * k * 8
    print(f"# synthetic rank-{k} {m} x {n}, |Omega| ~ {args.nnz:.2g}, solver={args.solver}, "
          f"{args.maxiter} iterations (SVD init, 2 power iterations)")
    rows = []
    nnz = None
    for w in nworkers:
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None,
                          memory_limit=0, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            source = synthetic_source(m, n, args.nnz, k, parts=16)
            prob = DaskMatrixCompletion(source, (m, n), k)
            t = time.perf_counter()
            lay = prob.layout(client)
            t_layout = time.perf_counter() - t
            nnz = lay.nnz
            # cold start: the first solve also loads the Numba kernels in the fresh worker processes
            t = time.perf_counter()
            minimize_altmin_dask(prob, client=client, **dict(opts, maxiter=1))
            t_cold = time.perf_counter() - t
            sent, cpu = [], []

            def snap(res):
                sent.append(sum(client.run(_worker_sent).values()))
                cpu.append(sum(client.run(_cpu).values()) + time.process_time())

            snap(None)
            t = time.perf_counter()
            res = minimize_altmin_dask(prob, client=client, callback=snap, **opts)
            t_total = time.perf_counter() - t
            it = np.asarray(res.history["iter_time"])
            per_iter_sent = np.diff(sent)[1:].mean() if len(sent) > 2 else np.diff(sent).mean()
            per_iter_cpu = float(np.median(np.diff(cpu)[1:] if len(cpu) > 2 else np.diff(cpu)))
            rows.append(dict(who=f"dask, {w} worker{'s' if w > 1 else ''}", layout=t_layout, cold=t_cold,
                             init=res.init_time, iter=float(np.median(it)), cpu=per_iter_cpu, total=t_total,
                             driver=res.bytes_per_iter, sent=per_iter_sent - res.bytes_in_per_iter,
                             fun=res.history["fun"][-1],
                             omega=lay.nbytes))
            _print_row(rows[-1], rows[0], factor_bytes, nnz, header=len(rows) == 1)
    if not args.no_peer:
        source = synthetic_source(m, n, args.nnz, k, parts=16)
        _, peer = _single_machine(source, (m, n), k, opts, nworkers)
        for w, (res, tt) in peer.items():
            rows.append(dict(who=f"single machine, {w} thread{'s' if w > 1 else ''}", layout=np.nan, cold=np.nan,
                             init=res.init_time, iter=float(np.median(res.history["iter_time"])), total=tt,
                             cpu=float(np.median(res.history.get("iter_cpu", [np.nan]))),
                             driver=0.0, sent=0.0, fun=res.history["fun"][-1], omega=np.nan))
            _print_row(rows[-1], rows[0], factor_bytes, nnz, header=False)
    print(f"\n# |Omega| = {nnz:,} ; factors (m+n)k*8 B = {factor_bytes / 2**20:.1f} MiB ; "
          f"Omega as 16 B/entry = {nnz * 16 / 2**20:.0f} MiB")
    return 0


def _print_row(r, first, factor_bytes, nnz, header):
    if header:
        print("| run | layout s | cold 1st solve s | init s | s / iteration | vs dask 1 worker | CPU s / iteration "
              "| driver MiB / it | worker-to-worker MiB / it | moved / ((m+n)k*8 B) | moved / (16 B x Omega) | final f |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    moved = r["driver"] + r["sent"]
    print(f"| {r['who']} | {r['layout']:.1f} | {r['cold']:.1f} | {r['init']:.2f} | {r['iter']:.2f} | "
          f"{first['iter'] / r['iter']:.2f}x | {r['cpu']:.2f} | {r['driver'] / 2**20:.1f} | {r['sent'] / 2**20:.1f} | "
          f"{moved / factor_bytes:.1f} | {moved / (16 * nnz):.4f} | {r['fun']:.4g} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
