"""``python -m numopt.demo completion``: every altmin row solver against a plain SciPy exact ALS."""
from __future__ import annotations

import time
import warnings


def demo(quick=True) -> None:
    """Print a short table: exact recovery of a synthetic low-rank matrix by each row solver of
    ``method="altmin"`` and by the peer (plain SciPy/NumPy exact ALS, same SVD initialization)."""
    import numpy as np
    import scipy.sparse as sp

    import numopt
    from numopt.bench.completion import _warm, print_table, scipy_als, synthetic
    from numopt.completion import gram_distance, sparse_top_svd
    from numopt.problems import MatrixCompletion

    _warm()                                  # JIT / cache load outside the timings
    m, k = (600, 5) if quick else (3000, 10)
    nnz = int(4 * m * k * np.log(m))
    rows, cols, vals, (Us, Vs) = synthetic(m, m, nnz, k, seed=0)
    P = MatrixCompletion(rows, cols, vals, (m, m), k, truth=(Us, Vs))
    out = []
    for solver in ("cholesky", "cg", "sketch-cg", "auto"):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = numopt.minimize(P, method="altmin", options=dict(solver=solver, random_state=0,
                                                                   sketch_size=2 * k))
        out.append({"method": f"numopt altmin ({solver})", "iters": res.nit, "time_s": time.perf_counter() - t0,
                    "rel_error": float(res.history["rel_error"][-1]),
                    "passes_per_iter": float(np.mean(res.history["row_passes"]))})
    t0 = time.perf_counter()
    S = sp.csr_array((vals, (rows, cols)), shape=(m, m))
    Q, _, _ = sparse_top_svd(S.indptr, S.indices, S.data, (m, m), k, scale=m * m / nnz, rng=0)
    n_it = out[0]["iters"]
    U, V = scipy_als(rows, cols, vals, (m, m), k, maxiter=n_it, U0=Q)
    d2, x2 = gram_distance(U, V, Us, Vs)
    out.append({"method": "peer: SciPy exact ALS", "iters": n_it, "time_s": time.perf_counter() - t0,
                "rel_error": float(np.sqrt(d2 / x2)), "passes_per_iter": float("nan")})
    print_table(out, f"altmin: noise-free {m} x {m}, rank {k}, |Omega| = {nnz} (4 n k log n)")


if __name__ == "__main__":
    demo()
