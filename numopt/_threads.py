"""BLAS thread control shared by the areas whose hot loops make many small BLAS calls."""
from __future__ import annotations

__all__ = ["single_thread_blas"]

_CONTROLLER = []


def single_thread_blas(active=True):
    """Context limiting BLAS to one thread (a cached threadpoolctl controller: ~15 us per use).

    Threaded BLAS on small matrices spins for milliseconds per call on a busy machine (the block products of
    BCD, the ADMM products of a small convex ReLU program). A no-op without threadpoolctl or when ``active``
    is false.
    """
    import contextlib
    if not active:
        return contextlib.nullcontext()
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
            _CONTROLLER.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - optional
            _CONTROLLER.append(None)
    ctl = _CONTROLLER[0]
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")
