"""The half-step kernel API: solve the ridge least-squares problems of one block of rows.

This is the unit of work of every half-step of alternating minimization. A block is given in CSR form
(its own ``indptr`` starting at 0, the column ids ``indices`` into the fixed factor, the observed
``values``), so a single machine passes all rows at once and a distributed worker passes its row
partition: the same compiled kernel runs in both cases, and the results are bitwise identical
(each row is solved independently and sequentially; the sketch of row ``i`` is seeded by
``(seed, row_offset + i)``, i.e. by the row's *global* id).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validation import as_float_array, check_choice, check_int, check_positive
from . import _kernels as K

__all__ = ["solve_rows", "RowBlockSolution", "SOLVERS"]

SOLVERS = {"cholesky": K.CHOLESKY, "cg": K.CG, "sketch-cg": K.SKETCH_CG, "auto": K.AUTO}
USED_NAMES = {K.CHOLESKY: "cholesky", K.CG: "cg", K.SKETCH_CG: "sketch-cg", K.QR: "qr"}


class RowBlockSolution(NamedTuple):
    r"""What :func:`solve_rows` returns for a block of ``b`` rows.

    Attributes
    ----------
    rows : ndarray, shape (b, k)
        The new factor rows (dtype of ``fixed``).
    status : ndarray of int8, shape (b,)
        0 = solved, 1 = cold row (no observation, set to 0), 2 = rank-deficient design (guarded solve).
    used : ndarray of int8, shape (b,)
        Solver actually used per row: 0 cholesky, 1 cg, 2 sketch-cg, 4 exact QR (sketch-cg on a short row).
    inner_steps : ndarray of int64, shape (b,)
        CG / preconditioned-CG steps taken per row (0 for exact solves).
    work : ndarray of int64, shape (b,)
        Fused multiply-adds spent per row (the half-step costs ``work.sum() / (nnz * k)`` passes).
    rss : ndarray of float64, shape (b,)
        :math:`\|A x_i - b\|^2` of each new row (0 for cold rows): summed over a U-step it is twice the
        data term of the objective at the new iterate, with no extra pass over the data.
    """

    rows: np.ndarray
    status: np.ndarray
    used: np.ndarray
    inner_steps: np.ndarray
    work: np.ndarray
    rss: np.ndarray

    @property
    def n_cold(self):
        return int(np.count_nonzero(self.status == K.COLD))

    @property
    def n_rank_deficient(self):
        return int(np.count_nonzero(self.status == K.RANK_DEFICIENT))


def solve_rows(indptr, indices, values, fixed, *, reg=0.0, reg_scaling="none", solver="cholesky", warm=None,
               inner_tol=1e-10, cg_steps=3, sketch_steps=None, sketch_size=None, sketch_nnz=8, seed=0,
               row_offset=0, want_rss=True, check=True):
    r"""Solve one half-step for a block of rows given in CSR form.

    For every row ``i`` of the block, with :math:`\Omega_i` = ``indices[indptr[i]:indptr[i+1]]``,
    :math:`A = F_{\Omega_i}` (rows of the fixed factor) and :math:`b` = the matching ``values``,

    .. math::

        x_i = \arg\min_x \|A x - b\|_2^2 + \lambda c_i \|x\|_2^2,\qquad
        c_i = 1 \ (\text{reg\_scaling="none"}) \text{ or } |\Omega_i| \ (\text{"count"}).

    Parameters
    ----------
    indptr : int array, shape (b + 1,)
        CSR row pointers of the block, ``indptr[0] == 0``, non-decreasing.
    indices : int array, shape (nnz,)
        Column ids (rows of ``fixed``) of the observed entries, in ``[0, fixed.shape[0])``.
    values : float array, shape (nnz,)
        Observed values (cast to ``fixed.dtype``).
    fixed : float32/float64 array, shape (n, k)
        The fixed factor (V for a U-step, U for a V-step).
    reg : float
        :math:`\lambda \ge 0`.
    reg_scaling : {"none", "count"}
    solver : {"cholesky", "cg", "sketch-cg", "auto"}
        ``"cholesky"``: exact normal equations (guarded for rank deficiency). ``"cg"``: warm-started CG on
        the normal equations (``cg_steps`` steps at most, never forms :math:`A^TA`). ``"sketch-cg"``:
        sparse sign sketch of size ``sketch_size``, QR preconditioner, preconditioned CG from the better
        of the warm start and the sketch-and-solve point; rows with ``N <= sketch_size`` take the exact
        QR path. ``"auto"``: per row, the cheapest by the flop model of the three.
    warm : float array, shape (b, k), optional
        Warm start (used by the iterative solvers; ignored by the exact ones).
    inner_tol : float
        Stop an iterative solve when :math:`\|A^T(b-Ax) - \lambda c_i x\| \le` ``inner_tol``
        :math:`\|A^T b\|`.
    cg_steps : int
        Maximum CG steps per row for ``"cg"`` (and the CG cost used by ``"auto"``).
    sketch_steps : int, optional
        Maximum preconditioned-CG steps for ``"sketch-cg"``; default
        :math:`\lceil\log_2(1/\text{inner\_tol})\rceil`, capped at 60.
    sketch_size : int, optional
        Rows :math:`s \ge k` of the sketch; default :math:`4k`.
    sketch_nnz : int
        Nonzeros :math:`\zeta` per sketch column.
    seed : int
        Seed of the sketches (row ``i`` uses ``(seed, row_offset + i)``).
    row_offset : int
        Global id of the block's first row (so partitions reproduce the single-machine sketches).
    want_rss : bool
        Also return each row's :math:`\|Ax_i - b\|^2` (free for the iterative solvers; one pass over the
        block for the exact ones). When False, ``rss`` is 0 for exactly solved rows.
    check : bool
        Validate the inputs (set False only for inputs already checked).

    Returns
    -------
    RowBlockSolution
    """
    if check:
        fixed = as_float_array(fixed, "fixed", ndim=2)
        n, k = fixed.shape
        if k < 1:
            raise ValueError("fixed must have at least one column")
        indptr = np.asarray(indptr)
        if indptr.ndim != 1 or indptr.size < 1 or indptr.dtype.kind not in "iu":
            raise ValueError(f"indptr must be a 1-D integer array of length b + 1; got shape {indptr.shape} "
                             f"dtype {indptr.dtype}")
        indptr = indptr.astype(np.int64)
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must start at 0 and be non-decreasing")
        nnz = int(indptr[-1])
        indices = np.asarray(indices)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise ValueError(f"indices must be a 1-D integer array; got shape {indices.shape} dtype {indices.dtype}")
        if indices.size != nnz:
            raise ValueError(f"indices must have indptr[-1] = {nnz} entries; got {indices.size}")
        if nnz and (indices.min() < 0 or indices.max() >= n):
            bad = int(indices.min()) if indices.min() < 0 else int(indices.max())
            raise ValueError(f"indices has index {bad} out of range [0, {n}) (rows of fixed)")
        values = as_float_array(values, "values", ndim=1, dtype=fixed.dtype)
        if values.size != nnz:
            raise ValueError(f"values must have indptr[-1] = {nnz} entries; got {values.size}")
        if not np.all(np.isfinite(fixed)):
            raise ValueError("fixed contains NaN or infinite values")
        reg = check_positive(reg, "reg", strict=False)
        check_choice(reg_scaling, "reg_scaling", ("none", "count"))
        check_choice(solver, "solver", tuple(SOLVERS))
        inner_tol = check_positive(inner_tol, "inner_tol", strict=False)
        cg_steps = check_int(cg_steps, "cg_steps", min_value=1)
        sketch_steps = check_int(sketch_steps, "sketch_steps", min_value=1, allow_none=True)
        sketch_size = check_int(sketch_size, "sketch_size", min_value=k, allow_none=True)
        sketch_nnz = check_int(sketch_nnz, "sketch_nnz", min_value=1)
        seed = check_int(seed, "seed", min_value=0)
        row_offset = check_int(row_offset, "row_offset", min_value=0)
        if warm is not None:
            warm = as_float_array(warm, "warm", shape=(indptr.size - 1, k))
    k = fixed.shape[1]
    b = indptr.shape[0] - 1
    if sketch_size is None:
        sketch_size = 4 * k
    if sketch_steps is None:
        sketch_steps = int(min(60, np.ceil(np.log2(1.0 / max(inner_tol, 1e-300)))))
    out = np.empty((b, k), dtype=fixed.dtype)
    if warm is not None:
        out[...] = warm
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=fixed.dtype)
    fixed = np.ascontiguousarray(fixed)
    status = np.empty(b, dtype=np.int8)
    used = np.empty(b, dtype=np.int8)
    steps = np.empty(b, dtype=np.int64)
    work = np.empty(b, dtype=np.int64)
    rss = np.empty(b, dtype=np.float64)
    K.solve_rows_kernel(indptr, indices, values, fixed, out, warm is not None, float(reg), reg_scaling == "count",
                        SOLVERS[solver], float(inner_tol), int(cg_steps), int(sketch_steps), int(sketch_size),
                        int(sketch_nnz), int(seed), int(row_offset), status, used, steps, work, rss,
                        bool(want_rss))
    return RowBlockSolution(out, status, used, steps, work, rss)
