"""numopt.completion: low-rank matrix completion by robust alternating minimization.

- :class:`numopt.problems.MatrixCompletion` + ``numopt.minimize(problem, method="altmin")``
- :class:`MatrixCompleter`: scikit-learn style estimator (needs scikit-learn)
- :func:`solve_rows`: the compiled half-step kernel on one CSR block of rows (the unit a distributed
  worker runs); :func:`choose_solver`: the measured choice behind ``solver="auto"``
- :class:`DaskMatrixCompletion` + ``options={"client": client}``: the same solver on a Dask cluster

Everything but the problem class is imported lazily, so ``import numopt`` does not load Numba or
scikit-learn.
"""
from .._lazy import lazy_exports
from ._problem import MatrixCompletion

__all__ = ["MatrixCompletion", "MatrixCompleter", "minimize_altmin", "solve_rows", "RowBlockSolution",
           "choose_solver", "sparse_top_svd", "gram_distance", "balance_factors", "DaskMatrixCompletion", "minimize_altmin_dask"]

_LAZY = {"MatrixCompleter": "._estimator", "minimize_altmin": "._altmin", "sparse_top_svd": "._altmin",
         "gram_distance": "._altmin", "balance_factors": "._altmin", "solve_rows": "._rowsolve",
         "RowBlockSolution": "._rowsolve",
         "choose_solver": "._rowsolve", "DaskMatrixCompletion": "._dask_data", "minimize_altmin_dask": "._dask"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
