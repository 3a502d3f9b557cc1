"""``numopt.relu`` demo: every algorithm of the area next to its peer, in seconds."""
from __future__ import annotations

import time
import warnings


def demo(quick=True) -> None:
    """Print a short table: ADMM and ADMM-RBCD vs CVXPY (nominal program), the robust ADMM vs CVXPY, SCP vs
    scikit-learn Lasso, the classifier vs MLPClassifier."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import Lasso
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import numopt
    from numopt.problems import TwoLayerReLU
    from numopt.relu import ConvexReLUClassifier
    from numopt.relu._cvx import cvxpy_solve
    from numopt.relu._kernels import relu_features

    X, y = load_breast_cancer(return_X_y=True)
    n = 150 if quick else 569
    Xs = StandardScaler().fit_transform(X)[:n]
    ys = 2.0 * y[:n] - 1
    P = 6 if quick else 16
    rows = []
    pr = TwoLayerReLU(Xs, ys, 1.0, n_patterns=P, random_state=0)
    t0 = time.perf_counter()
    f_cvx = cvxpy_solve(pr)[0]
    t_cvx = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = numopt.minimize(pr, method="admm")
        t_admm = time.perf_counter() - t0
        t0 = time.perf_counter()
        rb = numopt.minimize(pr, method="admm-rbcd", rtol=1e-5, random_state=0)      # no factorisation
        t_rb = time.perf_counter() - t0
        rows.append(("convex program", "numopt admm", res.fun, t_admm))
        rows.append(("convex program", "numopt admm-rbcd", rb.fun, t_rb))
        rows.append(("convex program", "CVXPY+Clarabel", f_cvx, t_cvx))
        t0 = time.perf_counter()
        scp = numopt.minimize(pr, method="scp")
        t_scp = time.perf_counter() - t0
        Phi = relu_features(pr.X, scp.directions)
        t0 = time.perf_counter()
        las = Lasso(alpha=1.0 / n, fit_intercept=False, tol=1e-10, max_iter=100000).fit(Phi, ys)
        t_las = time.perf_counter() - t0
        f_las = 0.5 * np.sum((Phi @ las.coef_ - ys) ** 2) + np.abs(las.coef_).sum()
        rows.append(("SCP (ReLU-feature lasso)", "numopt scp", scp.fun, t_scp))
        rows.append(("SCP (ReLU-feature lasso)", "sklearn Lasso", f_las, t_las))
        # adversarial (l_inf, eps = 0.02 in standardised units) training: robust ADMM vs CVXPY, 60 rows
        prr = TwoLayerReLU(Xs[:60], ys[:60], 1.0, n_patterns=4, adversarial_eps=0.02, random_state=0)
        t0 = time.perf_counter()
        rob = numopt.minimize(prr, method="admm", rtol=1e-5)
        t_rob = time.perf_counter() - t0
        t0 = time.perf_counter()
        f_rcvx = cvxpy_solve(prr)[0]
        t_rcvx = time.perf_counter() - t0
        rows.append(("robust program eps=0.02", "numopt admm", rob.fun, t_rob))
        rows.append(("robust program eps=0.02", "CVXPY+Clarabel", f_rcvx, t_rcvx))
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
        t0 = time.perf_counter()
        # the benchmark's configuration (docs/relu.md, table 2): learned patterns, a width budget of 64 neurons,
        # against MLPClassifier with 64 hidden units
        clf = ConvexReLUClassifier(pattern_refinement=1.0, max_width=64, random_state=0).fit(Xtr, ytr)
        t_c = time.perf_counter() - t0
        t0 = time.perf_counter()
        mlp = make_pipeline(StandardScaler(), MLPClassifier((64,), random_state=0)).fit(Xtr, ytr)
        t_m = time.perf_counter() - t0
        rows.append(("test accuracy, width 64", "ConvexReLUClassifier", clf.score(Xte, yte), t_c))
        rows.append(("test accuracy, width 64", "MLPClassifier", mlp.score(Xte, yte), t_m))
    print(f"numopt.relu demo (breast_cancer, n={n}, P={P}, beta=1)")
    print(f"{'task':<26}{'solver':<22}{'value':>14}{'seconds':>10}")
    for task, name, val, t in rows:
        print(f"{task:<26}{name:<22}{val:>14.6f}{t:>10.3f}")
