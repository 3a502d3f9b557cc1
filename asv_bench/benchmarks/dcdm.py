"""DCDM (shipped CNN, CPU) vs SciPy cg and PyAMG-preconditioned CG on unseen 3-D obstacle scenes."""
import numpy as np
import scipy.sparse.linalg as sla

from numopt.linalg import random_scene
from numopt.linalg._dcdm import solve_dcdm

try:
    import pyamg
except ImportError:  # pragma: no cover
    pyamg = None

SEED = 1000  # the shipped weights were trained on scenes drawn from seed 0


class ObstacleScene:
    """Iterations, network calls and wall time to rtol; AMG set-up is inside ``time_setup_and_solve``."""

    params = ([32, 64], [1e-4, 1e-6], ["dcdm", "scipy-cg", "pyamg-rs-pcg", "pyamg-sa-pcg"])
    param_names = ["n", "rtol", "method"]
    timeout = 900

    def setup(self, n, rtol, method):
        self.A, self.b, self.fluid = random_scene(n, random_state=SEED + n)
        self.M = None
        if method.startswith("pyamg"):
            if pyamg is None:
                raise NotImplementedError("pyamg not installed")
        if method == "dcdm":  # warm torch, the weights and the first forward
            solve_dcdm(self.A, self.b, None, rtol=1e-1, maxiter=1, fluid_mask=self.fluid)

    def _precond(self, method):
        if method == "pyamg-rs-pcg":
            return pyamg.ruge_stuben_solver(self.A).aspreconditioner(cycle="V")
        if method == "pyamg-sa-pcg":
            return pyamg.smoothed_aggregation_solver(self.A).aspreconditioner(cycle="V")
        return None

    def _solve(self, method, rtol, M=None):
        if method == "dcdm":
            res = solve_dcdm(self.A, self.b, None, rtol=rtol, fluid_mask=self.fluid)
            return res.x, res.nit, res.n_network_calls
        count = [0]

        def cb(xk):
            count[0] += 1

        x, _ = sla.cg(self.A, self.b, rtol=rtol, M=M, callback=cb)
        return x, count[0], 0

    def time_setup_and_solve(self, n, rtol, method):
        self._solve(method, rtol, self._precond(method))

    def track_iterations(self, n, rtol, method):
        return self._solve(method, rtol, self._precond(method))[1]

    def track_network_calls(self, n, rtol, method):
        return self._solve(method, rtol, self._precond(method))[2]

    def track_relative_residual(self, n, rtol, method):
        x = self._solve(method, rtol, self._precond(method))[0]
        return float(np.linalg.norm(self.b - self.A @ x) / np.linalg.norm(self.b))

    def peakmem_setup_and_solve(self, n, rtol, method):
        self._solve(method, rtol, self._precond(method))


class NetworkForward:
    """One network call (the unit cost of a DCDM iteration) vs one SpMV."""

    params = ([32, 64],)
    param_names = ["n"]

    def setup(self, n):
        from numopt.linalg._dcdm import DCDMDirections
        from numopt.linalg._dcdm_model import load_model

        self.A, self.b, fluid = random_scene(n, random_state=SEED + n)
        self.f = DCDMDirections(load_model(), (n, n, n), fluid)
        self.f(self.b)

    def time_network_call(self, n):
        self.f(self.b)

    def time_spmv(self, n):
        self.A @ self.b
