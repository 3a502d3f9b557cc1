"""Shared iteration machinery: callbacks, history, progress and the result object.

Every iterative solver in numopt drives one :class:`Monitor`::

    mon = Monitor("sns", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    for k in range(maxiter):
        ...                                   # one iteration
        if mon.step(x, err=err, fun=f):       # records history, logs, calls the callback
            break                             # the callback raised StopIteration
        if err <= tol:
            converged = True
            break
    return mon.result(x, converged=converged, fun=f, extra=...)

The callback follows SciPy's newer convention: ``callback(intermediate_result)`` where
``intermediate_result`` is an :class:`OptimizeResult` with ``x``, ``nit`` and the recorded fields.
Raising ``StopIteration`` inside it ends the solve cleanly with the current iterate and
``status == STATUS_CALLBACK``.
"""
from __future__ import annotations

import logging
import time
import warnings

import numpy as np
from scipy.optimize import OptimizeResult

from .exceptions import ConvergenceWarning

__all__ = ["OptimizeResult", "Monitor", "STATUS_SUCCESS", "STATUS_MAXITER", "STATUS_CALLBACK",
           "STATUS_BREAKDOWN", "make_result", "get_logger"]

STATUS_SUCCESS = 0
STATUS_MAXITER = 1
STATUS_BREAKDOWN = 3
STATUS_CALLBACK = 99  # same code SciPy uses when a callback raises StopIteration

_MESSAGES = {
    STATUS_SUCCESS: "Optimization terminated successfully.",
    STATUS_MAXITER: "Maximum number of iterations reached before the tolerance was met.",
    STATUS_BREAKDOWN: "Numerical breakdown: the iteration cannot continue.",
    STATUS_CALLBACK: "`callback` raised `StopIteration`.",
}

logging.getLogger("numopt").addHandler(logging.NullHandler())


def get_logger(name):
    """The ``numopt.<name>`` logger (a ``NullHandler`` is attached at the package root)."""
    return logging.getLogger(f"numopt.{name}" if not name.startswith("numopt") else name)


def make_result(x, *, status, nit, history=None, message=None, warn=True, method=None, **extra):
    """Build the :class:`OptimizeResult` every solver returns.

    ``success`` is ``status == 0``. Statuses other than success and a callback stop emit a
    :class:`~numopt.exceptions.ConvergenceWarning` (when ``warn``).
    """
    if message is None:
        message = _MESSAGES.get(status, "Solver stopped.")
    res = OptimizeResult(x=x, success=status == STATUS_SUCCESS, status=int(status), message=message,
                         nit=int(nit), history=history if history is not None else {})
    if method is not None:
        res["method"] = method
    res.update(extra)
    if warn and status not in (STATUS_SUCCESS, STATUS_CALLBACK):
        warnings.warn(f"{method or 'solver'}: {message}", ConvergenceWarning, stacklevel=3)
    return res


class Monitor:
    """Record per-iteration history, report progress and run the user callback.

    Parameters
    ----------
    method : str
        Method name, used in log lines and messages.
    callback : callable, optional
        ``callback(intermediate_result)``; may raise ``StopIteration``.
    verbose : bool or int
        ``True``/``1``: one log line every ``log_every`` iterations at INFO through the
        ``numopt.<method>`` logger (a handler is attached if the logger has none, so lines show);
        ``2``: every iteration.
    progress : bool
        Show a tqdm bar over ``maxiter`` iterations.
    maxiter : int, optional
        Only used for the progress bar total.
    """

    def __init__(self, method, *, callback=None, verbose=False, progress=False, maxiter=None, log_every=None):
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable; got {type(callback).__name__}")
        self.method = method
        self.callback = callback
        self.verbose = int(verbose) if verbose is not None else 0
        self.nit = 0
        self.history: dict[str, list] = {}
        self.stopped = False
        self.t0 = time.perf_counter()
        self.logger = get_logger(method)
        if self.verbose and all(isinstance(h, logging.NullHandler) for h in _all_handlers(self.logger)):
            # nobody configured logging: attach a handler so ``verbose`` shows something
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            self.logger.addHandler(handler)
            self.logger.setLevel(logging.INFO)
            self.logger.propagate = False
        self.log_every = log_every or (1 if self.verbose >= 2 else max(1, (maxiter or 100) // 20))
        self._bar = None
        if progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=maxiter, desc=method, leave=False)

    def step(self, x, n=1, **fields):
        """Record one iteration (``n`` iterations at once); return ``True`` if the callback asked to stop."""
        self.nit += n
        fields.setdefault("time", time.perf_counter() - self.t0)
        for key, val in fields.items():
            self.history.setdefault(key, []).append(val.item() if isinstance(val, np.generic) else val)
        if self._bar is not None:
            self._bar.update(n)
            shown = {k: f"{v:.3e}" for k, v in fields.items() if k != "time" and np.isscalar(v)}
            if shown:
                self._bar.set_postfix(shown, refresh=False)
        if self.verbose and self.nit % self.log_every == 0:
            body = "  ".join(f"{k}={v:.6e}" if isinstance(v, (float, np.floating)) else f"{k}={v}"
                             for k, v in fields.items())
            self.logger.info("iter %d  %s", self.nit, body)
        if self.callback is not None:
            try:
                self.callback(OptimizeResult(x=x, nit=self.nit, **fields))
            except StopIteration:
                self.stopped = True
                return True
        return False

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def result(self, x, *, converged, status=None, message=None, warn=True, **extra):
        """Close the progress bar and build the result (``status`` inferred when not given)."""
        self.close()
        if status is None:
            if self.stopped:
                status = STATUS_CALLBACK
            else:
                status = STATUS_SUCCESS if converged else STATUS_MAXITER
        history = {k: np.asarray(v) if all(np.isscalar(e) for e in v) else v for k, v in self.history.items()}
        extra.setdefault("time", time.perf_counter() - self.t0)
        res = make_result(x, status=status, nit=self.nit, history=history, message=message, warn=warn,
                          method=self.method, **extra)
        if self.verbose:
            self.logger.info("%s after %d iterations (%.3g s)", res.message, res.nit, extra["time"])
        return res


def _all_handlers(logger):
    handlers = []
    while logger is not None:
        handlers.extend(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    return handlers
