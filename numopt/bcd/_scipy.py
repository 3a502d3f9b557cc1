"""``scipy.optimize.minimize(fun, x0, jac=..., method=numopt.bcd.method)``: SciPy's custom-method protocol."""
from __future__ import annotations

from ..problems import FunctionProblem


def method(fun, x0, args=(), jac=None, hess=None, hessp=None, bounds=None, constraints=(), callback=None,
           **options):
    """Greedy BCD as a SciPy custom ``method`` callable (smooth, unconstrained problems).

    SciPy calls it as ``method(fun, x0, args=args, jac=jac, hess=hess, hessp=hessp, bounds=bounds,
    constraints=constraints, callback=callback, **options)``. ``options`` are those of
    ``numopt.show_options("bcd")``. ``jac=True`` means ``fun`` returns ``(f, g)``; without ``jac`` the gradient is
    taken by central differences (2n evaluations per iteration: slow, as for any greedy rule on a callable).
    """
    from .._methods import check_options, get_method
    if bounds is not None:
        raise ValueError("numopt.bcd.method does not support bounds")
    if constraints:
        raise ValueError("numopt.bcd.method does not support constraints")
    if not isinstance(args, tuple):
        args = (args,)
    if jac is True:
        f0 = fun

        def fun(x, *a):
            return f0(x, *a)[0]

        def jac(x, *a):
            return f0(x, *a)[1]
    elif jac is not None and not callable(jac):
        jac = None  # SciPy's finite-difference strings ('2-point', ...): use our central differences
    m = get_method("bcd", "minimize")
    opts = check_options(m, options)
    problem = FunctionProblem(fun, x0, jac=jac, args=args)
    return m.load()(problem, problem.x0, callback=callback, **opts)
