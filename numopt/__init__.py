"""numopt: numerical-optimization and linear-algebra solvers with compiled cores.

>>> import numopt
>>> res = numopt.solve(A, b, method="pcg", rtol=1e-8)          # doctest: +SKIP
>>> res = numopt.minimize(problem, method="sns")               # doctest: +SKIP
>>> numopt.show_options("cg")                                  # doctest: +SKIP
"""
from scipy.optimize import OptimizeResult

from . import exceptions, problems
from ._methods import list_methods, show_options
from ._minimize import minimize
from ._solve import solve
from .exceptions import ConvergenceWarning, OptimizeWarning

__version__ = "0.1.0"

__all__ = ["minimize", "solve", "show_options", "list_methods", "OptimizeResult", "problems", "exceptions",
           "ConvergenceWarning", "OptimizeWarning", "__version__"]
