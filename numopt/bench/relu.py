"""Convex ReLU networks: numopt's ADMM / SCP vs. CVXPY (Clarabel) and scikit-learn's MLPClassifier.

``python -m numopt.bench relu [--quick]`` prints three tables, every row measured in this run:

1. Time to a 1e-4 relative objective gap on standardised breast_cancer (n = 569, d = 31 with bias,
   beta = 1, +-1 labels, squared loss), same patterns for both, P in {8, 32} (``--more-data``: also
   binary digits and a planted-teacher synthetic set): CVXPY+Clarabel (time includes its compilation,
   as a user pays it) vs. numopt ADMM at a sweep of tolerances, every row best of ``--repeat`` runs;
   the ADMM time includes the factorisation. "time to 1e-4" is the fastest ADMM run whose objective *and* recovered
   network objective are both within 1e-4 of Clarabel's optimum. The first (cold) call, which loads
   the cached Numba kernels, is reported separately.
2. 5-fold CV (stratified, shuffled, seed 0) test accuracy and mean fit time vs. ``MLPClassifier`` with
   the same hidden width (2P = 64) on breast_cancer and binary digits (digit >= 5), each contender
   repeated over three seeds (MLP's initialisation, our pattern sampling).
3. Per-iteration time and one-time factorisation time vs. P and n (the "quadratic-time" claim).

BLAS is limited to one thread for every contender (threadpoolctl) so timings on a shared 2-core
machine are comparable.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

__all__ = ["main"]


def _bc():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), 2.0 * y - 1.0


def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X, (y >= 5).astype(int)


def _digits_std(n=600):
    """Binary digits (>= 5), a seeded subsample of ``n`` rows, standardised, constant pixels dropped."""
    from sklearn.preprocessing import StandardScaler
    X, y = _digits()
    idx = np.random.default_rng(0).permutation(len(y))[:n]
    X = StandardScaler().fit_transform(X[idx])
    return X[:, X.std(axis=0) > 0], 2.0 * y[idx] - 1.0


def _synthetic(n=500, p=12):
    """A planted ReLU teacher (20 units) on anisotropic Gaussian inputs, standardised noisy targets."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, p)) * np.linspace(0.2, 3.0, p)
    y = np.maximum(X @ rng.standard_normal((p, 20)) + 0.5, 0.0) @ rng.standard_normal(20)
    return X, (y - y.mean()) / y.std() + 0.3 * rng.standard_normal(n)


def _best_of(repeat, fn):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def table_cvxpy(cases, rtols, out, repeat=3):
    """``cases``: list of ``(label, X, y, P)``; CVXPY and every ADMM row timed best of ``repeat``."""
    import os

    import numopt
    from numopt.problems import TwoLayerReLU
    from numopt.relu._cvx import cvxpy_solve

    out.append("## 1. Time to 1e-4 relative objective gap (beta = 1, squared loss, same patterns, "
               f"best of {repeat}; load average before: {os.getloadavg()[0]:.2f})\n")
    out.append("| data | P | contender | iterations | time (s) | rel. gap fun | rel. gap network | cone viol. | ratio CVXPY/ours |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for label, X, y, P in cases:
        base = TwoLayerReLU(X, y, 1.0, n_patterns=P, random_state=0)
        t_cvx, (f_ref, _, _) = _best_of(repeat, lambda: cvxpy_solve(base, "CLARABEL"))
        P_ = base.n_patterns_
        out.append(f"| {label} | {P_} | CVXPY+Clarabel | - | {t_cvx:.2f} | 0 | - | - | 1 |")
        best = None
        for rtol in rtols:
            def run():
                pr = TwoLayerReLU(X, y, 1.0, patterns=base.Dmat)     # fresh: the factorisation is timed too
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return numopt.minimize(pr, method="admm", rtol=rtol, atol=rtol * 1e-2, maxiter=50000)
            t, res = _best_of(repeat, run)
            g, gn = (res.fun - f_ref) / f_ref, (res.network_fun - f_ref) / f_ref
            ok = abs(g) <= 1e-4 and abs(gn) <= 1e-4
            if ok and (best is None or t < best):
                best = t
            out.append(f"| {label} | {P_} | ADMM rtol={rtol:g} ({res.linear_solver}) | {res.nit} | {t:.3f} | "
                       f"{g:+.1e} | {gn:+.1e} | {res.cone_violation:.1e} | {t_cvx / t:.1f}{' *' if ok else ''} |")
        out.append(f"| {label} | {P_} | **ADMM time to 1e-4** | | {best if best is None else round(best, 3)} | | | | "
                   f"**{'n/a' if best is None else f'{t_cvx / best:.1f}x'}** |")
    out.append(f"\n`*` = within 1e-4 (objective and recovered network). Ratio > 1: ours faster. "
               f"Load average after: {os.getloadavg()[0]:.2f}.\n")


def table_accuracy(P, datasets, out, n_splits=5, seeds=(0, 1, 2)):
    """5-fold CV accuracy and fit time, every contender repeated over ``seeds`` (MLP's initialisation,
    our pattern sampling); the folds are the same for all (StratifiedKFold, shuffled, seed 0)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from numopt.relu import ConvexReLUClassifier

    contenders = [
        (f"MLPClassifier(({2 * P},)) adam", lambda s: make_pipeline(StandardScaler(), MLPClassifier((2 * P,), random_state=s))),
        ("ConvexReLU admm squared (default, tol 1e-3)", lambda s: ConvexReLUClassifier(n_patterns=P, random_state=s)),
        ("ConvexReLU admm squared tol 1e-4", lambda s: ConvexReLUClassifier(n_patterns=P, tol=1e-4, random_state=s)),
        ("ConvexReLU admm squared, learned patterns (pattern_refinement=1)",
         lambda s: ConvexReLUClassifier(n_patterns=P, pattern_refinement=1.0, random_state=s)),
        (f"ConvexReLU admm squared, learned patterns, width budget (max_width={2 * P})",
         lambda s: ConvexReLUClassifier(n_patterns=P, pattern_refinement=1.0, max_width=2 * P, random_state=s)),
        ("ConvexReLU admm logistic, learned patterns (pattern_refinement=1)",
         lambda s: ConvexReLUClassifier(n_patterns=P, loss="logistic", pattern_refinement=1.0, random_state=s)),
        ("ConvexReLU admm logistic", lambda s: ConvexReLUClassifier(n_patterns=P, loss="logistic", random_state=s)),
        ("ConvexReLU scp logistic", lambda s: ConvexReLUClassifier(n_patterns=P, solver="scp", loss="logistic",
                                                                 random_state=s)),
    ]
    out.append(f"## 2. {n_splits}-fold CV accuracy and fit time vs MLPClassifier (hidden width {2 * P}, "
               f"seeds {list(seeds)})\n")
    _cv_rows(datasets, contenders, out, n_splits, seeds)


def _cv_rows(datasets, contenders, out, n_splits, seeds):
    """One table row per (data set, contender): CV accuracy over ``seeds`` and the mean fit time per fold,
    the first contender being the reference of the time ratio."""
    from sklearn.model_selection import StratifiedKFold

    out.append("| data | model | test accuracy: mean over seeds (sd) | per-seed range | fit time / fold (s) | "
               "ratio MLP time / ours |")
    out.append("|---|---|---|---|---|---|")
    for name, (X, y) in datasets.items():
        t_mlp = None
        folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=0).split(X, y))
        for label, make in contenders:
            per_seed, ts = [], []
            for seed in seeds:
                accs = []
                for tr, te in folds:
                    m = make(seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t0 = time.perf_counter()
                        m.fit(X[tr], y[tr])
                        ts.append(time.perf_counter() - t0)
                    accs.append(m.score(X[te], y[te]))
                per_seed.append(np.mean(accs))
            t = float(np.mean(ts))
            t_mlp = t if t_mlp is None else t_mlp
            a = np.asarray(per_seed)
            out.append(f"| {name} (n={X.shape[0]}) | {label} | {a.mean():.4f} ({a.std():.4f}) | "
                       f"{a.min():.4f}-{a.max():.4f} | {t:.3f} | {t_mlp / t:.2f} |")
    out.append("")


def _breadth_sets():
    """Classification sets *other* than the benchmark's two (shipped or generated: no downloads)."""
    from sklearn import datasets as ds
    return {"wine (3 classes)": ds.load_wine(return_X_y=True), "iris (3 classes)": ds.load_iris(return_X_y=True),
            "make_classification 1500x20": ds.make_classification(1500, 20, n_informative=10, random_state=1),
            "make_classification 3000x40": ds.make_classification(3000, 40, n_informative=20, flip_y=0.05,
                                                                  class_sep=0.8, random_state=2),
            "moons 1000": ds.make_moons(1000, noise=0.25, random_state=1),
            "circles 1000": ds.make_circles(1000, noise=0.1, factor=0.5, random_state=1),
            "gaussian_quantiles 1000x6": ds.make_gaussian_quantiles(n_samples=1000, n_features=6, n_classes=2,
                                                                    random_state=1),
            "hastie_10_2 2000": ds.make_hastie_10_2(2000, random_state=1)}


def table_breadth(P, out, n_splits=5, seeds=(0, 1)):
    """Table 2's protocol on eight more data sets: where the convex model stands beyond the benchmark's two."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from numopt.relu import ConvexReLUClassifier

    contenders = [
        (f"MLPClassifier(({2 * P},))", lambda s: make_pipeline(StandardScaler(), MLPClassifier((2 * P,), random_state=s))),
        ("ConvexReLU (default)", lambda s: ConvexReLUClassifier(n_patterns=P, random_state=s)),
        ("ConvexReLU learned patterns", lambda s: ConvexReLUClassifier(n_patterns=P, pattern_refinement=1.0, random_state=s)),
        (f"ConvexReLU learned patterns, max_width={2 * P}",
         lambda s: ConvexReLUClassifier(n_patterns=P, pattern_refinement=1.0, max_width=2 * P, random_state=s)),
        ("ConvexReLU beta=0.1", lambda s: ConvexReLUClassifier(n_patterns=P, beta=0.1, random_state=s)),
        (f"ConvexReLU n_patterns={4 * P}", lambda s: ConvexReLUClassifier(n_patterns=4 * P, random_state=s)),
    ]
    out.append(f"## 5. Breadth: {n_splits}-fold CV accuracy on eight more sets (hidden width {2 * P} unless "
               f"stated, seeds {list(seeds)})\n")
    _cv_rows(_breadth_sets(), contenders, out, n_splits, seeds)


def table_rbcd(out, n=5000, d=30, P=32, rtols=(1e-3,), big=(30000, 200, 64), big_iters=30):
    """Factorisation-free ADMM-RBCD vs the factorised ADMM: time, iterations, gap and peak Python memory
    (tracemalloc) on a planted sign problem, both to the same residual tolerance; then per-iteration cost of ADMM-RBCD where the factor would be large."""
    import tracemalloc

    import numopt
    from numopt.problems import TwoLayerReLU
    from numopt.relu._linsolve import choose_path

    def data(n, d):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, d))
        y = np.sign(np.maximum(X @ rng.standard_normal(d), 0) - 0.5 * np.maximum(-X @ rng.standard_normal(d), 0)
                    + 0.3 * rng.standard_normal(n))
        return X, y

    def run(pr, method, **kw):
        tracemalloc.start()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = numopt.minimize(pr, method=method, **kw)
        t = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        return res, t, peak

    X, y = data(n, d)
    out.append(f"## 6. ADMM-RBCD (no factorisation) vs ADMM (n = {n}, d = {d + 1} with bias, P = {P}, beta = 1, "
               f"squared loss)\n")
    out.append("| method | rtol | iterations | time (s) | objective | peak Python memory (MiB) |")
    out.append("|---|---|---|---|---|---|")
    for rtol in rtols:
        for method in ("admm", "admm-rbcd"):
            pr = TwoLayerReLU(X, y, 1.0, n_patterns=P, random_state=0)     # fresh: no cached factor
            kw = {"random_state": 0} if method == "admm-rbcd" else {}
            res, t, peak = run(pr, method, rtol=rtol, maxiter=50000, **kw)
            out.append(f"| {method} | {rtol:g} | {res.nit} | {t:.2f} | {res.fun:.6g} | {peak:.0f} |")
    nb, db, Pb = big
    X, y = data(nb, db)
    pr = TwoLayerReLU(X, y, 1.0, n_patterns=Pb, random_state=0)
    nn, dd = pr.X.shape
    res, t, peak = run(pr, "admm-rbcd", rtol=1e-3, maxiter=big_iters, random_state=0)
    out.append(f"\nn = {nb}, d = {dd}, P = {pr.n_patterns_}: ADMM would factor a "
               f"{choose_path(nn, dd, pr.n_patterns_)} system (Cholesky (dP)^2: "
               f"{(dd * pr.n_patterns_) ** 2 * 8 / 2 ** 30:.2f} GiB, Woodbury n^2: {nn * nn * 8 / 2 ** 30:.1f} GiB); "
               f"ADMM-RBCD: {t / res.nit:.2f} s per iteration, peak {peak:.0f} MiB (X: {pr.X.nbytes / 2 ** 20:.0f} MiB).\n")


def table_scaling(Ps, ns, out, iters=100):
    import numopt
    from numopt.problems import TwoLayerReLU
    from sklearn.preprocessing import StandardScaler

    out.append(f"## 3. Cost vs P and n ({iters} ADMM iterations; factorisation timed separately)\n")
    out.append("| data | n | P | d*P | u-solve path | factorise (s) | time / iteration (ms) |")
    out.append("|---|---|---|---|---|---|---|")
    Xb, yb = _bc()
    Xd, yd = _digits()
    Xd = StandardScaler().fit_transform(Xd)
    runs = [("breast_cancer", Xb, yb, len(yb), P) for P in Ps] + [("digits", Xd[:n], 2.0 * yd[:n] - 1, n, 16) for n in ns]
    for name, X, y, n, P in runs:
        pr = TwoLayerReLU(X, y, 1.0, n_patterns=P, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = numopt.minimize(pr, method="admm", maxiter=iters, rtol=1e-14, atol=1e-14)
        per = (res.time - res.factor_time) / res.nit * 1e3
        out.append(f"| {name} | {n} | {pr.n_patterns_} | {pr.dim * pr.n_patterns_} | {res.linear_solver} | "
                   f"{res.factor_time:.4f} | {per:.2f} |")
    out.append("")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m numopt.bench relu", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--more-data", action="store_true", help="table 1 also on binary digits and a synthetic set")
    parser.add_argument("--only", choices=["cvxpy", "accuracy", "scaling", "robust", "breadth", "rbcd"],
                        help="run one table")
    parser.add_argument("--breadth", action="store_true",
                        help="also table 5: eight more classification sets (minutes; run alone with --only breadth)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs in table 1")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every contender in table 2")
    args = parser.parse_args(argv)
    try:
        import scipy.linalg  # noqa: F401  (load SciPy's own BLAS first, or threadpoolctl cannot pin it)
        import sklearn.neural_network  # noqa: F401
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(1)
    except ImportError:  # pragma: no cover
        limiter = None
    import numopt
    from numopt.problems import TwoLayerReLU

    out = _Printer()
    out.append("# numopt.relu benchmark (BLAS: 1 thread for every contender)\n")
    X, y = _bc()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numopt.minimize(TwoLayerReLU(X[:50], y[:50], 1.0, n_patterns=4, random_state=0), method="admm", maxiter=5)
    out.append(f"Cold start (first call: imports + cached Numba kernels + a 5-iteration solve): "
               f"{time.perf_counter() - t0:.2f} s\n")
    from numopt.relu._kernels import warmup
    t0 = time.perf_counter()
    warmup()        # every kernel in both precisions, so no timed fit below loads or compiles one
    out.append(f"Warm-up of the remaining kernels (float32 iteration included): {time.perf_counter() - t0:.2f} s\n")
    X, y = _bc()
    want = (lambda t: args.only in (None, t))
    if args.quick:
        table_cvxpy([("breast_cancer", X, y, 8)], [1e-4, 1e-6], out, repeat=1)
        Xd, yd = _digits()
        table_accuracy(8, {"breast_cancer": _bc_raw(), "digits>=5": (Xd[:400], yd[:400])}, out, n_splits=3,
                       seeds=(0,))
        table_scaling([8, 16], [250, 500], out, iters=30)
    else:
        cases = [("breast_cancer", X, y, 8), ("breast_cancer", X, y, 32)]
        if args.more_data:
            cases += [("digits>=5 n=600", *_digits_std(), 16), ("synthetic n=500", *_synthetic(), 32)]
        if want("cvxpy"):
            table_cvxpy(cases, [1e-4, 3e-5, 1e-5], out, repeat=args.repeat)
        if want("accuracy"):
            table_accuracy(32, {"breast_cancer": _bc_raw(), "digits>=5": _digits()}, out, seeds=tuple(range(args.seeds)))
        if want("scaling"):
            table_scaling([8, 16, 32, 64], [250, 500, 1000, 1437], out)
    if args.breadth or args.only == "breadth":
        table_breadth(32, out)
    if args.only == "rbcd":
        table_rbcd(out)
    if want("robust"):  # the first 150 rows (all 569: table_robust(..., n=None), Clarabel alone takes minutes)
        table_robust(8, 0.02, [1e-4, 1e-5] if args.quick else [1e-4, 1e-5, 1e-6], out, n=150, maxiter=5000)
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


class _Printer(list):
    """A list of output lines that prints each line as it is added (long runs show progress)."""

    def append(self, line):
        super().append(line)
        print(line, flush=True)


def _bc_raw():
    from sklearn.datasets import load_breast_cancer
    return load_breast_cancer(return_X_y=True)



def table_robust(P, eps, rtols, out, n=None, maxiter=20000):
    """Robust (adversarial_eps) program on standardised breast_cancer (first ``n`` rows): numopt's robust ADMM
    vs CVXPY+Clarabel on the same patterns, time to 1e-4 relative objective gap (same table layout as 1.)."""
    import numopt
    from numopt.problems import TwoLayerReLU
    from numopt.relu._cvx import cvxpy_solve

    X, y = _bc()
    X, y = (X, y) if n is None else (X[:n], y[:n])
    out.append(f"## 4. Robust program (adversarial_eps = {eps}, breast_cancer n = {len(y)}, beta = 1, squared loss)\n")
    out.append(f"load average before: {os.getloadavg()[0]:.2f}\n")
    out.append("| P (kept) | contender | iterations | time (s) | rel. gap fun | cone viol. | ratio CVXPY/ours |")
    out.append("|---|---|---|---|---|---|---|")
    base = TwoLayerReLU(X, y, 1.0, n_patterns=P, adversarial_eps=eps, random_state=0)
    t0 = time.perf_counter()
    f_ref, _, _ = cvxpy_solve(base, "CLARABEL")
    t_cvx = time.perf_counter() - t0
    out.append(f"| {base.n_patterns_} | CVXPY+Clarabel | - | {t_cvx:.2f} | 0 | - | 1 |")
    for rtol in rtols:
        pr = TwoLayerReLU(X, y, 1.0, patterns=base.Dmat, adversarial_eps=eps)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = numopt.minimize(pr, method="admm", rtol=rtol, maxiter=maxiter)
        t = time.perf_counter() - t0
        g = (res.fun - f_ref) / f_ref
        ok = abs(g) <= 1e-4 and res.success
        out.append(f"| {base.n_patterns_} ({res.n_patterns_kept}) | robust ADMM rtol={rtol:g} | {res.nit} | {t:.2f} | "
                   f"{g:+.1e} | "
                   f"{res.cone_violation:.1e} | {t_cvx / t:.2f}{' *' if ok else ''} |")
    out.append(f"\n`*` = converged and within 1e-4 of Clarabel's optimum. Kept = patterns whose robust cone has an "
               f"interior (the presolve drops the others: their weights are 0). Load average after: "
               f"{os.getloadavg()[0]:.2f}\n")


if __name__ == "__main__":
    raise SystemExit(main())
