"""``numopt.minimize``: validate, dispatch through the registry, return an ``OptimizeResult``."""
from __future__ import annotations

from ._methods import check_options, get_method

__all__ = ["minimize"]


def minimize(fun_or_problem, x0=None, *, method, jac=None, args=(), options=None, callback=None, **kwargs):
    """Minimize a numopt problem (or a SciPy-style smooth function) with a registered method.

    Parameters
    ----------
    fun_or_problem : problem object or callable
        A problem from :mod:`numopt.problems` (e.g. ``OptimalTransport``, ``LeastSquares``), or a
        callable ``fun(x, *args) -> float`` for the methods that accept one (``"bcd"``).
    x0 : array_like, optional
        Starting point (problem-specific meaning; required with a callable).
    method : str
        A registered method: see :func:`numopt.list_methods` and :func:`numopt.show_options`.
    jac : callable, optional
        Gradient ``jac(x, *args)`` when ``fun_or_problem`` is a callable.
    args : tuple
        Extra arguments of ``fun`` and ``jac``.
    options : dict, optional
        Method options; unknown names raise ``ValueError`` listing the valid ones.
    callback : callable, optional
        ``callback(intermediate_result)``; raise ``StopIteration`` inside it to stop cleanly.
    **kwargs
        Options may also be passed as keywords (not both ways for the same name).

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x, fun, success, status, message, nit, history`` and method-specific extras.
    """
    from . import problems

    m = get_method(method, "minimize")
    opts = check_options(m, options, kwargs)
    if isinstance(fun_or_problem, problems.Problem):
        problem = fun_or_problem
        if jac is not None or args:
            raise ValueError("jac and args apply only when minimizing a callable, not a problem object")
    elif callable(fun_or_problem):
        if x0 is None:
            raise ValueError("x0 is required when minimizing a callable")
        problem = problems.FunctionProblem(fun_or_problem, x0, jac=jac, args=args)
        x0 = problem.x0
    else:
        raise TypeError(f"fun_or_problem must be a numopt problem or a callable; got {type(fun_or_problem).__name__}")
    kind = type(problem).__name__
    if kind not in m.problems:
        raise TypeError(f"method {m.name!r} does not solve {kind}; it accepts {list(m.problems)}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}")
    return m.load()(problem, x0, callback=callback, **opts)
