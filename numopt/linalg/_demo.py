"""Demo: a 3-D Poisson system solved by numopt CG, IC(0)-PCG and SciPy's cg."""
import numpy as np
import scipy.sparse.linalg as sla

from .._table import print_table, timed
from ._cg import cg
from ._poisson import poisson
from ._precond import ichol0


def demo(quick=True):
    n = 32 if quick else 64
    A = poisson((n, n, n))
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    rtol = 1e-8
    rows = []

    def run(name, fn, setup_time=0.0):
        its = []
        (x, info), t = timed(fn, callback=lambda xk: its.append(1))
        rel = np.linalg.norm(b - A @ x) / np.linalg.norm(b)
        rows.append({"method": name, "iterations": len(its), "setup_s": setup_time, "solve_s": t,
                     "rel_residual": rel, "converged": info == 0})

    run("scipy cg", lambda callback: sla.cg(A, b, rtol=rtol, callback=callback))
    run("numopt cg", lambda callback: cg(A, b, rtol=rtol, callback=callback))
    M, t_setup = timed(ichol0, A)
    run("numopt pcg-ic0", lambda callback: cg(A, b, rtol=rtol, M=M, callback=callback), t_setup)
    ref = rows[0]["solve_s"]
    for r in rows:
        r["time_vs_scipy"] = (r["setup_s"] + r["solve_s"]) / ref
    print_table(rows, f"Sparse SPD: 3-D Poisson {n}^3 (n={A.shape[0]}), rtol={rtol}")
    return rows
