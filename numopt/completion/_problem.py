"""The ``MatrixCompletion`` problem: observed entries of a low-rank matrix, validated once."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import as_float_array, check_indices, check_int, check_positive
from ..problems import Problem

__all__ = ["MatrixCompletion", "observed_from_dense", "observed_from_sparse"]


def check_shape_rank_reg(shape, rank, reg):
    """The checked ``((m, n), rank, reg)`` every completion problem starts from (``1 <= rank < min(m, n)``,
    ``reg >= 0``)."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(f"shape must be a pair (m, n); got {shape!r}")
    m = check_int(shape[0], "shape[0]", min_value=1)
    n = check_int(shape[1], "shape[1]", min_value=1)
    rank = check_int(rank, "rank", min_value=1)
    if rank >= min(m, n):
        raise ValueError(f"rank must be < min(m, n) = {min(m, n)}; got {rank}")
    return (m, n), rank, check_positive(reg, "reg", strict=False)


def observed_from_dense(X, name="X"):
    """``(rows, cols, values, shape)`` of a dense array whose NaN entries are missing."""
    X = as_float_array(X, name, ndim=2, allow_nan=True)
    obs = ~np.isnan(X)
    rows, cols = np.nonzero(obs)
    return rows, cols, X[rows, cols], X.shape


def observed_from_sparse(X, mask, name="X"):
    """``(rows, cols, values, shape)`` of the entries of ``X`` selected by an explicit ``mask``.

    ``mask`` (sparse or dense, same shape) marks the observed entries by nonzero/True values. An observed
    entry not stored in ``X`` is an observed 0; entries of ``X`` outside the mask are ignored. Zeros of
    ``X`` are never taken as missing.
    """
    if not sp.issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse matrix here; got {type(X).__name__}")
    if mask is None:
        raise ValueError(f"a sparse {name} needs an explicit mask of observed entries (missing is never inferred "
                         "from zeros); pass mask=")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D; got shape {X.shape}")
    shape = X.shape
    if sp.issparse(mask):
        if mask.shape != shape:
            raise ValueError(f"mask must have the shape of {name} {shape}; got {mask.shape}")
        mc = mask.tocoo()
        keep = np.asarray(mc.data != 0)
        rows, cols = np.asarray(mc.row)[keep], np.asarray(mc.col)[keep]
        key = rows.astype(np.int64) * shape[1] + cols
        key, first = np.unique(key, return_index=True)      # a mask with stored duplicates is still a set
        rows, cols = rows[first], cols[first]
    else:
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise ValueError(f"mask must have the shape of {name} {shape}; got {mask.shape}")
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"mask must be boolean or numeric; got dtype {mask.dtype}")
        rows, cols = np.nonzero(mask)
        key = rows.astype(np.int64) * shape[1] + cols
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {X.dtype}")
    Xc = X.tocoo()
    xkey = np.asarray(Xc.row, dtype=np.int64) * shape[1] + np.asarray(Xc.col)
    xdata = np.asarray(Xc.data)
    if xdata.dtype.kind in "biu":
        xdata = xdata.astype(np.float64)
    order = np.argsort(xkey, kind="stable")
    xkey, xdata = xkey[order], xdata[order]
    if xkey.size > 1 and np.any(xkey[1:] == xkey[:-1]):
        raise ValueError(f"{name} has duplicate stored entries; sum them (sum_duplicates) or remove them first")
    values = np.zeros(key.shape, dtype=xdata.dtype if xdata.dtype.kind == "f" else np.float64)
    if xkey.size:
        pos = np.minimum(np.searchsorted(xkey, key), xkey.size - 1)
        found = xkey[pos] == key
        values[found] = xdata[pos[found]]
    return rows, cols, values, shape


class MatrixCompletion(Problem):
    r"""Low-rank matrix completion from observed entries.

    .. math::

        \min_{U\in\mathbb R^{m\times k},\,V\in\mathbb R^{n\times k}}
        \tfrac12\sum_{(i,j)\in\Omega}(u_i^Tv_j - M_{ij})^2
        + \tfrac{\lambda}{2}\Big(\sum_i c_i\|u_i\|^2 + \sum_j c'_j\|v_j\|^2\Big)

    Parameters
    ----------
    rows, cols : int arrays, shape (nnz,)
        Positions of the observed entries (no duplicates).
    values : float array, shape (nnz,)
        Observed values :math:`M_{ij}` (finite; float32 is kept).
    shape : (m, n)
    rank : int
        Target rank :math:`k`, ``1 <= k < min(m, n)``.
    reg : float
        Ridge weight :math:`\lambda \ge 0` (the weights :math:`c` are chosen by the solver's ``reg_scaling``).
    truth : (U_true, V_true), optional
        Factors of a ground truth :math:`M^* = U^* V^{*T}` (any inner dimension); solvers then record the
        relative error :math:`\|UV^T - M^*\|_F / \|M^*\|_F` (computed from Grams, never as an m x n array).

    Use :meth:`from_dense` (NaN = missing) or :meth:`from_sparse` (scipy.sparse plus an explicit mask).
    The observed entries are kept in a CSR (row) and a CSC (column) copy: memory O(|Omega|).
    """

    def __init__(self, rows, cols, values, shape, rank, reg=0.0, *, truth=None):
        self.shape, self.rank, self.reg = check_shape_rank_reg(shape, rank, reg)
        m, n = self.shape
        values = as_float_array(values, "values", ndim=1, min_size=1)
        rows = check_indices(rows, "rows", m)
        cols = check_indices(cols, "cols", n)
        if rows.size != values.size or cols.size != values.size:
            raise ValueError(f"rows, cols and values must have the same length; got {rows.size}, {cols.size}, "
                             f"{values.size}")
        self.dtype = values.dtype
        self.nnz = int(values.size)
        key = rows * n + cols
        order = np.argsort(key, kind="stable")
        skey = key[order]
        dup = np.flatnonzero(skey[1:] == skey[:-1])
        if dup.size:
            i, j = divmod(int(skey[dup[0]]), n)
            raise ValueError(f"duplicate observed entries: (row {i}, col {j}) appears more than once "
                             f"({dup.size} duplicate(s)); each entry may be given once")
        # CSR copy (rows, then columns sorted)
        self.csr_indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=m), out=self.csr_indptr[1:])
        self.csr_indices = np.ascontiguousarray(cols[order])
        self.csr_values = np.ascontiguousarray(values[order])
        # CSC copy, and the permutation from CSR order to CSC order
        corder = np.argsort(cols[order] * m + rows[order], kind="stable")
        self.csc_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=n), out=self.csc_indptr[1:])
        self.csc_indices = np.ascontiguousarray(rows[order][corder])
        self.csc_values = np.ascontiguousarray(values[order][corder])
        self._csr_to_csc = corder
        self.truth = None
        if truth is not None:
            if not isinstance(truth, (tuple, list)) or len(truth) != 2:
                raise ValueError("truth must be a pair (U_true, V_true) of factors")
            Ut = as_float_array(truth[0], "truth[0]", ndim=2, dtype=np.float64)
            Vt = as_float_array(truth[1], "truth[1]", ndim=2, dtype=np.float64)
            if Ut.shape[0] != m or Vt.shape[0] != n or Ut.shape[1] != Vt.shape[1]:
                raise ValueError(f"truth factors must have shapes ({m}, r) and ({n}, r); got {Ut.shape}, {Vt.shape}")
            self.truth = (Ut, Vt)

    # --- alternative constructors -------------------------------------------------------------------
    @classmethod
    def from_dense(cls, X, rank, reg=0.0, *, truth=None):
        """Build from a dense array in which NaN marks a missing entry (every other entry is observed)."""
        rows, cols, values, shape = observed_from_dense(X)
        if values.size == 0:
            raise ValueError("X has no observed (non-NaN) entry")
        return cls(rows, cols, values, shape, rank, reg, truth=truth)

    @classmethod
    def from_sparse(cls, X, mask, rank, reg=0.0, *, truth=None):
        """Build from a ``scipy.sparse`` matrix plus an explicit ``mask`` of observed entries.

        An observed entry that ``X`` does not store is an observed 0; zeros are never taken as missing.
        """
        rows, cols, values, shape = observed_from_sparse(X, mask)
        if values.size == 0:
            raise ValueError("mask selects no entry")
        return cls(rows, cols, values, shape, rank, reg, truth=truth)

    # --- views ---------------------------------------------------------------------------------------
    @property
    def rows(self):
        """Row ids of the observed entries (CSR order)."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.csr_indptr))

    @property
    def cols(self):
        return self.csr_indices

    @property
    def values(self):
        return self.csr_values

    @property
    def row_counts(self):
        return np.diff(self.csr_indptr)

    @property
    def col_counts(self):
        return np.diff(self.csc_indptr)

    def to_csr(self):
        """The observed entries as a ``scipy.sparse.csr_array`` (observed zeros kept as explicit entries)."""
        return sp.csr_array((self.csr_values, self.csr_indices, self.csr_indptr), shape=self.shape)

    def __repr__(self):
        return (f"MatrixCompletion(shape={self.shape}, nnz={self.nnz}, rank={self.rank}, reg={self.reg}, "
                f"dtype={self.dtype})")

