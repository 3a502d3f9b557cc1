"""Problem objects: small, validated descriptions of what to minimize.

A problem checks its inputs once, when it is built, and raises ``ValueError``/``TypeError`` naming the
argument. Solvers trust what they receive. Each area defines its problems next to its algorithm
(``numopt/<area>/_problem.py``); this module is the one public place to import them from.
"""
from __future__ import annotations

import numpy as np

from ._validation import as_float_array

__all__ = ["Problem", "FunctionProblem"]


class Problem:
    """Base class of numopt problems (marks objects :func:`numopt.minimize` accepts)."""

    def __repr__(self):
        fields = ", ".join(f"{k}={_short(v)}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _short(v):
    if isinstance(v, np.ndarray):
        return f"<array {v.shape} {v.dtype}>"
    if hasattr(v, "shape") and hasattr(v, "nnz"):
        return f"<sparse {v.shape} nnz={v.nnz}>"
    return repr(v)


class FunctionProblem(Problem):
    """A smooth function given SciPy-style: ``fun(x, *args) -> float`` and optional ``jac(x, *args)``.

    Without ``jac`` the gradient is taken by central finite differences (2n evaluations).
    """

    def __init__(self, fun, x0, *, jac=None, args=()):
        if not callable(fun):
            raise TypeError(f"fun must be callable; got {type(fun).__name__}")
        if jac is not None and not callable(jac):
            raise TypeError(f"jac must be callable or None; got {type(jac).__name__}")
        if not isinstance(args, tuple):
            args = (args,)
        self.x0 = as_float_array(x0, "x0", ndim=1, dtype=np.float64, min_size=1, copy=True)
        self.fun, self.jac, self.args = fun, jac, args
        f0 = self.value(self.x0)
        if not np.isfinite(f0):
            raise ValueError(f"fun(x0) must be finite; got {f0!r}")

    def value(self, x):
        return float(self.fun(x, *self.args))

    def gradient(self, x):
        if self.jac is not None:
            g = np.asarray(self.jac(x, *self.args), dtype=np.float64)
            if g.shape != x.shape:
                raise ValueError(f"jac(x) must have shape {x.shape}; got {g.shape}")
            return g
        g = np.empty_like(x)
        for i in range(x.size):
            h = 1e-7 * max(1.0, abs(x[i]))
            e = x.copy(); e[i] += h
            fp = self.value(e)
            e[i] -= 2 * h
            g[i] = (fp - self.value(e)) / (2 * h)
        return g


# --- problems defined by the areas (one import line per area) ---------------------------------------
from .completion._problem import MatrixCompletion  # noqa: E402
__all__ += ["MatrixCompletion"]
