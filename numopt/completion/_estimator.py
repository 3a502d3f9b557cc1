"""``MatrixCompleter``: a scikit-learn style estimator around ``method="altmin"``."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import check_choice, check_indices
from ..exceptions import ConvergenceWarning
from ._altmin import minimize_altmin
from ._kernels import predict_entries
from ._problem import MatrixCompletion, observed_from_dense, observed_from_sparse
from ._rowsolve import solve_rows

__all__ = ["MatrixCompleter"]


class MatrixCompleter(TransformerMixin, BaseEstimator):
    r"""Low-rank matrix completion by robust alternating minimization (scikit-learn API).

    Fits :math:`X \approx UV^T` (+ optional global mean and row/column biases) on the observed entries
    of ``X`` by :func:`numopt.minimize` with ``method="altmin"`` (see there for the math).

    ``X`` is a dense array with NaN for missing entries, or a ``scipy.sparse`` matrix *plus* an explicit
    ``mask`` of observed entries (zeros are never taken as missing). Rows of ``X`` are samples
    (e.g. users), columns are features (items).

    Parameters
    ----------
    rank : int
        Rank :math:`k` of the factorization.
    reg : float
        Ridge weight :math:`\lambda \ge 0`.
    solver : {"auto", "cholesky", "cg", "sketch-cg"}
    init : {"svd", "random"}
    reg_scaling : {"none", "count"}
    center : {"none", "global", "biases"}
    max_iter : int
    tol : float
        Relative change of the objective that stops the iteration.
    inner_tol : float
    cg_steps : int
    clip : bool
    cold_start : {"nan", "zero", "drop"}
        What :meth:`predict` returns for a row or column without any training observation: NaN, the
        offsets only (global mean and known biases; 0 without centring), or nothing (the entry is dropped).
    warm_start : bool
        Start from the previous factors when refitting a matrix of the same shape.
    workers : int, optional
    random_state : None, int or Generator
    verbose : bool
    client : distributed.Client or scheduler address, optional
        Solve on a Dask cluster (same factors as on one machine). Pass the address (a string) if the
        estimator will be cloned (``clone`` deep-copies parameters; a live ``Client`` cannot be copied).

    Attributes
    ----------
    U_, V_ : ndarray
        Factors, shapes (n_samples, rank) and (n_features, rank).
    global_mean_ : float
    row_bias_, col_bias_ : ndarray
        Zeros unless ``center="biases"``.
    n_iter_ : int
    result_ : OptimizeResult
        The full solver result (history, timings, counts).
    n_features_in_ : int
    """

    def __init__(self, rank=10, reg=0.0, *, solver="auto", init="svd", reg_scaling="none", center="none",
                 max_iter=100, tol=1e-9, inner_tol=1e-10, cg_steps=3, clip=True, cold_start="nan",
                 warm_start=False, workers=None, random_state=None, verbose=False, client=None):
        self.rank = rank
        self.reg = reg
        self.solver = solver
        self.init = init
        self.reg_scaling = reg_scaling
        self.center = center
        self.max_iter = max_iter
        self.tol = tol
        self.inner_tol = inner_tol
        self.cg_steps = cg_steps
        self.clip = clip
        self.cold_start = cold_start
        self.warm_start = warm_start
        self.workers = workers
        self.client = client
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True        # NaN marks a missing entry
        tags.input_tags.sparse = False          # sparse input needs an explicit mask (fit(X, mask=...))
        tags.non_deterministic = False
        return tags

    # --- input handling ------------------------------------------------------------------------------
    def _observed(self, X, mask, reset):
        """Validate X (dense NaN, or sparse + mask) and return ``(rows, cols, values, shape)``."""
        if sp.issparse(X):
            if mask is None:
                raise ValueError("a sparse X needs an explicit mask of observed entries (missing is never "
                                 "inferred from zeros): call fit(X, mask=...) or pass a dense array with NaN")
            if reset:
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input")
            rows, cols, values, shape = observed_from_sparse(X, mask)
            if not np.all(np.isfinite(values)):
                raise ValueError("X contains NaN or infinite values at observed (masked) entries")
            return rows, cols, values, shape
        X = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32],
                          ensure_min_samples=1, ensure_min_features=1)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != X.shape:
                raise ValueError(f"mask must have the shape of X {X.shape}; got {mask.shape}")
            X = np.where(mask.astype(bool), X, np.nan)
        return observed_from_dense(X)

    def _check_params(self):
        check_choice(self.cold_start, "cold_start", ("nan", "zero", "drop"))

    # --- fitting -------------------------------------------------------------------------------------
    def fit(self, X, y=None, mask=None):
        """Fit the factors on the observed entries of ``X`` (NaN-dense, or sparse with ``mask``)."""
        self._check_params()
        rows, cols, values, shape = self._observed(X, mask, reset=True)
        m, n = shape
        if values.size == 0:
            raise ValueError("X has no observed entry")
        if not isinstance(self.rank, (int, np.integer)) or isinstance(self.rank, bool):
            raise TypeError(f"rank must be an integer; got {self.rank!r}")
        if self.rank >= min(m, n):
            raise ValueError(f"rank={self.rank} must be smaller than min(n_samples, n_features) = {min(m, n)} "
                             f"(got n_samples={m}, n_features={n})")
        problem = MatrixCompletion(rows, cols, values, shape, self.rank, self.reg)
        x0 = None
        if self.warm_start and hasattr(self, "U_") and self.U_.shape == (m, self.rank) \
                and self.V_.shape == (n, self.rank):
            x0 = (self.U_, self.V_)
        with warnings.catch_warnings():
            if not self.verbose:
                warnings.simplefilter("ignore", ConvergenceWarning)
            res = minimize_altmin(problem, x0, solver=self.solver, init=self.init, clip=self.clip,
                                  reg_scaling=self.reg_scaling, center=self.center, maxiter=self.max_iter,
                                  tol=self.tol, inner_tol=self.inner_tol, cg_steps=self.cg_steps,
                                  workers=self.workers, random_state=self.random_state, verbose=self.verbose,
                                  client=self.client)
        if not res.success and res.status != 99:
            warnings.warn(f"MatrixCompleter: {res.message}", ConvergenceWarning, stacklevel=2)
        self.U_, self.V_ = res.U, res.V
        self.global_mean_ = float(res.global_mean)
        self.row_bias_ = res.row_bias if res.row_bias is not None else np.zeros(m)
        self.col_bias_ = res.col_bias if res.col_bias is not None else np.zeros(n)
        self.row_counts_ = problem.row_counts
        self.col_counts_ = problem.col_counts
        self.n_iter_ = res.nit
        self.result_ = res
        self.shape_ = shape
        return self

    # --- predictions on the training matrix ----------------------------------------------------------
    def predict(self, rows, cols=None):
        """Predicted entries ``X[rows[e], cols[e]]`` of the training matrix.

        With ``cols=None``, ``rows`` is read as a matrix ``X`` of new samples and the call is
        :meth:`transform` (scikit-learn's ``predict(X)`` convention). Rows or columns without any
        training observation follow ``cold_start``.
        """
        if cols is None:
            return self.transform(rows)
        check_is_fitted(self)
        m, n = self.shape_
        r = check_indices(rows, "rows", m)
        c = check_indices(cols, "cols", n)
        if r.size != c.size:
            raise ValueError(f"rows and cols must have the same length; got {r.size} and {c.size}")
        U = np.ascontiguousarray(self.U_)
        V = np.ascontiguousarray(self.V_)
        pred = predict_entries(r, c, U, V) + self.global_mean_ + self.row_bias_[r] + self.col_bias_[c]
        cold = (self.row_counts_[r] == 0) | (self.col_counts_[c] == 0)
        if self.cold_start == "nan":
            pred[cold] = np.nan
        elif self.cold_start == "drop":
            pred = pred[~cold]
        return pred

    def rmse(self, rows, cols, values):
        """Root-mean-square error :math:`\\sqrt{\\sum_e (\\hat x_e - v_e)^2 / N}` of the predictions
        (cold entries follow ``cold_start``; with ``"drop"`` they are left out)."""
        check_is_fitted(self)
        values = np.asarray(values, dtype=np.float64)
        pred = self.predict(rows, cols)
        if self.cold_start == "drop":
            m, n = self.shape_
            r = check_indices(rows, "rows", m)
            c = check_indices(cols, "cols", n)
            values = values[~((self.row_counts_[r] == 0) | (self.col_counts_[c] == 0))]
        if pred.shape != values.shape:
            raise ValueError(f"values must have one entry per (row, col) pair; got {values.shape}")
        return float(np.sqrt(np.mean((pred - values) ** 2))) if pred.size else float("nan")

    def score(self, X, y=None, mask=None):
        """Negative RMSE (higher is better) of the training-matrix predictions at the observed entries of
        ``X``, a matrix of the training shape (e.g. the held-out entries, NaN elsewhere)."""
        check_is_fitted(self)
        rows, cols, values, shape = self._observed(X, mask, reset=False)
        if shape != self.shape_:
            raise ValueError(f"score needs a matrix of the training shape {self.shape_} (same rows); got {shape}. "
                             "Use transform for new rows.")
        return -self.rmse(rows, cols, values)

    def reconstruct(self):
        """The dense completed training matrix :math:`UV^T` + offsets (m x n: only for small matrices)."""
        check_is_fitted(self)
        return (self.U_.astype(np.float64) @ self.V_.T.astype(np.float64) + self.global_mean_
                + self.row_bias_[:, None] + self.col_bias_[None, :])

    # --- new rows (fold-in) --------------------------------------------------------------------------
    def transform(self, X, mask=None):
        """Complete new rows: fold each row into the fitted column factors (one exact ridge solve per row
        against ``V_``) and fill its missing entries; observed entries are returned unchanged.

        Returns a dense float64 array of shape ``(n_samples, n_features)``.
        """
        check_is_fitted(self)
        rows, cols, values, shape = self._observed(X, mask, reset=False)
        m, n = shape
        values = values.astype(np.float64)
        resid = values - self.global_mean_ - self.col_bias_[cols]
        counts = np.bincount(rows, minlength=m)
        if self.center == "biases":
            bu = np.bincount(rows, weights=resid, minlength=m) / (counts + self.reg + (counts == 0))
            resid = resid - bu[rows]
        else:
            bu = np.zeros(m)
        order = np.lexsort((cols, rows))
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        V = np.ascontiguousarray(self.V_, dtype=np.float64)
        sol = solve_rows(indptr, cols[order], resid[order], V, reg=self.reg, reg_scaling=self.reg_scaling,
                         solver="cholesky", check=False)
        out = sol.rows @ V.T + self.global_mean_ + bu[:, None] + self.col_bias_[None, :]
        out[rows, cols] = values
        return out
