"""Shared fixtures of the matrix-completion tests."""
import os

# Numba's OpenMP workers spin by default; on a loaded 2-core CI box that made a 1 ms kernel take 20 ms.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _warm_completion_kernels():
    """Compile (or load from cache) every Numba kernel once, for float64 and float32."""
    from numopt.completion import _kernels as K
    from numopt.completion._rowsolve import solve_rows

    indptr = np.array([0, 3, 3, 9])
    indices = np.array([0, 1, 2, 0, 1, 2, 3, 4, 5])
    for dtype in (np.float64, np.float32):
        F = np.arange(12, dtype=dtype).reshape(6, 2) / 7.0
        vals = np.linspace(-1, 1, 9).astype(dtype)
        for solver in ("cholesky", "cg", "sketch-cg", "auto"):
            solve_rows(indptr, indices, vals, F, solver=solver, sketch_size=2)
            solve_rows(indptr, indices, vals, F, solver=solver, warm=np.zeros((3, 2), dtype), sketch_size=2)
        U = np.ones((3, 2), dtype)
        K.row_residual_sq(indptr, indices, vals, U, F)
        K.predict_entries(np.array([0, 1]), np.array([1, 2]), U, F)
    K.split_labels(np.array([0, 1]), np.array([1, 0]), 2, 0, 3)


def low_rank(m, n, k, p, seed=0, dtype=np.float64):
    """A random rank-k instance: factors, and the observed entries sampled with rate p."""
    rng = np.random.default_rng(seed)
    Us = rng.standard_normal((m, k))
    Vs = rng.standard_normal((n, k))
    mask = rng.random((m, n)) < p
    r, c = np.nonzero(mask)
    vals = np.einsum("ij,ij->i", Us[r], Vs[c]).astype(dtype)
    return Us, Vs, r, c, vals
