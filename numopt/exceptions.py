"""Warnings raised by numopt solvers."""

__all__ = ["ConvergenceWarning", "OptimizeWarning"]


class OptimizeWarning(UserWarning):
    """A solver was used in a way that may give a poor answer (e.g. an ignored option)."""


class ConvergenceWarning(OptimizeWarning):
    """A solver stopped before meeting its tolerance; the result has ``success=False``."""
