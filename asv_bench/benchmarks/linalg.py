"""CG / IC(0)-PCG (numopt) vs SciPy cg and PyAMG-preconditioned CG on 3-D Poisson."""
import numpy as np
import scipy.sparse.linalg as sla

from numopt.linalg import cg, ichol0, poisson

try:
    import pyamg
except ImportError:  # pragma: no cover
    pyamg = None

RTOL = 1e-8


class Poisson3D:
    params = ([32, 64], ["numopt-cg", "numopt-pcg-ic0", "scipy-cg", "pyamg-sa-pcg"])
    param_names = ["n", "method"]
    timeout = 300

    def setup(self, n, method):
        self.A = poisson((n, n, n))
        self.b = np.random.default_rng(n).standard_normal(self.A.shape[0])
        self.M = None
        if method == "numopt-pcg-ic0":
            self.M = ichol0(self.A)
        elif method == "pyamg-sa-pcg":
            if pyamg is None:
                raise NotImplementedError("pyamg not installed")
            self.M = pyamg.smoothed_aggregation_solver(self.A).aspreconditioner(cycle="V")
        self.solver = sla.cg if method.startswith(("scipy", "pyamg")) else cg

    def _solve(self):
        count = [0]

        def cb(xk):
            count[0] += 1

        x, info = self.solver(self.A, self.b, rtol=RTOL, M=self.M, callback=cb)
        return x, count[0]

    def time_solve(self, n, method):
        self._solve()

    def track_iterations(self, n, method):
        return self._solve()[1]

    def track_relative_residual(self, n, method):
        x, _ = self._solve()
        return float(np.linalg.norm(self.b - self.A @ x) / np.linalg.norm(self.b))

    def peakmem_solve(self, n, method):
        self._solve()


class PreconditionerSetup:
    params = ([32, 64], ["ic0", "pyamg-sa", "pyamg-rs"])
    param_names = ["n", "preconditioner"]

    def setup(self, n, preconditioner):
        self.A = poisson((n, n, n))
        if preconditioner.startswith("pyamg") and pyamg is None:
            raise NotImplementedError("pyamg not installed")

    def time_setup(self, n, preconditioner):
        if preconditioner == "ic0":
            ichol0(self.A)
        elif preconditioner == "pyamg-sa":
            pyamg.smoothed_aggregation_solver(self.A)
        else:
            pyamg.ruge_stuben_solver(self.A)


class PerIteration:
    """Cost of one CG iteration at a fixed iteration count (no stopping-test effects)."""
    params = ([64], ["numopt", "scipy"])
    param_names = ["n", "impl"]

    def setup(self, n, impl):
        self.A = poisson((n, n, n))
        self.b = np.random.default_rng(0).standard_normal(self.A.shape[0])
        self.fn = cg if impl == "numopt" else sla.cg

    def time_100_iterations(self, n, impl):
        self.fn(self.A, self.b, rtol=0.0, maxiter=100)
