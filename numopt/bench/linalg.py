"""CG / IC(0)-PCG vs SciPy cg and PyAMG-preconditioned CG on 3-D Poisson, in one run.

``python -m numopt.bench linalg [--quick] [--sizes 32 64 96]``
"""
from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse.linalg as sla

from .._table import print_table, timed
from ..linalg import cg, ichol0, poisson


def _iters(fn):
    its = []
    (x, info), t = timed(fn, callback=lambda xk: its.append(1))
    return x, info, len(its), t


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m numopt.bench linalg")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", type=int, nargs="+")
    p.add_argument("--rtol", type=float, default=1e-8)
    args = p.parse_args(argv)
    sizes = args.sizes or ([16, 32] if args.quick else [32, 64, 96])
    try:
        import pyamg
    except ImportError:  # pragma: no cover
        pyamg = None
    rows, per_iter = [], []
    for n in sizes:
        A = poisson((n, n, n))
        b = np.random.default_rng(n).standard_normal(A.shape[0])
        nb = np.linalg.norm(b)
        res = {}
        res["scipy cg"] = (*_iters(lambda callback: sla.cg(A, b, rtol=args.rtol, callback=callback)), 0.0)
        res["numopt cg"] = (*_iters(lambda callback: cg(A, b, rtol=args.rtol, callback=callback)), 0.0)
        M, ts = timed(ichol0, A)
        res["numopt pcg-ic0"] = (*_iters(lambda callback: cg(A, b, rtol=args.rtol, M=M, callback=callback)), ts)
        res["scipy cg + numopt ic0"] = (*_iters(lambda callback: sla.cg(A, b, rtol=args.rtol, M=M, callback=callback)), ts)
        if pyamg is not None:
            ml, ts = timed(pyamg.smoothed_aggregation_solver, A)
            Mg = ml.aspreconditioner(cycle="V")
            res["pyamg SA + scipy cg"] = (*_iters(lambda callback: sla.cg(A, b, rtol=args.rtol, M=Mg, callback=callback)), ts)
        ref = res["scipy cg"][3]
        for name, (x, info, its, t, ts) in res.items():
            rows.append({"grid": f"{n}^3", "method": name, "iters": its, "setup_s": ts, "solve_s": t,
                         "total_vs_scipy_cg": (t + ts) / ref,
                         "rel_res": float(np.linalg.norm(b - A @ x) / nb)})
        # per-iteration cost at a fixed iteration count (no convergence test effects)
        k = 100
        _, t_ours = timed(lambda: cg(A, b, rtol=0.0, maxiter=k), repeat=3)
        _, t_sp = timed(lambda: sla.cg(A, b, rtol=0.0, maxiter=k), repeat=3)
        per_iter.append({"grid": f"{n}^3", "numopt_ms_per_iter": 1e3 * t_ours / k,
                         "scipy_ms_per_iter": 1e3 * t_sp / k, "ratio": t_ours / t_sp})
    print_table(rows, f"3-D Poisson to rtol={args.rtol} (random b, x0=0)")
    print_table(per_iter, "CG cost per iteration (best of 3, 100 iterations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
