"""numopt.bcd: greedy block coordinate descent (Nutini, Laradji & Schmidt, JMLR 2022).

>>> import numopt
>>> from numopt.problems import LeastSquares
>>> res = numopt.minimize(LeastSquares(A, b, l1=0.1 * n), method="bcd")      # doctest: +SKIP
>>> scipy.optimize.minimize(fun, x0, jac=grad, method=numopt.bcd.method)      # doctest: +SKIP

The solver (and Numba) is imported on first use, so ``import numopt`` stays cheap.
"""
from .._lazy import lazy_exports
from ._problem import LabelPropagation, LeastSquares, Logistic, MultinomialLogistic, Quadratic
from ._scipy import method

__all__ = ["minimize_bcd", "method", "LeastSquares", "Logistic", "MultinomialLogistic", "LabelPropagation",
           "Quadratic"]


__getattr__, __dir__ = lazy_exports(__name__, {"minimize_bcd": "._bcd"}, __all__)
