"""``demo()``: every numopt.ot solver against POT on two small problems (a few seconds)."""
from __future__ import annotations

import time
import warnings

import numpy as np


def _l1(P, a, b):
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def demo(quick=True) -> None:
    """Print a table: solver, time, iterations, L1 marginal error and cost, ours vs. POT."""
    import ot

    from . import sinkhorn

    n = 200 if quick else 1000
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 2)), rng.random((n, 2))
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    cases = [("random M, reg=1/200", rng.random((n, n)), 1 / 200), ("2-D clouds W2, reg=2e-3", C / C.max(), 2e-3)]
    a = np.full(n, 1.0 / n)
    print(f"numopt.ot demo: n = {n}, target L1 marginal error 1e-9 (POT: stopThr 1e-9/sqrt(n), 5000 iterations)")
    print(f"{'case':<24} {'solver':<22} {'time (s)':>9} {'iters':>7} {'L1 error':>9} {'<P,M>':>12}")
    sinkhorn([], [], np.ones((20, 20)), 1.0, warn=False)   # load the compiled kernels
    for label, M, reg in cases:
        runs = []
        for method in ("sns", "sinkhorn_log", "sinkhorn"):
            t = time.perf_counter()
            P, log = sinkhorn(a, a, M, reg, method=method, numItermax=5000, log=True, warn=False)
            runs.append((f"numopt {method}", time.perf_counter() - t, log["niter"], P))
        for method in ("sinkhorn", "sinkhorn_log"):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                P, log = ot.sinkhorn(a, a, M, reg, method=method, numItermax=5000, stopThr=1e-9 / np.sqrt(n), log=True)
                runs.append((f"POT {method}", time.perf_counter() - t, log["niter"], P))
        for name, dt, nit, P in runs:
            ok = np.all(np.isfinite(P))
            err = _l1(P, a, a) if ok else float("nan")
            cost = float(np.sum(P * M)) if ok else float("nan")
            print(f"{label:<24} {name:<22} {dt:9.3f} {nit:7d} {err:9.1e} {cost:12.8f}")


if __name__ == "__main__":
    demo()
