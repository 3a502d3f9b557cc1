r"""Robust alternating minimization on a Dask cluster (``minimize(..., options={"client": client})``).

The same algorithm as :func:`numopt.completion.minimize_altmin`, step for step, with the data kept on
the workers:

* :math:`\Omega` lives on the workers as CSR row blocks and CSC column blocks (see
  :mod:`numopt.completion._dask_data`), read once from the input partitions and persisted.
* A half-step broadcasts the fixed factor (:math:`n\times k` or :math:`m\times k`) to the workers;
  each block runs the compiled kernel :func:`~numopt.completion.solve_rows` on its rows (the sketch
  of row ``i`` is seeded by its global id, so the block results are bitwise those of one machine)
  and sends its new factor rows back. Only factors move: per iteration
  :math:`\approx (P + 2)(m + n)k` numbers for :math:`P` workers, never :math:`|\Omega|`.
* The driver keeps the factors and does the :math:`O((m+n)k^2)` dense work (QR of the fixed factor,
  the warm-start map, the Gram-based metrics) exactly as the single-machine solver does, so the
  iterates agree with it to rounding.
* The SVD initialization is a randomized subspace iteration with blockwise sparse products and
  :func:`dask.array.linalg.tsqr` (QR and SVD of tall-skinny :math:`m\times(k+10)` and
  :math:`n\times(k+10)` arrays); no :math:`m\times n` array is formed anywhere.
* A lost worker costs nothing but time: its blocks are recomputed from their lineage (the partition
  files or the input's Dask graph) and its tasks re-run; a half-step whose inputs were lost
  altogether is re-submitted from the driver's copy of the factors (results are deterministic).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .._monitor import Monitor
from ._dask_data import DaskMatrixCompletion

__all__ = ["minimize_altmin_dask"]

_log = logging.getLogger("numopt.altmin")


# --------------------------------------------------------------------------------------------------
# tasks (run on the workers)
# --------------------------------------------------------------------------------------------------
def _pin_threads():
    """Match Numba's thread count to the worker's threads (no oversubscription across workers)."""
    import numba

    try:
        from distributed import get_worker

        nt = get_worker().state.nthreads
    except Exception:                            # not on a worker (synchronous use)
        return
    numba.set_num_threads(max(1, min(nt, numba.config.NUMBA_NUM_THREADS)))


def _major_ids(block):
    return np.repeat(np.arange(block.offset, block.offset + block.size, dtype=np.int64), np.diff(block.indptr))


def _center_block(block, gmean, bias_major, bias_minor, dtype, by_row):
    """Subtract the global mean and the row/column biases (as the single-machine solver does, in the same
    order of additions: ``(mean + row bias) + column bias``, so the centred values are bitwise equal)."""
    major = np.repeat(np.arange(block.size), np.diff(block.indptr))
    bu, bv = (bias_major[major], bias_minor[block.indices]) if by_row else (bias_minor[block.indices],
                                                                           bias_major[major])
    off = gmean + bu + bv
    return block._replace(values=(block.values - off).astype(dtype))


def _part(block, split):
    """``(indptr, indices, values)`` of the block, restricted to split part ``split[2]`` when given.

    The label of entry ``(i, j)`` is the single-machine one (a hash of the global ``i * n + j``), so the
    blocks of a part are exactly the single-machine part cut by rows (or columns)."""
    if split is None:
        return block.indptr, block.indices, block.values
    from . import _kernels as K

    seed, nparts, part, ncols, by_row = split
    major = _major_ids(block)
    rows, cols = (major, block.indices) if by_row else (block.indices, major)
    keep = K.split_labels(rows, cols, ncols, seed, nparts) == part
    indptr = np.zeros(block.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(major[keep] - block.offset, minlength=block.size), out=indptr[1:])
    return indptr, block.indices[keep], block.values[keep]


def _solve_task(block, warm, kw, split, residual, fixed):
    """One block of a half-step: its ``RowBlockSolution`` and, with ``residual``, the per-row squared
    residuals on all of the block's data (theory mode; otherwise the kernel's ``rss`` is that already)."""
    from . import _kernels as K
    from ._rowsolve import solve_rows

    _pin_threads()
    ip, ix, val = _part(block, split)
    # the kernel's per-row residuals are the objective only after a U-step on all of Omega
    sol = solve_rows(ip, ix, val, fixed, warm=warm, row_offset=block.offset + kw.pop("shift"),
                     want_rss=kw.pop("by_row") and split is None, **kw)
    res = K.row_residual_sq(block.indptr, block.indices, block.values, sol.rows, fixed) if residual else None
    return sol, res


def _sample_task(block, split, n_sample):
    """``(indptr, indices, values, rows)`` of evenly spaced rows of the block (rows are block-local)."""
    from ._rowsolve import sample_block

    return sample_block(*_part(block, split), n_sample)


def _matmul_task(block, F, scale, split):
    """``scale * A_block @ F`` for a CSR row block (or ``A^T`` restricted to a CSC column block)."""
    import scipy.sparse as sp

    ip, ix, val = _part(block, split)
    A = sp.csr_array((val.astype(np.float64) * scale, ix, ip), shape=(block.size, F.shape[0]))
    return A @ F


def _bias_numerators(block, mu, other_bias):
    """Row sums of ``value - mu - other_bias[minor]`` in entry order (one alternating-means sweep)."""
    r = block.values.astype(np.float64) - mu
    major = np.repeat(np.arange(block.size), np.diff(block.indptr))
    return np.bincount(major, weights=r - other_bias[block.indices], minlength=block.size)


def _abs_sum(block, split):
    ip, ix, val = _part(block, split)
    return float(np.sum(np.abs(val.astype(np.float64)))), int(ix.size)


def _value_stats(block):
    v = block.values.astype(np.float64)
    return float(np.sum(v)), float(np.sum(v * v))


# --------------------------------------------------------------------------------------------------
# driver helpers
# --------------------------------------------------------------------------------------------------
_RETRIES = 3


class _WorkerLost(RuntimeError):
    pass


def _gather_robust(client, make):
    """``client.gather`` of the futures ``make()`` returns, re-submitting when workers were lost.

    ``make()`` returns ``(futures, pinned)``: tasks pinned to the workers that hold their blocks. A
    pinned worker that disappears would leave its tasks waiting forever, so the wait polls the
    scheduler and starts the step again (the blocks come back by lineage; results are deterministic).
    """
    from distributed import wait

    for attempt in range(_RETRIES + 1):
        futures = []
        try:
            futures, pinned = make()
            while True:
                try:
                    wait(futures, timeout=1.0)
                    break
                except TimeoutError:
                    alive = set(client.scheduler_info(n_workers=-1)["workers"])
                    if pinned - alive:
                        raise _WorkerLost(f"worker(s) {sorted(pinned - alive)} left the cluster") from None
            return client.gather(futures)
        except (ValueError, TypeError, ArithmeticError, MemoryError, ImportError, AttributeError):
            raise
        except Exception as exc:                 # lost worker / lost scattered factor: run the step again
            if attempt == _RETRIES:
                raise
            _log.warning("altmin[dask]: %s (%s); re-submitting the step (%d/%d)", type(exc).__name__, exc,
                         attempt + 1, _RETRIES)
            client.cancel(futures)


def _retry(step):
    """Run a whole (deterministic) step again when the cluster lost a worker under it."""
    for attempt in range(_RETRIES + 1):
        try:
            return step()
        except (ValueError, TypeError, ArithmeticError, MemoryError, ImportError, AttributeError):
            raise
        except Exception as exc:
            if attempt == _RETRIES:
                raise
            _log.warning("altmin[dask]: %s (%s); running the step again (%d/%d)", type(exc).__name__, exc,
                         attempt + 1, _RETRIES)


def _to_problem(problem):
    """Accept an in-memory MatrixCompletion too (it is split and embedded in the task graph)."""
    from ._problem import MatrixCompletion

    if isinstance(problem, DaskMatrixCompletion):
        return problem
    if isinstance(problem, MatrixCompletion):
        return DaskMatrixCompletion.from_problem(problem)
    raise TypeError(f"problem must be a MatrixCompletion or DaskMatrixCompletion; got {type(problem).__name__}")


def _check_client(client, stack):
    """A running ``distributed.Client``; a scheduler address is connected to for this solve only."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover
        raise ImportError("client= needs the optional extra numopt[dask] (dask, distributed)") from exc
    if isinstance(client, str):
        try:
            client = stack.enter_context(Client(client, set_as_default=False, timeout="20s"))
        except OSError as exc:
            raise ValueError(f"client: cannot connect to the Dask scheduler at {client!r} ({exc})") from None
    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client or a scheduler address; got {type(client).__name__}")
    if client.status != "running":
        raise ValueError(f"client is not running (status {client.status!r})")
    return client


class _Cluster:
    """The per-solve view of the data on the cluster plus the byte accounting of the driver."""

    def __init__(self, client, lay, dtype):
        self.client = client
        self.lay = lay
        self.dtype = dtype
        self.bytes = 0                           # driver <-> workers, both directions
        self.bytes_in = 0                        # workers -> driver (also counted by the workers as sent)
        self.n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        self.row_blocks, self.col_blocks = lay.row_blocks, lay.col_blocks     # replaced by centred copies

    def blocks(self, by_row):
        lay = self.lay
        return (self.row_blocks, lay.row_bounds) if by_row else (self.col_blocks, lay.col_bounds)

    def broadcast(self, arr):
        self.bytes += arr.nbytes
        # one copy on one worker; the others fetch it once (peer to peer) when their first block needs it.
        # (``broadcast=True`` would make the scheduler retry a dead worker forever.)
        return self.client.scatter(arr, hash=False)

    def received(self, *arrays):
        nb = sum(a.nbytes for a in arrays if a is not None)
        self.bytes += nb
        self.bytes_in += nb

    def run(self, func, blocks, args_of=lambda i: (), shared=()):
        """``[func(block, *args_of(i), *shared) for each block]`` on the worker that holds the block.

        Tasks are pinned to the block's holder (so work stealing never ships a block of Omega to another
        worker); the ``shared`` arrays (a factor) are scattered once per attempt and fetched peer to peer.
        """
        client = self.client

        def make():
            sh = [self.broadcast(a) for a in shared]
            holders = client.who_has(blocks)
            futures, pinned = [], set()
            for i, b in enumerate(blocks):
                w = sorted(holders.get(b.key, ()))
                pinned.update(w[:1])
                where = dict(workers=w[:1], allow_other_workers=False) if w else {}
                futures.append(client.submit(func, b, *args_of(i), *sh, pure=False, **where))
            return futures, pinned

        return _gather_robust(client, make)

    def derive(self, func, blocks, args_of):
        """Futures of ``func(block, *args_of(i))`` next to each block (kept on the workers, with lineage)."""
        holders = self.client.who_has(blocks)
        out = []
        for i, b in enumerate(blocks):
            w = sorted(holders.get(b.key, ()))[:1]
            where = dict(workers=w, allow_other_workers=True) if w else {}
            out.append(self.client.submit(func, b, *args_of(i), pure=False, **where))
        return out


def _concat(chunks):
    return np.concatenate(chunks, axis=0)


def _svd_init(cl, G, k, scale, split_of, n_power_iter):
    r"""Top-k left singular vectors and values of ``scale * P_{Omega_0}(M)`` (randomized, distributed).

    The same subspace iteration as the single-machine initialization, from the same Gaussian test
    matrix (drawn here from the same generator state): :math:`Q = \mathrm{qr}(AG)`, then
    ``n_power_iter`` times :math:`Z = \mathrm{qr}(A^TQ)`, :math:`Q = \mathrm{qr}(AZ)`; finally the SVD
    of :math:`B^T = A^TQ = u s v^T` gives :math:`U_0 = Q v_{:, :k}`. The products are blockwise sparse
    products on the workers (row blocks for :math:`A\,\cdot`, column blocks for :math:`A^T\cdot`),
    the QRs and the SVD are :func:`dask.array.linalg.tsqr` on the resulting tall-skinny
    :math:`m\times(k+10)` / :math:`n\times(k+10)` arrays. The whole iteration is one task graph.
    """
    import dask
    import dask.array as da

    ell = G.shape[1]

    holders = cl.client.who_has(cl.blocks(True)[0] + cl.blocks(False)[0])

    def product(by_row, F):
        blocks, bounds = cl.blocks(by_row)
        split = split_of(by_row)
        parts = []
        for i, b in enumerate(blocks):
            w = sorted(holders.get(b.key, ()))[:1]
            with dask.annotate(**(dict(workers=w, allow_other_workers=True) if w else {})):   # run by the block
                d = dask.delayed(_matmul_task, pure=True)(b, F, scale, split)
            parts.append(da.from_delayed(d, shape=(int(bounds[i + 1] - bounds[i]), ell), dtype=np.float64))
        return da.concatenate(parts, axis=0)

    def whole(X):                                # one worker concatenates; the others fetch it from there
        return dask.delayed(_concat, pure=True)(list(X.to_delayed().ravel()))

    Q, _ = da.linalg.tsqr(product(True, cl.broadcast(G)))
    for _ in range(n_power_iter):
        Z, _ = da.linalg.tsqr(product(False, whole(Q)))
        Q, _ = da.linalg.tsqr(product(True, whole(Z)))
    _, s, vh = da.linalg.tsqr(product(False, whole(Q)), compute_svd=True)
    U0 = Q @ vh[:k].T
    U0, s = cl.client.compute([U0, s[:k]], sync=True)
    cl.received(U0)
    return U0, s


# --------------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------------
def minimize_altmin_dask(problem, x0=None, *, client, callback=None, solver="auto", init="svd", clip=True, mu=None,
                         sample_split=False, reg_scaling="none", center="none", maxiter=100, tol=1e-9, xtol=1e-9,
                         atol=1e-12, inner_tol=1e-10, cg_steps=3, sketch_size=None, sketch_nnz=8, n_power_iter=4,
                         workers=None, random_state=None, verbose=False, progress=False):
    r"""Robust alternating minimization with the data on a Dask cluster.

    Same objective, options, iterates and result as :func:`numopt.completion.minimize_altmin` (see
    there for the math); the difference is where the work runs. The row problems of each half-step,

    .. math::

        u_i = \arg\min_u \|V_{\Omega_i}u - M_{i,\Omega_i}\|^2 + \lambda c_i\|u\|^2,

    are solved by the workers that hold the rows' data (CSR row blocks for the U-step, CSC column
    blocks for the V-step), after the fixed factor has been broadcast to them. The driver holds the
    factors and does the small dense steps.

    Parameters
    ----------
    problem : DaskMatrixCompletion or MatrixCompletion
        An in-memory problem is split into partitions embedded in the task graph.
    x0 : (U, V) or packed array, optional
    client : distributed.Client or str
        The cluster to run on (or its scheduler address, connected to for this solve).

    Options
    -------
    As :func:`numopt.completion.minimize_altmin`. ``workers`` is ignored (each Dask worker uses its own
    thread count for the compiled kernels).

    Returns
    -------
    OptimizeResult
        As the single-machine solver, plus ``bytes_per_iter`` (bytes the driver scattered and gathered
        per iteration: factors only), ``bytes_in_per_iter`` (the gathered part), ``n_workers`` and
        ``row_blocks``/``col_blocks``; ``history["bytes_moved"]`` per iteration.
    """
    import contextlib

    from ._altmin import _check_options, _threads

    problem = _to_problem(problem)
    opts, _ = _check_options(problem, solver, init, clip, mu, sample_split, reg_scaling, center, maxiter, tol, xtol,
                             atol, inner_tol, cg_steps, sketch_size, sketch_nnz, n_power_iter, workers, random_state)
    with contextlib.ExitStack() as stack:
        client = _check_client(client, stack)
        stack.enter_context(_threads(None))     # BLAS on one thread for the driver's QRs, as on one machine
        return _solve(problem, x0, client, callback, verbose, progress, **opts)


class _DaskRows:
    """Half-step backend of the Dask solver: broadcast the fixed factor, solve every block's rows on its
    worker, gather the new factor (plus the byte accounting of the history and the result)."""

    def __init__(self, cl, split_of, m, kw):
        self.cl, self.split_of, self.m, self.kw = cl, split_of, m, kw
        self.bytes_hist, self.bytes_in_hist = [], []

    def solve(self, part, by_row, fixed, warm, solver=None):
        cl = self.cl
        blocks, bounds = cl.blocks(by_row)
        split = self.split_of(part)(by_row)
        task_kw = dict(self.kw, shift=0 if by_row else self.m, by_row=by_row)
        if solver is not None:                   # the measured choice of "auto"
            task_kw["solver"] = solver
        # theory mode: the U-step saw one part of Omega, so the blocks also run a residual pass on all of it
        residual = by_row and split is not None
        out = cl.run(_solve_task, blocks, lambda i: (None if warm is None else warm[bounds[i]:bounds[i + 1]],
                                                     dict(task_kw), split, residual), shared=(fixed,))
        if warm is not None:
            cl.bytes += warm.nbytes
        sols = [o[0] for o in out]
        for sol, res in out:
            cl.received(*sol, res)
        sol = type(sols[0])(*[np.concatenate(f) for f in zip(*sols)])       # the whole factor's solution
        res = np.concatenate([o[1] for o in out]) if residual else None
        return sol, res

    def sample(self, part, by_row, n_sample):
        """Evenly spaced rows of the first block of the half-step (fetched from its worker), for "auto"."""
        cl = self.cl
        blocks, _ = cl.blocks(by_row)
        out = cl.run(_sample_task, blocks[:1], lambda i: (self.split_of(part)(by_row), n_sample))[0]
        cl.received(*out)
        return out

    def begin_iter(self):
        self.b0, self.i0 = self.cl.bytes, self.cl.bytes_in

    def end_iter(self, fields):
        fields["bytes_moved"] = self.cl.bytes - self.b0
        self.bytes_hist.append(self.cl.bytes - self.b0)
        self.bytes_in_hist.append(self.cl.bytes_in - self.i0)

    def result_extra(self):
        cl = self.cl
        return dict(bytes_per_iter=float(np.mean(self.bytes_hist)),
                    bytes_in_per_iter=float(np.mean(self.bytes_in_hist)),
                    n_workers=cl.n_workers, row_blocks=len(cl.lay.row_blocks), col_blocks=len(cl.lay.col_blocks))


def _solve(problem, x0, client, callback, verbose, progress, *, solver, init, clip, mu, sample_split, reg_scaling,
           center, maxiter, tol, xtol, atol, inner_tol, cg_steps, sketch_size, sketch_nnz, n_power_iter, rng):
    from ._altmin import _init_factors, _run, _solve_kw

    m, n = problem.shape
    k = problem.rank
    seed = int(rng.integers(0, 2**62))
    lam = problem.reg
    dtype = problem.dtype

    mon = Monitor("altmin", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    t_init = time.perf_counter()
    lay = problem.layout(client)                 # read + check + block the partitions (once per client)
    cl = _Cluster(client, lay, dtype)
    nnz = lay.nnz
    row_counts, col_counts = lay.row_counts, lay.col_counts

    # ---- centring (global mean, alternating ridge means for the biases) ---------------------------
    gmean, bu, bv = 0.0, np.zeros(m), np.zeros(n)
    row_blocks, col_blocks = lay.row_blocks, lay.col_blocks
    if center != "none":
        sums = cl.run(_value_stats, row_blocks)
        gmean = float(sum(s[0] for s in sums)) / nnz
        if center == "biases":
            du, dv = row_counts.astype(np.float64), col_counts.astype(np.float64)
            for _ in range(10):
                num = cl.run(_bias_numerators, row_blocks, lambda i: (gmean,), shared=(bv,))
                bu = np.concatenate(num) / (du + lam + (du == 0))
                num = cl.run(_bias_numerators, col_blocks, lambda i: (gmean,), shared=(bu,))
                bv = np.concatenate(num) / (dv + lam + (dv == 0))
        # centred copies, built on the workers from the persisted blocks (the biases ride in the task)
        rb, cb = lay.row_bounds, lay.col_bounds
        row_blocks = cl.derive(_center_block, lay.row_blocks,
                               lambda i: (gmean, bu[rb[i]:rb[i + 1]], bv, dtype, True))
        col_blocks = cl.derive(_center_block, lay.col_blocks,
                               lambda i: (gmean, bv[cb[i]:cb[i + 1]], bu, dtype, False))
    cl.row_blocks, cl.col_blocks = row_blocks, col_blocks
    stats = cl.run(_value_stats, row_blocks)
    ref_norm = float(np.sqrt(sum(s[1] for s in stats))) or 1.0

    nparts = 2 * maxiter + 1

    def split_of(part):
        def of(by_row):
            return (seed, nparts, part, n, by_row) if sample_split else None
        return of

    # ---- initialization -------------------------------------------------------------------------
    def top_svd():
        sizes = cl.run(_abs_sum, row_blocks, lambda i: (split_of(0)(True),))
        p0 = max(sum(s[1] for s in sizes), 1) / (m * n)
        G = rng.standard_normal((n, min(k + 10, min(m, n))))       # the single-machine test matrix
        return _retry(lambda: _svd_init(cl, G, k, 1.0 / p0, split_of(0), n_power_iter))

    def random_scale():
        sums = cl.run(_abs_sum, row_blocks, lambda i: (None,))
        return np.sqrt(sum(s[0] for s in sums) / nnz / k) if nnz else 1.0

    U, V, warm_v, n_clipped = _init_factors(x0, m, n, k, dtype, lam, init, clip, mu, rng, top_svd, random_scale)
    init_time = time.perf_counter() - t_init

    kw = _solve_kw(lam, reg_scaling, solver, inner_tol, cg_steps, sketch_size, sketch_nnz, seed)
    return _run(_DaskRows(cl, split_of, m, kw), problem, mon, U, V, warm_v, lam=lam, dtype=dtype,
                reg_scaling=reg_scaling, sample_split=sample_split, maxiter=maxiter, tol=tol, xtol=xtol, atol=atol,
                nnz=nnz, ref_norm=ref_norm, row_counts=row_counts, col_counts=col_counts,
                result_keys=dict(global_mean=gmean, row_bias=bu if center == "biases" else None,
                                 col_bias=bv if center == "biases" else None, n_clipped=n_clipped,
                                 init_time=init_time))
