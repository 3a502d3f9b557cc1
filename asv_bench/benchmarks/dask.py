"""Distributed AltMin on a LocalCluster (1 or 2 worker processes) vs. the single-machine solver."""
import logging
import warnings

import numpy as np


class DaskAltMin:
    """Seconds per AltMin iteration and bytes the driver moves per iteration, same synthetic data."""

    params = ([(4000, 2000, 4e5)], ["single-machine", "dask-1-worker", "dask-2-workers"])
    param_names = ["size", "backend"]
    timeout = 600

    def setup(self, size, backend):
        from numopt.completion._altmin import minimize_altmin
        from numopt.problems import MatrixCompletion

        warnings.simplefilter("ignore")
        m, n, nnz = size
        rng = np.random.default_rng(0)
        Us, Vs = rng.standard_normal((m, 8)), rng.standard_normal((n, 8))
        key = np.unique(rng.integers(0, m * n, int(nnz)))
        r, c = np.divmod(key, n)
        self.problem = MatrixCompletion(r, c, np.einsum("ij,ij->i", Us[r], Vs[c]), (m, n), 8)
        self.opts = dict(maxiter=3, init="random", random_state=0, tol=0.0, xtol=0.0)
        self.client = self.cluster = None
        if backend == "single-machine":
            self.solve = lambda: minimize_altmin(self.problem, **self.opts)
        else:
            from distributed import Client, LocalCluster

            from numopt.completion._dask import minimize_altmin_dask
            from numopt.completion._dask_data import DaskMatrixCompletion

            self.cluster = LocalCluster(n_workers=int(backend.split("-")[1]), threads_per_worker=1,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
            dprob = DaskMatrixCompletion.from_problem(self.problem, n_partitions=4)
            self.solve = lambda: minimize_altmin_dask(dprob, client=self.client, **self.opts)
        self.res = self.solve()                  # warm: Numba kernels loaded, data laid out on the workers

    def teardown(self, size, backend):
        if self.client is not None:
            self.client.close()
            self.cluster.close()

    def time_per_iteration(self, size, backend):
        self.solve()

    def track_bytes_per_iter(self, size, backend):
        return float(getattr(self.res, "bytes_per_iter", 0.0))

    def track_final_fun(self, size, backend):
        return float(self.res.fun)
