"""asv benchmarks of greedy BCD (numopt) against skglm, celer, scikit-learn and SciPy CG, side by side."""
import warnings

import numpy as np

from numopt.bench.bcd import dataset_a, lattice

warnings.filterwarnings("ignore")


def _warm():
    from numopt.bcd._kernels import warmup
    warmup()


class Lasso:
    """Lasso on the dataset-A replica (sizes parametrized); each solver at a tol giving a relative gap <= 1e-6."""

    params = ([(300, 3000), (1000, 10_000)], [10, 100], ["numopt", "skglm", "celer", "sklearn"])
    param_names = ["shape", "alpha_div", "solver"]
    timeout = 300

    def setup(self, shape, div, solver):
        _warm()
        self.X, self.y = dataset_a(*shape)
        n = shape[0]
        self.alpha = np.abs(self.X.T @ self.y).max() / n / div
        from numopt.problems import LeastSquares
        self.pb = LeastSquares(self.X, self.y, l1=n * self.alpha)
        self.run = self._solver(solver)
        self.run()  # warm

    def _solver(self, solver):
        import numopt
        from numopt.problems import LeastSquares
        X, y, a, n = self.X, self.y, self.alpha, self.X.shape[0]
        if solver == "numopt":
            return lambda: numopt.minimize(LeastSquares(X, y, l1=n * a), method="bcd", tol=1e-6).x
        if solver == "skglm":
            from skglm import Lasso as L
            return lambda: L(alpha=a, fit_intercept=False, tol=1e-5).fit(X, y).coef_
        if solver == "celer":
            from celer import Lasso as L
            return lambda: L(alpha=a, fit_intercept=False, tol=1e-6).fit(X, y).coef_
        from sklearn.linear_model import Lasso as L
        return lambda: L(alpha=a, fit_intercept=False, tol=1e-6, max_iter=100_000).fit(X, y).coef_

    def time_fit(self, shape, div, solver):
        self.run()

    def peakmem_fit(self, shape, div, solver):
        self.run()

    def track_rel_gap(self, shape, div, solver):
        return self.pb.duality_gap(np.asarray(self.run(), dtype=float)) / self.pb.gap_scale


class L1Logistic:
    """L1-logistic on standardized breast_cancer, C = 1, no intercept."""

    params = (["numopt", "skglm", "celer", "liblinear"],)
    param_names = ["solver"]

    def setup(self, solver):
        _warm()
        from sklearn.datasets import load_breast_cancer
        from sklearn.preprocessing import StandardScaler
        X, y = load_breast_cancer(return_X_y=True)
        self.X = StandardScaler().fit_transform(X)
        self.y = 2.0 * y - 1.0
        from numopt.problems import Logistic
        self.pb = Logistic(self.X, self.y, l1=1.0)
        self.run = self._solver(solver)
        self.run()

    def _solver(self, solver):
        import numopt
        from numopt.problems import Logistic
        X, y, n = self.X, self.y, self.X.shape[0]
        if solver == "numopt":
            return lambda: numopt.minimize(Logistic(X, y, l1=1.0), method="bcd", tol=1e-6).x
        if solver == "skglm":
            from skglm import SparseLogisticRegression
            return lambda: SparseLogisticRegression(alpha=1.0 / n, fit_intercept=False, tol=1e-8).fit(X, y).coef_
        if solver == "celer":
            from celer import LogisticRegression
            return lambda: LogisticRegression(C=1.0, solver="celer-pn", fit_intercept=False, tol=1e-8).fit(X, y).coef_
        from sklearn.linear_model import LogisticRegression
        return lambda: LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", fit_intercept=False,
                                          tol=1e-7).fit(X, y).coef_

    def time_fit(self, solver):
        self.run()

    def track_rel_gap(self, solver):
        return self.pb.duality_gap(np.asarray(self.run(), dtype=float).ravel()) / self.pb.gap_scale


class LabelPropagation:
    """Lattice label propagation (dataset-D recipe, 4% labelled) to relative error ~1e-8: tree-Newton BCD
    (adaptive over-relaxation, and plain) vs. SciPy CG. 1000 = the issue's 10^6-node bar."""

    params = ([100, 300, 1000], ["numopt-tree", "numopt-tree-plain", "scipy-cg"])
    param_names = ["side", "solver"]
    timeout = 600

    def setup(self, side, solver):
        _warm()
        if side == 1000 and solver == "numopt-tree-plain":
            raise NotImplementedError  # minutes: skipped (see numopt.bench.bcd for one timed run)
        self.pb = lattice(side)
        from scipy.sparse.linalg import cg
        self.xs = cg(self.pb.Q, self.pb.c, rtol=1e-13, maxiter=100_000)[0]
        import numopt
        if solver == "numopt-tree":
            self.run = lambda: numopt.minimize(self.pb, method="bcd", partition="tree", tol=1e-8,
                                               maxiter=100_000).x
        elif solver == "numopt-tree-plain":
            self.run = lambda: numopt.minimize(self.pb, method="bcd", partition="tree", relax=1.0, tol=1e-9,
                                               maxiter=100_000).x
        else:
            self.run = lambda: cg(self.pb.Q, self.pb.c, rtol=1e-9, maxiter=100_000)[0]

    def time_solve(self, side, solver):
        self.run()

    def track_rel_error(self, side, solver):
        return float(np.linalg.norm(self.run() - self.xs) / np.linalg.norm(self.xs))
