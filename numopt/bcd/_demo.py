"""``demo()``: a short table exercising every BCD path against its peer (seconds to run)."""
from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp


def _t(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def demo(quick=True) -> None:
    """Print ours vs. peer: Lasso, L1-logistic, smooth greedy rules, softmax, label propagation, a callable."""
    import numopt
    from numopt.problems import LabelPropagation, LeastSquares, Logistic, MultinomialLogistic

    from ._kernels import warmup
    from .._threads import single_thread_blas
    warmup()
    with single_thread_blas():  # the first use of threadpoolctl inspects the loaded libraries (~0.1-0.3 s)
        pass
    warnings.filterwarnings("ignore", category=numopt.ConvergenceWarning)
    rows = []
    rng = np.random.default_rng(0)
    n, p = (200, 2000) if quick else (1000, 10_000)
    A = (rng.standard_normal((n, p)) + 1.0) * (10 * rng.standard_normal(p))
    A[rng.random((n, p)) >= 10 * np.log(n) / n] = 0.0
    A = sp.csc_matrix(A)
    w = rng.standard_normal(p) * (rng.random(p) < 0.1)
    y = A @ w + rng.standard_normal(n)
    alpha = np.abs(A.T @ y).max() / n / 10
    pb = LeastSquares(A, y, l1=n * alpha)
    t1, r = _t(lambda: numopt.minimize(LeastSquares(A, y, l1=n * alpha), method="bcd", tol=1e-8))
    try:
        from sklearn.linear_model import Lasso
        t2, sk = _t(lambda: Lasso(alpha=alpha, fit_intercept=False, tol=1e-8, max_iter=100_000).fit(A, y))
        rows.append(("Lasso A-replica a_max/10", "sklearn Lasso", t1, t2, r.fun, pb.value(sk.coef_)))
    except ImportError:  # pragma: no cover
        pass

    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.preprocessing import StandardScaler
    X, yb = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    yb = 2.0 * yb - 1.0
    t1, r = _t(lambda: numopt.minimize(Logistic(X, yb, l1=1.0), method="bcd", tol=1e-8))
    from sklearn.linear_model import LogisticRegression
    t2, sk = _t(lambda: LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", fit_intercept=False,
                                           tol=1e-8).fit(X, yb))
    rows.append(("L1-logistic breast_cancer", "liblinear", t1, t2, r.fun, Logistic(X, yb, l1=1.0).value(sk.coef_)))

    B = rng.standard_normal((300, 60))
    b = rng.standard_normal(300)
    pbs = LeastSquares(B, b, l2=1.0)
    xs = np.linalg.solve(B.T @ B + np.eye(60), B.T @ b)
    for sel in ("gsd", "cyclic"):
        t1, r = _t(lambda: numopt.minimize(pbs, method="bcd", selection=sel, update="gradient", block_size=5,
                                           maxiter=100, tol=0.0))
        rows.append((f"ridge, 100 it. {sel}+gradient", "np.linalg.solve", t1, np.nan, r.fun, pbs.value(xs)))

    Xd, yd = load_digits(return_X_y=True)
    Xd = Xd / 16.0
    if quick:
        Xd, yd = Xd[:600], yd[:600]
    pm = MultinomialLogistic(Xd, yd, l2=1.0)
    t1, r = _t(lambda: numopt.minimize(pm, method="bcd", tol=1e-6, block_size=50))
    from scipy.optimize import minimize as spmin
    t2, ref = _t(lambda: spmin(pm.value, np.zeros(64 * 10), jac=lambda v: pm.gradient(v).ravel(), method="L-BFGS-B",
                               options=dict(gtol=1e-8)))
    rows.append(("softmax digits (l2=1)", "scipy L-BFGS-B", t1, t2, r.fun, ref.fun))

    side = 50
    e = np.ones(side)
    T = sp.diags([e[:-1], e[:-1]], [-1, 1], shape=(side, side))
    W = (sp.kron(sp.identity(side), T) + sp.kron(T, sp.identity(side))).tocsr()
    mask = np.zeros(side * side, dtype=bool)
    mask[rng.choice(side * side, 100, replace=False)] = True
    lp = LabelPropagation(W, 10 * rng.standard_normal(100), mask)
    t1, r = _t(lambda: numopt.minimize(lp, method="bcd", tol=1e-10))
    from scipy.sparse.linalg import spsolve
    t2, xs = _t(lambda: spsolve(lp.Q.tocsc(), lp.c))
    rows.append(("label prop. 50x50 tree-newton", "scipy spsolve", t1, t2, r.fun, lp.value(xs)))
    t1, r = _t(lambda: numopt.minimize(lp, method="bcd", partition="tree", tol=1e-10, maxiter=100_000))
    rows.append(("label prop. 50x50 forests+SOR", "scipy spsolve", t1, t2, r.fun, lp.value(xs)))

    M = rng.standard_normal((40, 15))
    Q = M.T @ M + np.eye(15)
    c = rng.standard_normal(15)
    t1, r = _t(lambda: numopt.minimize(lambda v: 0.5 * v @ Q @ v - c @ v, np.zeros(15), method="bcd",
                                       jac=lambda v: Q @ v - c, tol=1e-8, maxiter=20_000))
    t2, ref = _t(lambda: spmin(lambda v: 0.5 * v @ Q @ v - c @ v, np.zeros(15), jac=lambda v: Q @ v - c,
                               method="L-BFGS-B"))
    rows.append(("callable quadratic (jac)", "scipy L-BFGS-B", t1, t2, r.fun, ref.fun))

    print(f"{'problem':<32}{'peer':<18}{'ours s':>9}{'peer s':>9}{'F ours':>16}{'F peer':>16}")
    for name, peer, a, bb, f1, f2 in rows:
        print(f"{name:<32}{peer:<18}{a:>9.4f}{bb:>9.4f}{f1:>16.8g}{f2:>16.8g}")


if __name__ == "__main__":  # pragma: no cover
    demo()
