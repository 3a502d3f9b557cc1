"""numopt.bcd: greedy block coordinate descent (Nutini, Laradji & Schmidt, JMLR 2022).

>>> import numopt
>>> from numopt.problems import LeastSquares
>>> res = numopt.minimize(LeastSquares(A, b, l1=0.1 * n), method="bcd")      # doctest: +SKIP
>>> scipy.optimize.minimize(fun, x0, jac=grad, method=numopt.bcd.method)      # doctest: +SKIP

The solver (and Numba) is imported on first use, so ``import numopt`` stays cheap.
"""
from ._problem import LabelPropagation, LeastSquares, Logistic, MultinomialLogistic, Quadratic
from ._scipy import method

__all__ = ["minimize_bcd", "method", "LeastSquares", "Logistic", "MultinomialLogistic", "LabelPropagation",
           "Quadratic"]


def __getattr__(name):
    if name == "minimize_bcd":
        from ._bcd import minimize_bcd
        return minimize_bcd
    raise AttributeError(f"module 'numopt.bcd' has no attribute {name!r}")
