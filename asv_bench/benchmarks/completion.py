"""Matrix completion: numopt altmin row solvers vs a plain SciPy exact ALS (the peer), side by side."""
import os
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import numopt  # noqa: E402
from numopt.bench.completion import _warm, scipy_als, synthetic  # noqa: E402
from numopt.problems import MatrixCompletion  # noqa: E402


def _altmin(P, solver, maxiter, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return numopt.minimize(P, method="altmin", options=dict(solver=solver, maxiter=maxiter, tol=0.0, xtol=0.0,
                                                                atol=0.0, random_state=0, **kw))


class AltMinIteration:
    """Cost of outer iterations at fixed count (no stopping effects): numopt solvers vs SciPy exact ALS."""
    params = ([2000, 5000], [8, 32, 64], ["cholesky", "cg", "sketch-cg", "auto", "scipy-als"])
    param_names = ["m", "k", "method"]
    timeout = 600
    iters = 3

    def setup(self, m, k, method):
        _warm()
        nnz = 40 * m if m <= 2000 else 200 * m
        self.rows, self.cols, self.vals, _ = synthetic(m, m, nnz, k, noise=0.1, seed=k)
        self.P = MatrixCompletion(self.rows, self.cols, self.vals, (m, m), k)
        if method == "scipy-als" and m > 2000:
            raise NotImplementedError("the SciPy peer is benchmarked up to 2000 x 2000")

    def _run(self, m, k, method):
        if method == "scipy-als":
            # same SVD initialization as altmin (which also times its initialization)
            import scipy.sparse as sp

            from numopt.completion import sparse_top_svd
            S = sp.csr_array((self.vals, (self.rows, self.cols)), shape=(m, m))
            Q, _, _ = sparse_top_svd(S.indptr, S.indices, S.data, (m, m), k, scale=m * m / self.vals.size, rng=0)
            return scipy_als(self.rows, self.cols, self.vals, (m, m), k, maxiter=self.iters, U0=Q)
        res = _altmin(self.P, method, self.iters)
        return res.U, res.V

    def time_iterations(self, m, k, method):
        self._run(m, k, method)

    def peakmem_iterations(self, m, k, method):
        self._run(m, k, method)

    def track_passes_per_iteration(self, m, k, method):
        """All FMAs of an iteration / (|Omega| k): row solves plus the dense O((m+n)k^2) work."""
        if method == "scipy-als":
            return float("nan")
        return float(np.mean(_altmin(self.P, method, self.iters).history["passes"][1:]))

    def track_row_passes_per_iteration(self, m, k, method):
        """Row-solve FMAs only / (|Omega| k) (flat in k for cg: (2 cg_steps + 1) per half-step)."""
        if method == "scipy-als":
            return float("nan")
        return float(np.mean(_altmin(self.P, method, self.iters).history["row_passes"][1:]))

    def track_objective(self, m, k, method):
        U, V = self._run(m, k, method)
        r = np.einsum("ij,ij->i", U[self.rows], V[self.cols]) - self.vals
        return float(0.5 * r @ r)


class ExactRecovery:
    """Time to recover a noise-free rank-k matrix to relative error 1e-8 (|Omega| = 4 n k log n)."""
    params = ([1000, 4000], ["cholesky", "cg", "auto"])
    param_names = ["n", "solver"]
    timeout = 600

    def setup(self, n, solver):
        _warm()
        k = 5
        nnz = int(4 * n * k * np.log(n))
        rows, cols, vals, truth = synthetic(n, n, nnz, k, seed=1)
        self.P = MatrixCompletion(rows, cols, vals, (n, n), k, truth=truth)

    def time_recover(self, n, solver):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            numopt.minimize(self.P, method="altmin", options=dict(solver=solver, random_state=0))

    def track_iterations(self, n, solver):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = numopt.minimize(self.P, method="altmin", options=dict(solver=solver, random_state=0))
        return res.nit

    def track_relative_error(self, n, solver):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = numopt.minimize(self.P, method="altmin", options=dict(solver=solver, random_state=0))
        return float(res.history["rel_error"][-1])


class Digits:
    """Real data: scikit-learn digits with 50% hidden; numopt MatrixCompleter vs fancyimpute SoftImpute."""
    params = (["numopt", "softimpute"],)
    param_names = ["method"]
    timeout = 300

    def setup(self, method):
        from sklearn.datasets import load_digits

        _warm()
        self.D = load_digits().data.astype(np.float64)
        self.hide = np.random.default_rng(0).random(self.D.shape) < 0.5
        self.X = np.where(self.hide, np.nan, self.D)
        if method == "softimpute":
            try:
                import fancyimpute  # noqa: F401
            except ImportError:
                raise NotImplementedError("fancyimpute not installed")

    def _fit(self, method):
        if method == "numopt":
            from numopt.completion import MatrixCompleter
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return MatrixCompleter(rank=15, reg=30.0, center="biases", random_state=0).fit(self.X).reconstruct()
        from numopt.bench.completion import softimpute_peer
        return softimpute_peer(self.X, 15)

    def time_fit(self, method):
        self._fit(method)

    def track_relative_error_hidden(self, method):
        Y = self._fit(method)
        t = self.D[self.hide]
        return float(np.linalg.norm(Y[self.hide] - t) / np.linalg.norm(t))
