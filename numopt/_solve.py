"""``numopt.solve``: validate ``A x = b``, dispatch through the registry, return an ``OptimizeResult``."""
from __future__ import annotations

from ._methods import check_options, get_method
from ._validation import as_float_array, as_operator, check_int, check_positive

__all__ = ["solve"]


def check_system(A, b, x0=None, rtol=1e-5, atol=0.0, maxiter=None):
    """Shared checks of a square linear system; returns ``(A, op, b, x0, rtol, atol, maxiter)``."""
    A, op = as_operator(A, "A", square=True)
    n = op.shape[0]
    b = as_float_array(b, "b")
    if b.ndim == 2 and b.shape[1] == 1:
        b = b.ravel()
    if b.ndim != 1 or b.shape[0] != n:
        raise ValueError(f"b must be a vector of length {n} (A is {op.shape}); got shape {b.shape}")
    if x0 is not None:
        x0 = as_float_array(x0, "x0")
        if x0.ndim == 2 and x0.shape[1] == 1:
            x0 = x0.ravel()
        if x0.shape != (n,):
            raise ValueError(f"x0 must have shape ({n},); got {x0.shape}")
    rtol = check_positive(rtol, "rtol", strict=False)
    atol = check_positive(atol, "atol", strict=False)
    maxiter = check_int(maxiter, "maxiter", min_value=0, allow_none=True)
    return A, op, b, x0, rtol, atol, maxiter


def solve(A, b, *, method="cg", x0=None, rtol=1e-5, atol=0.0, maxiter=None, M=None, callback=None, options=None,
          **kwargs):
    """Solve the linear system ``A x = b`` with a registered method.

    Parameters
    ----------
    A : ndarray, scipy.sparse matrix or LinearOperator, shape (n, n)
        Symmetric positive definite for ``"cg"``, ``"pcg"``, ``"dcdm"``.
    b : array_like, shape (n,)
    method : str
        ``"cg"``, ``"pcg"`` or ``"dcdm"`` (see :func:`numopt.show_options`).
    x0 : array_like, optional
        Starting guess (default zeros).
    rtol, atol : float
        Stop when ``||b - A x|| <= max(rtol * ||b||, atol)`` (SciPy semantics).
    maxiter : int, optional
        Iteration limit (default ``10 n`` as SciPy's ``cg``).
    M : LinearOperator, str or None
        Preconditioner (approximates ``A^{-1}``); for ``"pcg"`` also ``"ic0"`` or ``"jacobi"``.
    callback : callable, optional
        ``callback(intermediate_result)`` with ``x``, ``nit``, ``residual_norm``;
        raising ``StopIteration`` stops cleanly.
    options : dict, optional
        Method options (``verbose``, ``progress``, ...); unknown names raise ``ValueError``.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x, success, status, message, nit, history`` (``history["residual_norm"]``) and extras.
    """
    m = get_method(method, "solve")
    opts = check_options(m, options, kwargs)
    A, _, b, x0, rtol, atol, maxiter = check_system(A, b, x0, rtol, atol, maxiter)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}")
    return m.load()(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=callback, **opts)
