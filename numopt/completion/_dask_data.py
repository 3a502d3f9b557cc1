"""Observed entries on a Dask cluster: the distributed matrix-completion problem and its block layout.

The data never pass through the client. Each *input partition* (a Parquet/NPZ file, a Dask DataFrame
partition or a Dask Array chunk of ``(row, col, value)`` triplets) is read and checked on a worker, cut
by contiguous row ranges (and by column ranges) and reassembled there into CSR row blocks and CSC
column blocks. Those blocks are kept on the workers as persisted futures: their lineage is the file
read (or the Dask graph of the input), so a lost worker's blocks are recomputed, never re-sent by the
client. Only the per-row/per-column counts (O(m + n)) come back to the client.

Every task here is a plain module-level function, so workers import it by name.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .._validation import check_int
from ..problems import Problem
from ._problem import check_shape_rank_reg

__all__ = ["DaskMatrixCompletion", "Block", "read_partition"]

_COLUMNS = ("row", "col", "value")


class Block(NamedTuple):
    """A CSR block of rows ``offset .. offset + size - 1`` (or a CSC block of columns)."""

    indptr: np.ndarray      # (size + 1,) int64, starts at 0
    indices: np.ndarray     # (nnz,) int64: global column ids (row ids for a column block)
    values: np.ndarray      # (nnz,) float
    offset: int
    size: int


# --------------------------------------------------------------------------------------------------
# tasks run on the workers
# --------------------------------------------------------------------------------------------------
def _where(part, label):
    return f"partition {part}" + (f" ({label})" if label else "")


def read_partition(path, part):
    """``(rows, cols, values)`` of one partition file (``.parquet``/``.pq`` or ``.npz``)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        missing = [c for c in _COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{_where(part, path)}: missing column(s) {missing}; a partition needs columns "
                             f"{list(_COLUMNS)}, got {table.column_names}")
        return tuple(table.column(c).to_numpy() for c in _COLUMNS)
    with np.load(path, allow_pickle=False) as z:
        missing = [c for c in _COLUMNS if c not in z.files]
        if missing:
            raise ValueError(f"{_where(part, path)}: missing array(s) {missing}; a partition needs arrays "
                             f"{list(_COLUMNS)}, got {z.files}")
        return tuple(z[c] for c in _COLUMNS)


def _frame_triplets(df, columns):
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; got {list(df.columns)}")
    return tuple(df[c].to_numpy() for c in columns)


def _array_triplets(a):
    a = np.asarray(a)
    return a[:, 0], a[:, 1], a[:, 2]


def _check_partition(trip, part, label, shape, dtype):
    """Validate one partition's triplets; errors name the partition. Returns int64/int64/dtype arrays."""
    where = _where(part, label)
    rows, cols, vals = (np.asarray(t) for t in trip)
    if not (rows.ndim == cols.ndim == vals.ndim == 1):
        raise ValueError(f"{where}: row, col and value must be 1-D; got shapes {rows.shape}, {cols.shape}, "
                         f"{vals.shape}")
    if not (rows.size == cols.size == vals.size):
        raise ValueError(f"{where}: row, col and value have different lengths {rows.size}, {cols.size}, "
                         f"{vals.size} (mismatched partition)")
    out = []
    for name, idx, upper in (("row", rows, shape[0]), ("col", cols, shape[1])):
        if idx.dtype.kind == "f":
            if not np.all(np.isfinite(idx)) or np.any(idx != np.round(idx)):
                raise ValueError(f"{where}: {name} indices must be integers; got non-integral values")
            if idx.size and (idx.min() < 0 or idx.max() >= upper):
                bad = idx.min() if idx.min() < 0 else idx.max()
                raise ValueError(f"{where}: {name} index {bad:g} out of range [0, {upper})")
        elif idx.dtype.kind not in "iu":
            raise TypeError(f"{where}: {name} indices must be integers; got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= upper:
                bad = lo if lo < 0 else hi
                raise ValueError(f"{where}: {name} index {bad} out of range [0, {upper})")
        out.append(idx)
    if vals.dtype.kind not in "biuf":
        raise TypeError(f"{where}: values must be real numbers; got dtype {vals.dtype}")
    vals = vals.astype(dtype, copy=False)
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"{where}: values contain NaN or infinite entries")
    return out[0], out[1], vals


def _cut(trip, bounds, by_row, part):
    """Cut checked triplets by the contiguous ranges ``bounds`` of rows (or columns)."""
    rows, cols, vals = trip
    key = rows if by_row else cols
    order = np.argsort(key, kind="stable")
    key = key[order]
    edges = np.searchsorted(key, bounds)
    rows, cols, vals = rows[order], cols[order], vals[order]
    return [(rows[a:b], cols[a:b], vals[a:b], np.full(b - a, part, dtype=np.int32))
            for a, b in zip(edges[:-1], edges[1:])]


def _assemble(got, lo, hi, other, by_row, labels):
    """The pieces of every input partition in one range -> a CSR (row block) or CSC (column block) ``Block``."""
    rows = np.concatenate([g[0] for g in got])
    cols = np.concatenate([g[1] for g in got])
    vals = np.concatenate([g[2] for g in got])
    src = np.concatenate([g[3] for g in got])
    major, minor = (rows, cols) if by_row else (cols, rows)
    key = (major - lo) * np.int64(other) + minor
    order = np.argsort(key, kind="stable")
    skey = key[order]
    dup = np.flatnonzero(skey[1:] == skey[:-1])
    if dup.size:
        e1, e2 = order[dup[0]], order[dup[0] + 1]
        i, j = int(rows[e1]), int(cols[e1])
        p1, p2 = int(src[e1]), int(src[e2])
        names = _where(p1, labels[p1]) if p1 == p2 else f"{_where(p1, labels[p1])} and {_where(p2, labels[p2])}"
        raise ValueError(f"duplicate observed entry (row {i}, col {j}) in {names} ({dup.size} duplicate(s) in "
                         f"{'rows' if by_row else 'columns'} {lo}..{hi - 1}); each entry may be given once")
    size = hi - lo
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(major - lo, minlength=size), out=indptr[1:])
    return Block(indptr, np.ascontiguousarray(minor[order]), np.ascontiguousarray(vals[order]), lo, size)


def _counts(block):
    return np.diff(block.indptr), block.indptr.nbytes + block.indices.nbytes + block.values.nbytes


def _from_arrays(rows, cols, vals):
    return rows, cols, vals


# --------------------------------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------------------------------
class DaskMatrixCompletion(Problem):
    r"""Matrix completion whose observed entries live on a Dask cluster.

    Same objective as :class:`numopt.problems.MatrixCompletion`,

    .. math::

        \min_{U,V}\ \tfrac12\sum_{(i,j)\in\Omega}(u_i^Tv_j - M_{ij})^2
        + \tfrac{\lambda}{2}\Big(\sum_i c_i\|u_i\|^2 + \sum_j c'_j\|v_j\|^2\Big),

    but :math:`\Omega` is given as *input partitions* of ``(row, col, value)`` triplets that are read
    and checked on the workers, never on the client.

    Parameters
    ----------
    source : dask DataFrame, dask Array, list of paths, or MatrixCompletion
        * a Dask DataFrame with the columns named by ``columns`` (default ``row``, ``col``, ``value``);
        * a Dask Array of shape (nnz, 3) (one chunk across its columns after rechunking);
        * a list of ``.parquet``/``.pq`` files (columns ``row``, ``col``, ``value``) or ``.npz`` files
          (arrays ``row``, ``col``, ``value``), one partition each;
        * an in-memory :class:`~numopt.problems.MatrixCompletion` (split into ``n_partitions``
          partitions embedded in the task graph; for tests and moderate sizes).
    shape : (m, n)
    rank : int
        :math:`k`, ``1 <= k < min(m, n)``.
    reg : float
        :math:`\lambda \ge 0`.
    dtype : float32 or float64
        Precision of the values and factors.
    columns : tuple of 3 str
        Column names of a DataFrame source.
    row_blocks, col_blocks : int, optional
        Number of CSR row blocks / CSC column blocks (contiguous ranges); default ``2 * workers`` at
        layout time.
    truth : (U_true, V_true), optional
        Ground-truth factors (relative error recorded per iteration).

    Notes
    -----
    Partition-level problems (mismatched lengths, out-of-range or non-integral indices, non-finite
    values, duplicates, missing columns) raise ``ValueError`` naming the partition when the data are
    laid out on the cluster, i.e. at the start of the solve.
    """

    def __init__(self, source, shape, rank, reg=0.0, *, dtype=np.float64, columns=_COLUMNS, row_blocks=None,
                 col_blocks=None, n_partitions=4, truth=None):
        self.shape, self.rank, self.reg = check_shape_rank_reg(shape, rank, reg)
        m, n = self.shape
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64; got {dtype}")
        self.dtype = dtype
        if not (isinstance(columns, (tuple, list)) and len(columns) == 3 and all(isinstance(c, str) for c in columns)):
            raise ValueError(f"columns must be three column names (row, col, value); got {columns!r}")
        self.columns = tuple(columns)
        self.row_blocks = check_int(row_blocks, "row_blocks", min_value=1, max_value=m, allow_none=True)
        self.col_blocks = check_int(col_blocks, "col_blocks", min_value=1, max_value=n, allow_none=True)
        n_partitions = check_int(n_partitions, "n_partitions", min_value=1)
        self._parts, self.labels, self.kind = self._partitions(source, n_partitions)
        self.truth = None
        if truth is not None:
            if not isinstance(truth, (tuple, list)) or len(truth) != 2:
                raise ValueError("truth must be a pair (U_true, V_true) of factors")
            Ut = np.asarray(truth[0], dtype=np.float64)
            Vt = np.asarray(truth[1], dtype=np.float64)
            if Ut.ndim != 2 or Vt.ndim != 2 or Ut.shape[0] != m or Vt.shape[0] != n or Ut.shape[1] != Vt.shape[1]:
                raise ValueError(f"truth factors must have shapes ({m}, r) and ({n}, r); got {Ut.shape}, {Vt.shape}")
            if not (np.all(np.isfinite(Ut)) and np.all(np.isfinite(Vt))):
                raise ValueError("truth contains NaN or infinite values")
            self.truth = (Ut, Vt)
        self._layouts = {}

    @classmethod
    def from_problem(cls, problem, *, n_partitions=4, row_blocks=None, col_blocks=None):
        """The distributed twin of an in-memory :class:`~numopt.problems.MatrixCompletion`."""
        return cls(problem, problem.shape, problem.rank, problem.reg, dtype=problem.dtype, row_blocks=row_blocks,
                   col_blocks=col_blocks, n_partitions=n_partitions, truth=problem.truth)

    def _partitions(self, source, n_partitions):
        """Delayed ``(rows, cols, values)`` per input partition, with a label for error messages."""
        import dask

        from ._problem import MatrixCompletion

        if isinstance(source, MatrixCompletion):
            if source.shape != self.shape:
                raise ValueError(f"shape {self.shape} differs from the problem's shape {source.shape}")
            rows, cols, vals = source.rows, source.cols, source.values
            cuts = np.linspace(0, rows.size, min(n_partitions, rows.size) + 1).astype(np.int64)
            parts = [dask.delayed(_from_arrays, pure=True)(rows[a:b], cols[a:b], vals[a:b])
                     for a, b in zip(cuts[:-1], cuts[1:])]
            return parts, [""] * len(parts), "arrays"
        if isinstance(source, (str, os.PathLike)):
            source = [source]
        if isinstance(source, (list, tuple)):
            if not source:
                raise ValueError("source is an empty list of partition files")
            paths = []
            for i, p in enumerate(source):
                if not isinstance(p, (str, os.PathLike)):
                    raise TypeError(f"source[{i}] must be a path; got {type(p).__name__}")
                p = os.fspath(p)
                ext = os.path.splitext(p)[1].lower()
                if ext not in (".parquet", ".pq", ".npz"):
                    raise ValueError(f"source[{i}] ({p}): partition files must be .parquet, .pq or .npz")
                if not os.path.exists(p):
                    raise FileNotFoundError(f"source[{i}]: partition file {p} does not exist")
                paths.append(p)
            parts = [dask.delayed(read_partition, pure=True)(p, i) for i, p in enumerate(paths)]
            return parts, paths, "files"
        try:
            import dask.array as da
            import dask.dataframe as dd
        except ImportError as exc:  # pragma: no cover - dask is the optional extra
            raise ImportError("the Dask backend needs dask[dataframe] and distributed (pip install numopt[dask])") from exc
        if isinstance(source, dd.DataFrame):
            missing = [c for c in self.columns if c not in source.columns]
            if missing:
                raise ValueError(f"source has no column(s) {missing}; columns are {list(source.columns)} (pass "
                                 "columns=(row, col, value) names)")
            parts = [dask.delayed(_frame_triplets, pure=True)(d, self.columns) for d in source.to_delayed()]
            return parts, [""] * len(parts), "dataframe"
        if isinstance(source, da.Array):
            if source.ndim != 2 or source.shape[1] != 3:
                raise ValueError(f"a Dask Array source must have shape (nnz, 3) of (row, col, value); got "
                                 f"{source.shape}")
            if len(source.chunks[1]) != 1:
                source = source.rechunk({1: 3})
            parts = [dask.delayed(_array_triplets, pure=True)(d) for d in source.to_delayed().ravel()]
            return parts, [""] * len(parts), "array"
        raise TypeError("source must be a Dask DataFrame, a Dask Array of (row, col, value), a list of .parquet/.npz "
                        f"paths or a MatrixCompletion; got {type(source).__name__}")

    # ---- layout on a cluster ------------------------------------------------------------------------
    def layout(self, client):
        """Read, check and block the data on ``client``'s workers (once per client); returns a ``Layout``."""
        key = id(client)
        if key not in self._layouts or self._layouts[key].client is not client:
            self._layouts[key] = Layout(self, client)
        return self._layouts[key]

    @property
    def n_partitions(self):
        return len(self._parts)

    def __repr__(self):
        return (f"DaskMatrixCompletion(shape={self.shape}, partitions={self.n_partitions} ({self.kind}), "
                f"rank={self.rank}, reg={self.reg}, dtype={self.dtype})")


def _bounds(size, nblocks):
    return np.unique(np.linspace(0, size, nblocks + 1).astype(np.int64))


class Layout:
    """CSR row blocks and CSC column blocks of a :class:`DaskMatrixCompletion`, persisted on a cluster.

    Attributes: ``row_blocks`` / ``col_blocks`` (lists of futures of :class:`Block`), ``row_bounds`` /
    ``col_bounds`` (block edges), ``row_counts`` / ``col_counts`` (degrees), ``nnz``, ``nbytes`` (bytes
    of both copies on the workers).
    """

    def __init__(self, problem, client):
        import dask
        from distributed import wait

        self.client = client
        m, n = problem.shape
        nw = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        self.row_bounds = _bounds(m, problem.row_blocks or 2 * nw)
        self.col_bounds = _bounds(n, problem.col_blocks or 2 * nw)
        R, C = self.row_bounds.size - 1, self.col_bounds.size - 1
        labels = list(problem.labels)
        checked = [dask.delayed(_check_partition, pure=True)(t, i, labels[i], problem.shape, problem.dtype)
                   for i, t in enumerate(problem._parts)]
        by_rows = [dask.delayed(_cut, pure=True, nout=R)(c, self.row_bounds, True, i) for i, c in enumerate(checked)]
        by_cols = [dask.delayed(_cut, pure=True, nout=C)(c, self.col_bounds, False, i) for i, c in enumerate(checked)]
        rb = [dask.delayed(_assemble, pure=True)([d[b] for d in by_rows], int(self.row_bounds[b]), int(self.row_bounds[b + 1]), n,
                                                 True, labels) for b in range(R)]
        cb = [dask.delayed(_assemble, pure=True)([d[b] for d in by_cols], int(self.col_bounds[b]), int(self.col_bounds[b + 1]), m,
                                                 False, labels) for b in range(C)]
        futures = client.compute(rb + cb)
        wait(futures)
        bad = [f for f in futures if f.status == "error"]
        if bad:
            bad[0].result()                      # re-raises the partition's error on the client
        self.row_blocks, self.col_blocks = futures[:R], futures[R:]
        counts = client.gather([client.submit(_counts, f, pure=True) for f in futures])
        self.row_counts = np.concatenate([c[0] for c in counts[:R]])
        self.col_counts = np.concatenate([c[0] for c in counts[R:]])
        self.nbytes = int(sum(c[1] for c in counts))   # Omega as held on the workers (both copies)
        self.nnz = int(self.row_counts.sum())
        if self.nnz == 0:
            raise ValueError("the partitions hold no observed entry")
