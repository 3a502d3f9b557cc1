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

__all__ = ["solve_rows", "RowBlockSolution", "SOLVERS", "choose_solver", "model_cost"]

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
        QR path. ``"auto"``: per row, the cheapest by the flop model of the three (:func:`model_cost`;
        ``altmin``'s ``"auto"`` instead times the solvers, see :func:`choose_solver`).
    warm : float array, shape (b, k), optional
        Warm start (used by the iterative solvers; ignored by the exact ones).
    inner_tol : float
        Stop an iterative solve when :math:`\|A^T(b-Ax) - \lambda c_i x\| \le` ``inner_tol`` times the
        same norm at the starting point (the warm start; :math:`\|A^T b\|` from x = 0).
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


# --------------------------------------------------------------------------------------------------
# solver="auto" in altmin: choose the row solver by measured cost
# --------------------------------------------------------------------------------------------------
_AUTO_CACHE = {}


def model_cost(indptr, k, *, cg_steps=3, inner_tol=1e-10, sketch_size=None, sketch_nnz=8):
    """Modeled FMAs of each row solver on a block (the kernel's own per-row counts, summed)."""
    deg = np.diff(np.asarray(indptr, dtype=np.int64)).astype(np.float64)
    deg = deg[deg > 0]
    s = 4 * k if sketch_size is None else sketch_size
    lg = max(1.0, float(np.log2(1.0 / max(inner_tol, 1e-300))))
    steps = min(60.0, lg)
    chol = float(np.sum(deg * (k * (k + 1) / 2 + 2 * k) + k ** 3 / 6 + k * k))
    cg = float(np.sum((1 + 2 * cg_steps) * deg * k))
    long = deg > s
    sk = float(np.sum(np.where(long, deg * sketch_nnz * (k + 1) + 2 * (s + k) * k * k + (4 + 2 * steps) * deg * k,
                               2 * (deg + k) * k * k + deg * k)))
    return {"cholesky": chol, "cg": cg, "sketch-cg": sk}


def choose_solver(indptr, indices, values, fixed, *, warm=None, max_model_ratio=4.0, repeats=2, cache=True, **kw):
    r"""The fastest row solver for a block of rows, by **measured** time.

    Rule: the candidates are ``"cholesky"``, ``"cg"`` and ``"sketch-cg"``, minus those whose modeled FMA
    count (:func:`model_cost`) exceeds ``max_model_ratio`` times the cheapest model (they cannot win: a
    solver is never measured more than ~4x off its model on this kind of kernel, and timing a hopeless
    candidate, e.g. the sketch with its :math:`O(k^3)` QR per row at 200 entries per row, costs more
    than it can save). If one candidate is left it is returned; otherwise each candidate solves the
    same rows (the given block, normally a sample of a half-step's rows, with the same warm start),
    ``repeats`` times interleaved, and the smallest wall time wins.

    The decision is cached for the process under the key (k, dtype, warm start or not, ridge or not,
    round(log2(mean row degree)), solver options), so later half-steps and later solves of problems of
    the same kind reuse it (the choice is machine-dependent, so ``"auto"`` iterates are reproducible
    within a process, not across machines; pass an explicit solver for bitwise reproducibility).

    Returns ``(solver, seconds)`` with ``seconds`` the best time per candidate (``{}`` when nothing was
    timed) and a ``"cached"`` entry when the decision came from the cache.
    """
    import time

    k = fixed.shape[1]
    kw = dict(kw)
    kw.pop("solver", None)
    kw["check"] = False
    model = model_cost(indptr, k, cg_steps=kw.get("cg_steps", 3), inner_tol=kw.get("inner_tol", 1e-10),
                       sketch_size=kw.get("sketch_size"), sketch_nnz=kw.get("sketch_nnz", 8))
    best_model = min(model.values())
    cand = [c for c in ("cholesky", "cg", "sketch-cg") if model[c] <= max_model_ratio * best_model]
    nnz = int(indptr[-1])
    rows = max(1, int(np.count_nonzero(np.diff(indptr))))
    key = (k, np.dtype(fixed.dtype).str, warm is not None, kw.get("reg", 0.0) > 0, int(round(np.log2(nnz / rows + 1))),
           tuple(cand), kw.get("cg_steps"), kw.get("inner_tol"), kw.get("sketch_size"), kw.get("sketch_nnz"))
    if cache and key in _AUTO_CACHE:
        name, secs = _AUTO_CACHE[key]
        return name, dict(secs, cached=True)
    secs = {}
    if len(cand) > 1:
        for _ in range(repeats):
            for c in cand:
                t0 = time.perf_counter()
                solve_rows(indptr, indices, values, fixed, warm=warm, solver=c, want_rss=False, **kw)
                secs[c] = min(secs.get(c, np.inf), time.perf_counter() - t0)
        name = min(secs, key=secs.get)
    else:
        name = cand[0]
    if cache:
        _AUTO_CACHE[key] = (name, secs)
    return name, dict(secs)


def sample_block(indptr, indices, values, n_sample):
    """``(indptr, indices, values, rows)`` of ``n_sample`` evenly spaced rows of a CSR block."""
    b = indptr.size - 1
    rows = np.unique(np.linspace(0, b - 1, min(b, n_sample)).astype(np.int64)) if b else np.zeros(0, np.int64)
    lo, hi = indptr[rows], indptr[rows + 1]
    ip = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=ip[1:])
    take = np.repeat(lo - ip[:-1], hi - lo) + np.arange(ip[-1])
    return ip, indices[take], values[take], rows
