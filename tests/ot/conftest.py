"""Warm the Numba kernels of numopt.ot once per test session (compiles or loads the cache)."""
import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _warm_ot_kernels():
    import numopt
    from numopt.problems import OptimalTransport

    rng = np.random.default_rng(0)
    M = rng.random((6, 5))
    prob = OptimalTransport([], [], M, 0.05)
    for method in ("sns", "sinkhorn_log", "sinkhorn"):
        numopt.minimize(prob, method=method, maxiter=200, warn=False)
    yield
