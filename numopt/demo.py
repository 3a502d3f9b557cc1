"""``python -m numopt.demo``: exercise every algorithm of numopt and print results against a peer.

``--full`` runs the larger sizes; the default is a quick pass of a minute or two.
"""
from __future__ import annotations

import argparse
import importlib
import time
import warnings

AREAS = [
    ("linalg", "numopt.linalg._demo", "CG / IC(0)-PCG vs SciPy"),
    ("dcdm", "numopt.linalg._dcdm_demo", "Deep Conjugate Direction Method vs CG"),
    ("ot", "numopt.ot._demo", "Sinkhorn-Newton-Sparse vs POT"),
    ("bcd", "numopt.bcd._demo", "greedy block coordinate descent vs scikit-learn / skglm"),
    ("completion", "numopt.completion._demo", "robust alternating minimization vs exact ALS"),
    ("relu", "numopt.relu._demo", "convex ReLU networks (ADMM) vs CVXPY / MLPClassifier"),
]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m numopt.demo", description=__doc__)
    parser.add_argument("--full", action="store_true", help="larger problem sizes")
    parser.add_argument("areas", nargs="*", help=f"subset of {[a for a, _, _ in AREAS]}")
    args = parser.parse_args(argv)
    unknown = set(args.areas) - {a for a, _, _ in AREAS}
    if unknown:
        parser.error(f"unknown area(s) {sorted(unknown)}")
    t0 = time.perf_counter()
    for area, module, title in AREAS:
        if args.areas and area not in args.areas:
            continue
        print(f"\n=== {area}: {title} ===")
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            importlib.import_module(module).demo(quick=not args.full)
        print(f"({area}: {time.perf_counter() - t:.1f} s)")
    print(f"\nnumopt demo finished in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
