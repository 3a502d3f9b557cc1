"""DCDM vs CG, IC(0)-PCG and PyAMG-PCG on unseen 3-D obstacle scenes (smoke-plume right-hand sides).

``python -m numopt.bench dcdm [--quick] [--sizes 32 64 128] [--rtols 1e-4 1e-6] [--seed 1000]``

Every method solves the same ``(A, b)`` from ``x0 = 0`` to ``||r|| <= rtol ||b||`` in the same run. Reported per
method: iterations, network calls (DCDM), set-up time (IC(0) factorisation, AMG hierarchy, loading the network),
solve time and their sum, and ratios to CG. DCDM's cold start (first call: torch import, weights, first
forward) is reported separately; the timed DCDM solves run warm. The device is printed: DCDM's network runs on
the CPU unless ``--device cuda``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from numba import njit

from ..linalg import random_scene
from ..linalg._dcdm import solve_dcdm


@njit(cache=True)
def _ic0_factor(indptr, indices, data, n):  # row-oriented IC(0) on tril(A)'s pattern (sorted rows)
    Lx = np.zeros(len(data))
    diag_pos = np.empty(n, np.int64)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            k = indices[p]
            s = data[p]
            if k < i:  # s -= sum_{j<k} L[i,j] L[k,j]: merge row i (before p) with row k (before its diagonal)
                pi, pk = indptr[i], indptr[k]
                while pi < p and pk < diag_pos[k]:
                    ji, jk = indices[pi], indices[pk]
                    if ji == jk:
                        s -= Lx[pi] * Lx[pk]
                        pi += 1
                        pk += 1
                    elif ji < jk:
                        pi += 1
                    else:
                        pk += 1
                Lx[p] = s / Lx[diag_pos[k]]
            else:
                for q in range(indptr[i], p):
                    s -= Lx[q] * Lx[q]
                if s <= 0:
                    return Lx, False
                Lx[p] = np.sqrt(s)
                diag_pos[i] = p
    return Lx, True


def _ic0(A):
    """IC(0) preconditioner: numopt's ``ichol0`` when present, else a local NumPy/SciPy one (same math)."""
    try:
        from ..linalg import ichol0
        return ichol0(A)
    except ImportError:
        pass
    L = sp.tril(A, format="csr")
    L.sort_indices()
    Lx, ok = _ic0_factor(L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data.astype(np.float64),
                       A.shape[0])
    if not ok:
        raise ValueError("IC(0) broke down")
    L = sp.csr_matrix((Lx, L.indices, L.indptr), shape=A.shape)
    LT = L.T.tocsr()

    def apply(v):
        y = sla.spsolve_triangular(L, v, lower=True)
        return sla.spsolve_triangular(LT, y, lower=False)

    return sla.LinearOperator(A.shape, matvec=apply, dtype=np.float64)


def _scipy_cg(A, b, rtol, M=None):
    count = [0]

    def cb(xk):
        count[0] += 1

    t = time.perf_counter()
    x, info = sla.cg(A, b, rtol=rtol, atol=0.0, M=M, maxiter=20 * A.shape[0], callback=cb)
    dt = time.perf_counter() - t
    return x, info, count[0], dt


def run(sizes, rtols, seed=1000, device="cpu", amg=("rs", "sa"), model=None, net_dtype="float32",
        n_directions=(2,)):
    """Return a list of result rows (dicts); see the module docstring."""
    import pyamg

    rows = []
    from ..linalg import poisson
    _ic0(poisson((3, 3, 3)))  # compile outside the timings
    # DCDM cold start on a tiny scene: torch import + weights + first forward
    t = time.perf_counter()
    A0, b0, f0 = random_scene(8, random_state=seed)
    solve_dcdm(A0, b0, None, rtol=1e-2, fluid_mask=f0, device=device, model=model, net_dtype=net_dtype)
    cold = time.perf_counter() - t
    for N in sizes:
        A, b, fluid = random_scene(N, random_state=seed + N)  # unseen: training scenes came from seed 0
        nb = np.linalg.norm(b)
        t = time.perf_counter()
        M_ic = _ic0(A)
        t_ic = time.perf_counter() - t
        Ms = {}
        for kind in amg:
            t = time.perf_counter()
            ml = (pyamg.ruge_stuben_solver if kind == "rs" else pyamg.smoothed_aggregation_solver)(A.tocsr())
            Ms[kind] = (ml.aspreconditioner(cycle="V"), time.perf_counter() - t)
        dcdm_runs = {}
        for rtol in sorted(rtols, reverse=True):
            base = {"grid": f"{N}^3", "n": A.shape[0], "rtol": rtol}
            out = []
            x, info, it, dt = _scipy_cg(A, b, rtol)
            out.append(dict(method="CG (scipy)", iters=it, net_calls=0, setup_s=0.0, solve_s=dt, ok=info == 0,
                            relres=np.linalg.norm(b - A @ x) / nb))
            x, info, it, dt = _scipy_cg(A, b, rtol, M=M_ic)
            out.append(dict(method="IC(0)-PCG", iters=it, net_calls=0, setup_s=t_ic, solve_s=dt, ok=info == 0,
                            relres=np.linalg.norm(b - A @ x) / nb))
            for kind, (M, t_amg) in Ms.items():
                x, info, it, dt = _scipy_cg(A, b, rtol, M=M)
                out.append(dict(method=f"{kind.upper()}-AMG-PCG", iters=it, net_calls=0, setup_s=t_amg, solve_s=dt,
                                ok=info == 0, relres=np.linalg.norm(b - A @ x) / nb))
            # DCDM runs once per k, to the smallest rtol; the iterates do not depend on rtol, so the count and
            # time to a larger rtol are read off the same run's residual history
            for k_dir in n_directions:
                if k_dir not in dcdm_runs:
                    dcdm_runs[k_dir] = solve_dcdm(A, b, None, rtol=min(rtols), fluid_mask=fluid, device=device,
                                                  model=model, net_dtype=net_dtype, n_directions=k_dir)
                res = dcdm_runs[k_dir]
                hist = res.history["residual_norm"]
                hit = np.flatnonzero(hist <= rtol * nb)
                k = int(hit[0]) if len(hit) else len(hist) - 1
                frac = (k + 1) / max(res.nit, 1)
                out.append(dict(method=f"DCDM k={k_dir} ({device})", iters=k + 1, net_calls=k + 1, setup_s=0.0,
                                solve_s=float(res.history["time"][k]), ok=bool(len(hit)), relres=hist[k] / nb,
                                net_s=res.network_time * frac,
                                fallbacks=int(np.sum(~res.history["network"][:k + 1]))))
            cg_it = out[0]["iters"]
            for r in out:
                r["total_s"] = r["setup_s"] + r["solve_s"]
                r["iters/CG"] = r["iters"] / cg_it
                r.setdefault("net_s", 0.0)
                r.setdefault("fallbacks", 0)
                rows.append({**base, **r})
    return rows, cold


def format_table(rows):
    cols = ["grid", "rtol", "method", "iters", "iters/CG", "net_calls", "fallbacks", "setup_s", "solve_s",
            "net_s", "total_s", "relres", "ok"]

    def fmt(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:.3g}" if v >= 1e-3 or v == 0 else f"{v:.1e}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m numopt.bench dcdm", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="16^3 and 32^3 only")
    p.add_argument("--sizes", type=int, nargs="+")
    p.add_argument("--rtols", type=float, nargs="+", default=[1e-4, 1e-6])
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="weights path (default: the shipped ones)")
    p.add_argument("--n-directions", type=int, nargs="+", default=[2], help="DCDM's k (one row per value)")
    p.add_argument("--amg", nargs="+", default=["rs", "sa"], choices=["rs", "sa"])
    args = p.parse_args(argv)
    sizes = args.sizes or ([16, 32] if args.quick else [32, 64])
    import torch

    rows, cold = run(sizes, args.rtols, seed=args.seed, device=args.device, amg=tuple(args.amg), model=args.model,
                     n_directions=tuple(args.n_directions))
    dev = args.device if args.device != "cpu" else f"CPU ({platform.processor() or platform.machine()}, " \
                                                    f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads)"
    print(f"DCDM benchmark on unseen obstacle scenes, plume rhs, x0 = 0; device: {dev}")
    print(f"DCDM cold start (torch import, weights, first call): {cold:.2f} s")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
