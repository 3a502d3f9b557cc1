"""Demo: DCDM with the shipped network vs CG and IC(0)-PCG on an unseen obstacle scene."""
import time

import numpy as np

from .._table import print_table
from ._cg import cg
from ._dcdm import dcdm
from ._precond import ichol0
from ._scenes import random_scene


def demo(quick=True):
    n = 16 if quick else 32
    A, b, fluid = random_scene(n, random_state=2024)   # a seed the shipped weights never saw
    rtol = 1e-6
    nb = np.linalg.norm(b)
    rows = []

    def run(name, fn, setup=0.0):
        its = []
        t = time.perf_counter()
        x, info = fn(lambda xk: its.append(1))
        t = time.perf_counter() - t
        rows.append({"method": name, "iterations": len(its), "setup_s": setup, "solve_s": t,
                     "rel_residual": float(np.linalg.norm(b - A @ x) / nb), "converged": info == 0})

    run("numopt cg", lambda cb: cg(A, b, rtol=rtol, callback=cb))
    t = time.perf_counter()
    M = ichol0(A)
    run("numopt ic0-pcg", lambda cb: cg(A, b, rtol=rtol, M=M, callback=cb), time.perf_counter() - t)
    dcdm(A, b, rtol=rtol, fluid_mask=fluid)           # load the network and warm torch (cold start excluded)
    run("numopt dcdm (k=2)", lambda cb: dcdm(A, b, rtol=rtol, fluid_mask=fluid, callback=cb))
    run("numopt dcdm (k=8)", lambda cb: dcdm(A, b, rtol=rtol, fluid_mask=fluid, n_directions=8, callback=cb))
    print_table(rows, f"Poisson with random obstacles, {n}^3 grid ({A.shape[0]} fluid cells), rtol={rtol}, CPU")
    print("One network call costs about as much as 100+ CG iterations on a CPU: DCDM trades iterations for "
          "network calls, a trade that pays only on a GPU.")
    return rows
