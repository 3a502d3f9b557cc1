"""Greedy BCD vs. skglm, celer, scikit-learn (and SciPy CG for label propagation), same run.

``python -m numopt.bench bcd [--quick] [--repeat R]``

* Lasso on the dataset-A replica (1000 x 10 000 CSC, ~6.9% dense) at alpha_max/10 and alpha_max/100;
* L1-logistic on scikit-learn's breast_cancer (standardized, C = 1, no intercept);
* label propagation on a lattice (10^6 nodes; 10^4 with ``--quick``) to relative error 1e-8 vs. SciPy CG.

"Time to gap 1e-6": every solver is run with a ladder of its own tolerances; the duality gap of its output is
recomputed by us with one formula (Lasso: gap / ||y||^2, scikit-learn's rule; logistic: gap / (n log 2)), and the
time of the loosest tolerance that reaches 1e-6 is reported (best of ``repeat``, all solvers warmed first).
The cold start (first call in a fresh process) is measured in a subprocess.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

TARGET = 1e-6
LADDER = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-12]


def dataset_a(n=1000, p=10_000, seed=0):
    """The paper's dataset-A recipe: sparse, badly scaled columns, 10%-sparse truth."""
    rng = np.random.default_rng(seed)
    dens = 10 * np.log(n) / n
    A = (rng.standard_normal((n, p)) + 1.0) * (10 * rng.standard_normal(p))
    A[rng.random((n, p)) >= dens] = 0.0
    w = rng.standard_normal(p) * (rng.random(p) < 0.1)
    y = A @ w + rng.standard_normal(n)
    return sp.csc_matrix(A), y


def lattice(side, frac=0.04, seed=0, weight=1e5):
    """The paper's dataset-D recipe scaled up: side x side 4-neighbour lattice with weights 1e5, ``frac`` (4%,
    as D's 100 of 2500) of the nodes labelled with 10 * randn values; Q = (Deg - W)_UU, c = W_US y_S."""
    import numopt.problems as P
    e = np.ones(side)
    T = sp.diags([e[:-1], e[:-1]], [-1, 1], shape=(side, side))
    I = sp.identity(side)
    W = (weight * (sp.kron(I, T) + sp.kron(T, I))).tocsr()
    rng = np.random.default_rng(seed)
    N = side * side
    mask = np.zeros(N, dtype=bool)
    mask[rng.choice(N, max(1, int(frac * N)), replace=False)] = True
    y = 10 * rng.standard_normal(int(mask.sum()))
    return P.LabelPropagation(W, y, mask)


def _time(fn, repeat):
    best = np.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _time_to_gap(run, gap_of, repeat):
    """Loosest tolerance of the ladder whose output has gap <= TARGET; returns (seconds, gap, tol)."""
    for tol in LADDER:
        run(tol)  # warm at this tolerance
        t, x = _time(lambda: run(tol), 1)
        g = gap_of(x)
        if g <= TARGET:
            return t, g, tol
    return np.nan, g, tol


def _interleaved(solvers, gap_of, repeat):
    """Pick each solver's tolerance, then time all of them round-robin (``repeat`` rounds, best kept).

    Round-robin timing puts every solver under the same background load, which matters on a shared box.
    """
    picked = {k: _time_to_gap(f, gap_of, 1) for k, f in solvers.items()}
    best = {k: v[0] for k, v in picked.items()}
    for _ in range(repeat):
        for k, f in solvers.items():
            tol = picked[k][2]
            t, _ = _time(lambda: f(tol), 1)
            best[k] = min(best[k], t)
    return {k: (best[k], picked[k][1], picked[k][2]) for k in solvers}


def _lasso_rows(X, y, alpha, repeat):
    from celer import Lasso as CLasso
    from skglm import Lasso as GLasso
    from sklearn.linear_model import Lasso as SLasso

    import numopt
    from numopt.problems import LeastSquares

    n = X.shape[0]
    pb = LeastSquares(X, y, l1=n * alpha)

    def gap_of(w):
        return pb.duality_gap(np.asarray(w, dtype=float)) / pb.gap_scale

    solvers = {
        "numopt bcd": lambda tol: numopt.minimize(LeastSquares(X, y, l1=n * alpha), method="bcd", tol=tol).x,
        "skglm": lambda tol: GLasso(alpha=alpha, fit_intercept=False, tol=tol, max_iter=1000).fit(X, y).coef_,
        "celer": lambda tol: CLasso(alpha=alpha, fit_intercept=False, tol=tol).fit(X, y).coef_,
        "sklearn": lambda tol: SLasso(alpha=alpha, fit_intercept=False, tol=tol, max_iter=100_000).fit(X, y).coef_,
    }
    return _interleaved(solvers, gap_of, repeat)


def _logistic_rows(repeat):
    from celer import LogisticRegression as CLog
    from skglm import SparseLogisticRegression
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import numopt
    from numopt.problems import Logistic

    X, y01 = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = 2.0 * y01 - 1.0
    n = X.shape[0]
    pb = Logistic(X, y, l1=1.0)

    def gap_of(w):
        return pb.duality_gap(np.asarray(w, dtype=float).ravel()) / pb.gap_scale

    solvers = {
        "numopt bcd": lambda tol: numopt.minimize(Logistic(X, y, l1=1.0), method="bcd", tol=tol).x,
        "skglm": lambda tol: SparseLogisticRegression(alpha=1.0 / n, fit_intercept=False, tol=tol,
                                                      max_iter=1000).fit(X, y).coef_,
        "celer": lambda tol: CLog(C=1.0, solver="celer-pn", fit_intercept=False, tol=tol).fit(X, y).coef_,
        "liblinear": lambda tol: LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", fit_intercept=False,
                                                    tol=tol, max_iter=10_000).fit(X, y).coef_,
    }
    return _interleaved(solvers, gap_of, repeat)


def _labelprop_rows(side, repeat):
    """Time to relative error 1e-8 (vs. a CG solution at rtol 1e-13) of tree-Newton BCD and SciPy's CG.

    Each solver runs at the loosest of its own tolerances (BCD: KKT ``|g|_inf <= tol |c|_inf``; CG: ``rtol``)
    whose output reaches the error; rows: seconds (best of ``repeat``), error, tolerance, iterations
    (BCD: sweeps over the forest partition, i.e. block updates / blocks; CG: iterations).
    """
    from scipy.sparse.linalg import cg

    import numopt
    pb = lattice(side)
    Q, c = pb.Q, pb.c
    xs, _ = cg(Q, c, rtol=1e-13, maxiter=100_000)
    ns = np.linalg.norm(xs)

    def err(x):
        return np.linalg.norm(x - xs) / ns

    def bcd(relax):
        def run(tol):
            r = numopt.minimize(pb, method="bcd", partition="tree", relax=relax, tol=tol, maxiter=100_000)
            return r.x, r.nit / r.n_blocks
        return run

    def scipy_cg(tol):
        it = [0]

        def cb(_):
            it[0] += 1
        return cg(Q, c, rtol=tol, maxiter=100_000, callback=cb)[0], it[0]

    ladder = [1e-8, 5e-9, 2e-9, 1e-9, 5e-10, 2e-10, 1e-10, 1e-11, 1e-12]  # the same for both
    solvers = {"bcd tree-newton, relax auto": (bcd("auto"), ladder),
               "scipy cg": (scipy_cg, ladder),
               "bcd tree-newton, relax 1": (bcd(1.0), ladder)}
    picked = {}
    for name, (f, tols) in solvers.items():  # loosest tolerance reaching the error (first run: the warm-up)
        for tol in tols:
            t, (x, nit) = _time(lambda: f(tol), 1)
            if err(x) <= 1e-8:
                break
        picked[name] = [t, err(x), tol, nit]
    # then round-robin timing (the relax-1 baseline is slow: timed once), best kept: same background load
    for _ in range(repeat - 1):
        for name, (f, _tols) in solvers.items():
            if name.endswith("relax 1"):
                continue
            t, _ = _time(lambda: f(picked[name][2]), 1)
            picked[name][0] = min(picked[name][0], t)
    return {k: tuple(v) for k, v in picked.items()}


def _cold_start():
    code = ("import time; t=time.perf_counter(); import numpy as np, numopt; from numopt.problems import "
            "LeastSquares, Logistic; t1=time.perf_counter(); rng=np.random.default_rng(0); A=rng.standard_normal"
            "((50, 20)); b=rng.standard_normal(50); numopt.minimize(LeastSquares(A, b, l1=1.0), method='bcd'); "
            "t2=time.perf_counter(); numopt.minimize(Logistic(A, np.sign(b), l1=1.0), method='bcd'); "
            "t3=time.perf_counter(); print(t1-t, t2-t1, t3-t2)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return [float(v) for v in out]


def _table(title, rows, peers):
    print(f"\n{title}")
    print(f"  {'solver':<26}{'seconds':>10}{'rel. gap':>11}{'tol used':>10}{'ours/peer':>11}")
    ours = rows["numopt bcd"][0] if "numopt bcd" in rows else next(iter(rows.values()))[0]
    for k, (t, g, tol) in rows.items():
        ratio = "" if k.startswith("numopt") else f"{ours / t:>11.2f}"
        print(f"  {k:<26}{t:>10.4f}{g:>11.1e}{tol:>10.0e}{ratio}")
    best = min(rows[p][0] for p in peers if p in rows)
    print(f"  ours / fastest of {', '.join(peers)}: {ours / best:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m numopt.bench bcd", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-labelprop", action="store_true")
    ap.add_argument("--side", type=int, nargs="+", default=None,
                    help="lattice side(s) for label propagation (default 1000)")
    ap.add_argument("--repeat-lp", type=int, default=3, help="repeats of the label-propagation timings")
    ap.add_argument("--skip-lasso", action="store_true", help="only label propagation")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    # one BLAS thread for every solver: the CD peers do not use BLAS, and on a shared 2-core box threaded
    # BLAS calls spin and make the timings noisy
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover
        pass
    n, p = (300, 3000) if args.quick else (1000, 10_000)
    if args.skip_lasso:
        return _labelprop_main(args)
    cold = _cold_start()
    print(f"cold start (fresh process): import numopt {cold[0]:.3f} s, first Lasso {cold[1]:.3f} s, "
          f"first L1-logistic {cold[2]:.3f} s")
    from numopt.bcd._kernels import warmup
    warmup()
    X, y = dataset_a(n, p)
    amax = np.abs(X.T @ y).max() / n
    print(f"dataset A replica: {X.shape}, nnz {X.nnz}")
    for div in (10, 100):
        rows = _lasso_rows(X, y, amax / div, args.repeat)
        _table(f"Lasso alpha_max/{div}: time to relative gap {TARGET:g}", rows, ["skglm", "celer"])
        print(f"  ours / sklearn: {rows['numopt bcd'][0] / rows['sklearn'][0]:.2f}")
    rows = _logistic_rows(args.repeat)
    _table(f"L1-logistic breast_cancer (C=1): time to relative gap {TARGET:g}", rows,
           ["skglm", "celer", "liblinear"])
    if not args.skip_labelprop:
        _labelprop_main(args)
    return 0


def _labelprop_main(args):
    for sd in args.side or [100 if args.quick else 1000]:
        rows = _labelprop_rows(sd, args.repeat_lp)
        print(f"\nlabel propagation, {sd}x{sd} lattice ({sd * sd} nodes, 4% labelled, w = 1e5): "
              "time to relative error 1e-8")
        print(f"  {'solver':<30}{'seconds':>10}{'rel. err':>11}{'tol used':>10}{'sweeps/its':>12}{'ours/cg':>9}")
        tcg = rows["scipy cg"][0]
        for k, (t, e, tol, nit) in rows.items():
            ratio = "" if k == "scipy cg" else f"{t / tcg:>9.2f}"
            print(f"  {k:<30}{t:>10.4f}{e:>11.1e}{tol:>10.0e}{nit:>12.0f}{ratio}")
        print(f"  load average: {os.getloadavg()[0]:.2f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
