"""Greedy block coordinate descent (Nutini, Laradji & Schmidt, JMLR 2022): the ``method="bcd"`` solver.

The main loop reads like the paper: pick a block ``b`` by a (greedy) rule over the maintained gradient,
update ``x_b`` by a gradient, matrix, Newton or forest (message-passing) step, keep ``g`` current on the
touched rows, check for convergence once per epoch. L1 / sign-constrained generalized linear problems
take the proximal path of :mod:`numopt.bcd._prox` (greedy GS-q blocks grown over the support, block
proximal-Newton updates) unless another update is asked for.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from .._cy import _bcd as cy
from .._monitor import Monitor
from .._threads import single_thread_blas
from .._validation import as_float_array, check_choice, check_int, check_positive, check_random_state
from ..problems import FunctionProblem
from . import _kernels as K
from ._problem import Quadratic, _GLM
from ._prox import solve_prox
from ._state import FunState, GLMState, QuadState

SELECTIONS = ("auto", "cyclic", "random", "lipschitz", "gs", "gsl", "gsd", "gsq")
PARTITIONS = ("auto", "variable", "order", "avg", "sort", "tree", "red-black")
UPDATES = ("auto", "gradient", "gradient-ls", "lipschitz", "newton", "tree-newton", "pg", "pn", "tmp")


def minimize_bcd(problem, x0=None, *, callback=None, selection="auto", partition="auto", block_size=None,
                 update="auto", tol=1e-6, maxiter=10000, check_every=None, f_target=None, target_tol=1e-8,
                 p0=10, inner="auto", max_inner=1_000_000, relax="auto", random_state=None, verbose=False,
                 progress=False):
    r"""Greedy block coordinate descent.

    Minimizes :math:`F(x) = f(x) + \sum_i \psi_i(x_i)` (``f`` smooth convex, ``psi_i`` zero, ``l1 |x_i|``
    or ``l1 x_i + iota(x_i >= 0)``) by changing one block ``b`` of coordinates per iteration. With
    ``g = nabla f(x)``, coordinate constants ``L_i`` and block bounds :math:`\nabla^2_{bb} f \preceq H_b`:

    * **selection** (variable blocks: the top-``block_size`` coordinates of the score; fixed blocks: the
      best block): ``gs`` :math:`|g_i|`, ``gsl`` :math:`|g_i|/\sqrt{L_i}`, ``gsd`` :math:`|g_i|/\sqrt{D_i}`
      with :math:`D_i = \sum_j |H_{ij}|` (diagonal dominance), ``gsq`` :math:`g_b^T H_b^{-1} g_b`
      (IHT approximation on variable blocks; with ``psi != 0`` the proximal GS-q rule: most negative
      :math:`q_i = \min_d g_i d + \tfrac{L_i}{2} d^2 + \psi_i(x_i + d) - \psi_i(x_i)`), ``cyclic``,
      ``random``, ``lipschitz`` (:math:`P(i) \propto L_i`).
    * **update**: ``gradient`` :math:`x_b \leftarrow x_b - g_b / L_b` (:math:`L_b = \lambda_{max}(H_b)`),
      ``gradient-ls`` (backtracked :math:`L_b`, stored per coordinate; for callables -- problems with a known
      bound use ``gradient``'s exact :math:`L_b`), ``lipschitz`` :math:`x_b \leftarrow x_b - H_b^{-1} g_b`,
      ``newton`` (true block Hessian with Armijo backtracking), ``tree-newton`` (exact solve on a forest
      block of a sparse quadratic in O(|b|), by leaf-to-root elimination), ``pg`` (block proximal gradient),
      ``pn`` (block proximal Newton: the block's L1-quadratic model solved by greedy coordinate descent),
      ``tmp`` (two-metric projection for ``nonneg`` problems: Newton direction on the free coordinates of the
      block, scaled gradient on those held at zero, projected backtracking).

    Stops at the first of: relative duality gap <= ``tol`` for L1 least squares / logistic (scikit-learn's
    Lasso rule: gap / ||b||^2; logistic: gap / (n log 2)); otherwise KKT residual
    :math:`\rho(x) = \max_i L_i |d_i|` (:math:`\|g\|_\infty` when smooth) <= ``tol * max(1, rho(x0))``;
    ``F - f_target <= target_tol``; ``maxiter``; the callback raising ``StopIteration``.

    Options
    -------
    selection : str
        ``auto`` picks ``gsq`` (proximal GS-q) when ``psi != 0`` and ``gsd`` otherwise.
    partition : str
        ``variable`` (fresh greedy blocks each iteration), fixed blocks ``order``, ``avg``, ``sort``
        (sorted by ``L_i``), or for quadratics the fixed forest partitions ``tree`` and ``red-black``.
        ``auto`` (default): ``tree`` for a sparse ``Quadratic``/``LabelPropagation`` solved by tree-Newton with
        the ``auto`` or ``cyclic`` selection (with ``relax="auto"``: 37-350x faster than fresh greedy forests on
        50^2-200^2 label-propagation lattices, and faster than CG at 10^6 nodes; see docs/bcd.md), else
        ``variable``.
    block_size : int or None
        ``tau``; default ``min(p, 50)`` (no cap for ``tree-newton`` blocks).
    update : str
        ``auto``: ``pn`` when ``psi != 0``, ``lipschitz`` (= exact) for least squares, ``newton`` for
        logistic/softmax, ``tree-newton`` for ``Quadratic``/``LabelPropagation``, ``gradient-ls`` for a callable.
    tol : float
        Relative gap / KKT tolerance.
    maxiter : int
        Maximum number of block updates.
    check_every : int or None
        Recompute the state from scratch every this many iterations (default one epoch ``ceil(p / tau)``).
    f_target, target_tol : float
        Stop when ``F - f_target <= target_tol`` (the paper's rule with a known ``f*``).
    p0 : int
        Smallest greedy block of the proximal path (it grows to ``2 |supp|``).
    inner : str
        Coordinate rule of the block subproblem solver of ``pn``: ``gsq`` (greedy), ``cyclic``, or ``auto``
        (greedy up to 256 coordinates, cyclic above: the greedy ranking costs O(|b|) per update).
    max_inner : int
        Cap on coordinate updates per block subproblem.
    relax : "auto" or float in (0, 2)
        Step ``omega`` of the exact block update on *fixed* forest partitions (``partition="tree"`` or
        ``"red-black"`` with ``update="tree-newton"``): :math:`x_b \leftarrow x_b + \omega (x_b^\star - x_b)`,
        :math:`x_b^\star` the block minimizer. Every such step lowers F by
        :math:`\omega(2-\omega)/2\, d_b^T Q_{bb} d_b`. ``1`` is plain BCD (the paper's rule, O(kappa) sweeps);
        ``"auto"`` starts at 1 and raises ``omega`` towards Young's optimum :math:`2/(1+\sqrt{1-\mu^2})` from the
        observed contraction of the sweeps (Hageman-Young), which for a two-forest partition cuts the sweeps to
        O(sqrt(kappa)); elsewhere ``"auto"`` means 1. On this path the stop test (one product with Q) runs every
        ``check_every`` block updates (default: predicted from the observed contraction, at most 10 sweeps)
        and the history and callback see only those checks.
    random_state : None, int or Generator
        Seed of ``random``/``lipschitz``/``cyclic`` selection.
    verbose, progress : bool
        Log lines through ``logging.getLogger("numopt.bcd")`` / a tqdm bar.

    Returns
    -------
    OptimizeResult
        ``x``, ``fun``, ``nit``, ``history`` (``fun``, ``time``, ``kkt``; ``gap`` and ``active_set_size`` for
        L1 problems); extras ``rel_gap``, ``active_set_iter`` (iteration where the zero set last changed).

    References
    ----------
    J. Nutini, I. Laradji, M. Schmidt. Let's Make Block Coordinate Descent Converge Faster. JMLR 23(131), 2022.
    """
    check_choice(selection, "selection", SELECTIONS)
    check_choice(partition, "partition", PARTITIONS)
    check_choice(update, "update", UPDATES)
    check_choice(inner, "inner", ("auto", "gsq", "cyclic"))
    tol = check_positive(tol, "tol", strict=False)
    maxiter = check_int(maxiter, "maxiter", min_value=0)
    block_size = check_int(block_size, "block_size", min_value=1, allow_none=True)
    check_every = check_int(check_every, "check_every", min_value=1, allow_none=True)
    p0 = check_int(p0, "p0", min_value=1)
    max_inner = check_int(max_inner, "max_inner", min_value=1)
    if isinstance(relax, str):
        check_choice(relax, "relax", ("auto",))
    else:
        relax = float(as_float_array(relax, "relax", ndim=0))
        if not 0.0 < relax < 2.0:
            raise ValueError(f"relax must be 'auto' or a number in (0, 2); got {relax}")
    if f_target is not None:
        f_target = float(as_float_array(f_target, "f_target", ndim=0))
    target_tol = check_positive(target_tol, "target_tol", strict=False)
    # a fresh OS-seeded generator costs ~0.1-0.5 ms: only the generic loop (random/cyclic rules) builds one
    rng = None if random_state is None else check_random_state(random_state)

    if isinstance(problem, FunctionProblem):
        x = problem.x0.copy() if x0 is None else as_float_array(x0, "x0", shape=problem.x0.shape, dtype=np.float64,
                                                                   copy=True)
    else:
        shape = problem.x_shape
        x = np.zeros(shape) if x0 is None else as_float_array(x0, "x0", shape=shape, dtype=np.float64, copy=True)
        if getattr(problem, "nonneg", False) and np.any(x < 0):
            raise ValueError("x0 must be >= 0 for a problem with nonneg=True")
    prox = getattr(problem, "has_prox", False)
    quad = isinstance(problem, Quadratic)
    if partition in ("tree", "red-black") and not quad:
        raise ValueError(f"partition={partition!r} needs a Quadratic or LabelPropagation problem")
    if partition == "auto":
        # measured: cycling a fixed two-forest partition beats fresh greedy forests by orders of magnitude on
        # sparse graphs; an explicit greedy selection rule asks for greedy (variable) forests
        sparse_graph = quad and problem.Q.nnz <= min(32 * problem.Q.shape[0], problem.Q.shape[0] ** 2 / 4)
        partition = ("tree" if sparse_graph and update in ("auto", "tree-newton") and selection in ("auto", "cyclic")
                     else "variable")
    if selection == "auto":
        selection = "gsq" if prox else "gsd"
    if update == "auto":
        if isinstance(problem, FunctionProblem):
            update = "gradient-ls"
        elif prox:
            update = "pn"
        elif quad:
            update = "tree-newton"
        else:
            update = "lipschitz" if problem.datafit.name == "squared" else "newton"
    if prox and update not in ("pg", "pn", "tmp"):
        raise ValueError(f"update={update!r} is smooth; with l1 > 0 or nonneg use 'pn', 'pg' or 'tmp'")
    if update == "tmp" and not getattr(problem, "nonneg", False):
        raise ValueError("update='tmp' (two-metric projection) needs a problem with nonneg=True")
    if not prox and update in ("pg", "pn"):
        update = "lipschitz" if update == "pn" else "gradient"
    if update == "tree-newton" and not quad:
        raise ValueError("update='tree-newton' needs a Quadratic or LabelPropagation problem")
    if update == "tree-newton" and partition not in ("variable", "tree", "red-black"):
        raise ValueError(f"update='tree-newton' needs forest blocks: partition 'variable', 'tree' or 'red-black'; "
                         f"got {partition!r}")
    fixed_forest = update == "tree-newton" and partition in ("tree", "red-black") and selection != "random"
    if relax != "auto" and relax != 1.0 and not fixed_forest:
        raise ValueError("relax != 1 needs fixed forest blocks: update='tree-newton' with partition 'tree' or "
                         "'red-black' (cyclic)")
    if isinstance(problem, FunctionProblem) and update not in ("gradient", "gradient-ls"):
        raise ValueError(f"a callable supports update='gradient' or 'gradient-ls'; got {update!r}")
    if isinstance(problem, FunctionProblem) and selection in ("gsd", "gsq"):
        selection = "gsl"  # no Hessian information: rank by the backtracked L_i

    mon = Monitor("bcd", callback=callback, verbose=verbose, progress=progress, maxiter=maxiter)
    if prox and update == "pn" and partition == "variable" and selection == "gsq" and isinstance(problem, _GLM):
        x, converged, extra = solve_prox(problem, x.ravel(), mon, tol=tol, maxiter=maxiter, p0=p0, inner=inner,
                                         max_inner=max_inner, f_target=f_target, target_tol=target_tol)
        fun = extra.pop("fun")
        return mon.result(x, converged=converged, fun=fun, **extra)

    if isinstance(problem, FunctionProblem):
        st = FunState(problem, x)
    elif quad:
        st = QuadState(problem, x)
    else:
        st = GLMState(problem, x.ravel())
    if fixed_forest:
        with single_thread_blas():  # the few dot products here are O(p); threaded BLAS only spins
            x, converged, extra = _fixed_forest(problem, st, mon, partition=partition, relax=relax, tol=tol,
                                                maxiter=maxiter, check_every=check_every, f_target=f_target,
                                                target_tol=target_tol)
        fun = extra.pop("fun")
        return mon.result(x, converged=converged, fun=fun, **extra)
    tau = min(st.size, block_size if block_size is not None else (st.size if update == "tree-newton" else 50))
    with _single_thread_blas(tau):
        x, converged, extra = _classic(problem, st, mon, selection=selection, partition=partition, tau=tau,
                                       update=update, prox=prox, tol=tol, maxiter=maxiter, check_every=check_every,
                                       f_target=f_target, target_tol=target_tol, inner=inner, max_inner=max_inner,
                                       rng=rng if rng is not None else check_random_state(None))
    fun = extra.pop("fun")
    _warn_separable(problem, fun)
    return mon.result(x, converged=converged, fun=fun, **extra)


def _warn_separable(problem, fun):
    """Unregularized logistic/softmax on separable data has no minimizer: the loss only tends to 0."""
    if isinstance(problem, _GLM) and problem.datafit.name != "squared" and problem.l1 == 0 and problem.l2 == 0:
        if fun < 1e-6 * problem.gap_scale:
            import warnings
            from ..exceptions import OptimizeWarning
            warnings.warn("bcd: the loss is ~0: the classes look separable, so no finite minimizer exists and "
                          "||x|| grows without bound; add l2 > 0 (or l1 > 0)", OptimizeWarning, stacklevel=4)


def _single_thread_blas(tau):
    """Small block products run faster on one BLAS thread; threaded BLAS on tiny matrices can spin for
    milliseconds per call on a busy machine (measured: 13x slower on a loaded 2-core box)."""
    return single_thread_blas(tau <= 256)


# --------------------------------------------------------------------------------------------------
# the generic loop: one block per iteration over a maintained gradient
# --------------------------------------------------------------------------------------------------
def _classic(pb, st, mon, *, selection, partition, tau, update, prox, tol, maxiter, check_every, f_target,
             target_tol, inner, max_inner, rng):
    P = st.size
    L = st.L
    l1 = getattr(pb, "l1", 0.0)
    nonneg = getattr(pb, "nonneg", False)
    fun_pb = isinstance(st, FunState)
    quad = isinstance(st, QuadState)
    D = st.dominance_bound() if (selection == "gsd" and not fun_pb) else None
    blocks = None
    if partition != "variable":
        blocks = _make_partition(st, partition, tau)
    block_chol = {}
    iht_mu = None
    perm, perm_pos = None, 0
    fb_next = 0
    # one epoch; forest blocks are epochs by themselves, so refresh (one full matvec) every 10 of them
    check_every = check_every or max(len(blocks) if blocks else -(-P // tau), 10 if update == "tree-newton" else 1)
    dvec = np.empty(P)
    qvec = np.empty(P)
    parent = np.arange(P, dtype=np.int64)
    inblock = np.zeros(P, dtype=np.int8)
    pos = np.full(P, -1, dtype=np.int64)
    forest_buf = np.empty(P, dtype=np.int64)

    def kkt():
        if prox:
            return K.prox_scores(st.g, st.x, L, l1, nonneg, dvec, qvec)
        return float(np.abs(st.g).max()) if P else 0.0

    F = st.value()
    rho0 = max(1.0, kkt())
    mon.history.update(fun=[F], kkt=[kkt()], time=[0.0])
    if prox:
        mon.history["active_set_size"] = [int(P - np.count_nonzero(st.x))]
    converged = False
    zero_set = None
    active_iter = 0
    for it in range(1, maxiter + 1):
        g = st.g
        # ---------------- selection ----------------
        if update == "tree-newton" and blocks is None:
            b = _greedy_tree(st, selection, tau, rng, D, parent, inblock, forest_buf)
        elif blocks is not None:
            if selection == "cyclic" or partition in ("tree", "red-black") and selection != "random":
                b = blocks[fb_next % len(blocks)]
                fb_next += 1
            elif selection == "random":
                b = blocks[rng.integers(len(blocks))]
            elif selection == "lipschitz":
                w = np.array([L[bb].sum() for bb in blocks])
                b = blocks[rng.choice(len(blocks), p=w / w.sum())]
            else:
                b = blocks[int(np.argmax(_block_scores(st, blocks, selection, prox, L, D, dvec, qvec,
                                                        block_chol)))]
        else:
            if selection == "cyclic":
                if perm is None or perm_pos >= P:
                    perm, perm_pos = rng.permutation(P), 0
                b = np.sort(perm[perm_pos:perm_pos + tau])
                perm_pos += tau
            elif selection == "random":
                b = np.sort(rng.choice(P, tau, replace=False))
            elif selection == "lipschitz":
                pr = L / L.sum() if L.sum() > 0 else None
                b = np.sort(rng.choice(P, tau, replace=False, p=pr)) if np.count_nonzero(L) >= tau else \
                    np.flatnonzero(L)
            elif selection == "gsq" and not prox:
                if iht_mu is None:
                    iht_mu = 1.0 / _lambda_max(st)
                b = _iht_block(st, g, L, tau, iht_mu)
            else:
                b = K.top_k(_scores(st, selection, prox, L, D, dvec, qvec), tau)
        if b.size == 0:
            converged = kkt() <= tol * rho0
            break
        # ---------------- update ----------------
        F = _update(pb, st, b, update, prox, F, L, l1, nonneg, inner, max_inner)
        # ---------------- bookkeeping / stop tests ----------------
        if it % check_every == 0:
            st.refresh()
            F = st.value()
        rho = kkt()
        rec = dict(fun=F, kkt=rho)
        if prox:
            zs = st.x == 0
            rec["active_set_size"] = int(zs.sum())
            if zero_set is None or not np.array_equal(zs, zero_set):
                zero_set, active_iter = zs, it
        if mon.step(st.x, **rec):
            break
        if rho <= tol * rho0 or (f_target is not None and F - f_target <= target_tol):
            st.refresh()
            rho = kkt()
            F = st.value()
            if rho <= tol * rho0 or (f_target is not None and F - f_target <= target_tol):
                converged = True
                break
    extra = dict(fun=st.value(), kkt=kkt())
    if prox:
        extra["active_set_iter"] = active_iter
    x = st.x.reshape(pb.x_shape) if hasattr(pb, "x_shape") else st.x
    return x.copy(), converged, extra


# --------------------------------------------------------------------------------------------------
# fixed forest partitions: factor each forest block once, cycle (relaxed) exact block solves in Cython
# --------------------------------------------------------------------------------------------------
_EMPTY_F64 = np.zeros(0)


class ForestCycle:
    """A fixed forest partition of a sparse SPD ``Q``, factored once, in the *sweep numbering*.

    Each block's elimination comes from ``forest_factor``; the variables are then renumbered block after
    block in each block's parents-first, near-natural order, so that a sweep (``forest_sweep``) and the stop test's
    gradient (``forest_grad``) read every array in order. ``perm[k]`` is the original index of sweep
    position ``k``.
    """

    def __init__(self, Q, blocks):
        P = Q.shape[0]
        if P >= np.iinfo(np.int32).max or Q.nnz >= np.iinfo(np.int32).max:
            raise ValueError("forest sweeps support fewer than 2**31 variables and nonzeros")
        pos = np.full(P, -1, dtype=np.int64)
        facs = []
        for b in blocks:
            status, *fac = cy.forest_factor(Q.indptr, Q.indices, Q.data, np.asarray(b, dtype=np.int64), pos)
            if status != 0:
                raise ValueError("Q is not positive definite: a non-positive pivot occurred in a forest solve")
            facs.append(fac)
        self.perm = np.concatenate([f[0] for f in facs]) if facs else np.zeros(0, dtype=np.int64)
        inv = np.empty(P, dtype=np.int64)
        inv[self.perm] = np.arange(P)
        self.blocks = []
        off = 0
        for order, par, wpar, _lw, ipiv, ptr, idx, val, diag in facs:
            # one weight on every outside coupling (unweighted graphs): the sweep reads a scalar instead
            const = float(val[0]) if val.size and np.all(val == val[0]) else None
            self.blocks.append((par.astype(np.int32), wpar, ipiv, diag, ptr.astype(np.int32),
                                inv[idx].astype(np.int32), val, off, const))
            off += order.size
        self.work = np.empty(max((f[0].size for f in facs), default=0))

    def sweep(self, k, c, x, omega):
        """Relaxed exact update of block ``k`` (permuted ``c``, ``x``); returns the squared step norm."""
        par, wpar, ipiv, _diag, ptr, idx, val, off, const = self.blocks[k]
        if const is not None:
            return cy.forest_sweep(par, wpar, ipiv, ptr, idx, _EMPTY_F64, c, x, off, self.work, omega, const)
        return cy.forest_sweep(par, wpar, ipiv, ptr, idx, val, c, x, off, self.work, omega)

    def gradient(self, c, x, g):
        """``g = Q x - c`` in the sweep numbering."""
        for par, wpar, _ipiv, diag, ptr, idx, val, off, _const in self.blocks:
            cy.forest_grad(par, wpar, diag, ptr, idx, val, c, x, off, g)
        return g


def _fixed_forest(pb, st, mon, *, partition, relax, tol, maxiter, check_every, f_target, target_tol):
    """Cyclic tree-Newton BCD over a fixed forest partition (brief section 2.3), optionally over-relaxed.

    Each block ``Q_bb`` is a forest, so its elimination (pivots, order, couplings to the other blocks) is
    computed once (:class:`ForestCycle`); an update is then one streaming O(|b| + couplings) pass in Cython
    with no Python per node. With ``relax="auto"`` the step ``omega`` follows Young's SOR theory for the block
    Jacobi spectral radius ``mu``: the sweep changes ``delta_k = |x^k - x^(k-1)|`` contract at ``lam`` with
    ``(lam + omega - 1)^2 = lam omega^2 mu^2`` while ``omega`` is below the optimum, which gives ``mu`` and the
    optimal ``omega = 2 / (1 + sqrt(1 - mu^2))`` (exact for two blocks: every 2-block partition is
    consistently ordered; with more blocks, a raise after which the sweeps contract more slowly is undone and
    adaptation stops). ``omega`` is only raised, and only while ``lam > (omega - 1)^0.75`` (Hageman & Young's test that the optimum has not been reached);
    each estimate of ``1 - mu^2`` is shrunk by 30% (see below).
    """
    fc = ForestCycle(st.Q, _make_partition(st, partition, None))
    perm = fc.perm
    c = pb.c[perm]
    x = st.x[perm]
    g = st.g[perm]
    nb = len(fc.blocks)

    def value():
        return 0.5 * float(x @ (g - c))

    omega = 1.0 if relax == "auto" else relax
    adapt = relax == "auto"
    back = None  # (omega, contraction) before the last raise: the fallback if raising made things worse
    F = value()
    rho = float(np.abs(g).max()) if g.size else 0.0
    rho0 = max(1.0, rho)
    mon.history.update(fun=[F], kkt=[rho], time=[0.0], omega=[omega])
    converged = rho <= tol * rho0
    fresh = True
    it = 0
    since_check = 0
    next_check = check_every or nb
    prev = lam = lam_prev = None
    since_change = 0
    k = 0  # position in the cycle of blocks
    dd = 0.0
    xout = st.x
    while not converged and it < maxiter:
        dd += fc.sweep(k, c, x, omega)
        fresh = False
        it += 1
        since_check += 1
        k += 1
        if k == nb:  # end of a sweep: its contraction drives omega
            k = 0
            delta = np.sqrt(dd)
            dd = 0.0
            since_change += 1
            if prev:
                lam = delta / prev
                if (adapt and back is not None and since_change >= 3 and abs(lam - lam_prev) < 0.1 * (1.0 - lam)
                        and lam > back[1]):
                    # Young's theory is exact for two blocks only (every 2-block partition is consistently
                    # ordered); where the settled contraction got worse after a raise it does not hold: go back
                    # and keep that omega (measured: without this, omega reached 1.98 and stalled on a dense
                    # 5 x 5 quadratic split into three forests)
                    omega, adapt = back[0], False
                if (adapt and since_change >= 2 and lam_prev is not None and lam < 1.0
                        and abs(lam - lam_prev) < 0.1 * (1.0 - lam) and lam > (omega - 1.0) ** 0.75):
                    mu2 = ((lam + omega - 1.0) / (omega * np.sqrt(lam))) ** 2
                    # the observed ratio approaches the dominant one from below, so mu^2 is underestimated; and
                    # overshooting omega* costs less (rate omega - 1) than undershooting: lean upwards
                    mu2 = min(mu2 + 0.3 * (1.0 - mu2), 0.9999)
                    if mu2 < 1.0:
                        new = 2.0 / (1.0 + np.sqrt(1.0 - mu2))
                        if new > omega:
                            back = (omega, lam)
                            omega, since_change = new, 0
                lam_prev = lam
            prev = delta
        if since_check >= next_check or it == maxiter:
            fc.gradient(c, x, g)
            fresh = True
            F = value()
            rho = float(np.abs(g).max())
            n, since_check = since_check, 0
            xout[perm] = x
            if mon.step(xout, n=n, fun=F, kkt=rho, omega=omega):
                break
            converged = rho <= tol * rho0 or (f_target is not None and F - f_target <= target_tol)
            if check_every is None:
                # next stop test where the observed contraction predicts convergence (1 to 10 sweeps)
                sweeps = 10
                if lam is not None and 0.0 < lam < 1.0 and 0.0 < tol * rho0 < rho:
                    sweeps = int(np.clip(np.ceil(np.log(tol * rho0 / rho) / np.log(lam)), 1, 10))
                next_check = sweeps * nb
    if not fresh:
        fc.gradient(c, x, g)
    xout[perm] = x
    st.g[perm] = g
    return xout.copy(), converged, dict(fun=value(), kkt=float(np.abs(g).max()) if g.size else 0.0,
                                        omega=omega, n_blocks=nb)


def _scores(st, selection, prox, L, D, dvec, qvec):
    g = st.g
    if prox:
        K.prox_scores(g, st.x, L, st.pb.l1, st.pb.nonneg, dvec, qvec)
        if selection in ("gsq", "gsd"):
            return -qvec
        if selection == "gsl":
            return np.sqrt(L) * np.abs(dvec)
        return L * np.abs(dvec)
    with np.errstate(divide="ignore", invalid="ignore"):
        if selection == "gs":
            return np.abs(g)
        if selection == "gsl":
            return np.where(L > 0, np.abs(g) / np.sqrt(L), 0.0)
        if selection == "gsd":
            return np.where(D > 0, np.abs(g) / np.sqrt(D), 0.0)
    raise ValueError(f"selection {selection!r} has no coordinate score")


def _block_scores(st, blocks, selection, prox, L, D, dvec, qvec, chol):
    g = st.g
    if prox:
        K.prox_scores(g, st.x, L, st.pb.l1, st.pb.nonneg, dvec, qvec)
        return np.array([-qvec[b].sum() for b in blocks])
    g2 = g * g
    if selection == "gs":
        return np.array([g2[b].sum() for b in blocks])
    if selection == "gsl":
        if "Lb" not in chol:
            chol["Lb"] = np.array([max(np.linalg.eigvalsh(st.hess_block(b, False))[-1], 1e-300) for b in blocks])
        return np.array([g2[b].sum() for b in blocks]) / chol["Lb"]
    if selection == "gsd":
        return np.array([(g2[b] / np.maximum(D[b], 1e-300)).sum() for b in blocks])
    # gsq: g_b^T H_b^{-1} g_b with one cached Cholesky factor per fixed block
    out = np.empty(len(blocks))
    for k, b in enumerate(blocks):
        if k not in chol:
            chol[k] = _factor(st.hess_block(b, False))
        out[k] = g[b] @ _solve_factor(chol[k], g[b])
    return out


def _make_partition(st, partition, tau):
    P = st.size
    L = st.L
    if partition == "order":
        return [np.arange(s, min(s + tau, P)) for s in range(0, P, tau)]
    if partition == "sort":
        o = np.argsort(-L, kind="stable")
        return [np.sort(o[s:s + tau]) for s in range(0, P, tau)]
    if partition == "avg":
        o = np.argsort(-L, kind="stable")
        nb = -(-P // tau)
        return [np.sort(o[k::nb]) for k in range(nb)]
    Q = st.Q
    o = np.argsort(-L, kind="stable").astype(np.int64)
    if partition == "tree":
        return forest_partition(Q, o)
    return red_black_partition(Q, o)


def forest_partition(Q, order):
    """Cover the nodes by forests: each node, in ``order``, joins the first forest it keeps acyclic."""
    P = Q.shape[0]
    parent = np.arange(P, dtype=np.int64)
    inblock = np.zeros(P, dtype=np.int8)
    buf = np.empty(P, dtype=np.int64)
    left = np.asarray(order, dtype=np.int64)
    blocks = []
    while left.size:
        m = cy.greedy_forest(Q.indptr, Q.indices, left, P, parent, inblock, buf)
        b = buf[:m].copy()
        blocks.append(np.sort(b, kind="stable"))  # nearly sorted already: timsort is linear here
        keep = np.ones(P, dtype=bool)
        keep[b] = False
        left = left[keep[left]]
    return blocks


def red_black_partition(Q, order):
    """Greedy colouring in ``order``: each node takes the admissible colour with the fewest members."""
    P = Q.shape[0]
    colour = np.full(P, -1, dtype=np.int64)
    sizes = []
    indptr, indices = Q.indptr, Q.indices
    for v in order:
        nb = indices[indptr[v]:indptr[v + 1]]
        used = set(colour[nb[nb != v]].tolist())
        free = [c for c in range(len(sizes)) if c not in used]
        if free:
            c = min(free, key=lambda k: sizes[k])
        else:
            c = len(sizes)
            sizes.append(0)
        colour[v] = c
        sizes[c] += 1
    return [np.flatnonzero(colour == c) for c in range(len(sizes))]


def _greedy_tree(st, selection, tau, rng, D, parent, inblock, buf):
    """A forest block grown greedily over the nodes by decreasing score (union-find keeps it acyclic)."""
    g = st.g
    if selection == "random":
        order = rng.permutation(st.size).astype(np.int64)
    else:
        if selection == "gsl":
            s = np.abs(g) / np.sqrt(st.L)
        elif selection == "gsd":
            s = np.abs(g) / np.sqrt(D)
        else:
            s = np.abs(g)
        nz = np.flatnonzero(s > 0)
        order = nz[np.argsort(-s[nz], kind="stable")].astype(np.int64)
    Q = st.Q
    m = cy.greedy_forest(Q.indptr, Q.indices, order, tau, parent, inblock, buf)
    return buf[:m].copy()


def _lambda_max(st):
    """Largest eigenvalue of the global bound H (a few power iterations, with a 10% margin)."""
    v = np.random.default_rng(0).standard_normal(st.size)
    lam = 1.0
    for _ in range(30):
        w = st.hessp_bound(v)
        lam = np.linalg.norm(w) / max(np.linalg.norm(v), 1e-300)
        v = w / max(np.linalg.norm(w), 1e-300)
    return 1.1 * lam


def _iht_block(st, g, L, tau, mu):
    """Variable-block GS-q by iterative hard thresholding of the block model (brief section 2.2)."""
    d = -g / np.sqrt(np.maximum(L, 1e-300))
    keep = K.top_k(np.abs(d), tau)
    dd = np.zeros_like(d)
    dd[keep] = d[keep]
    for _ in range(10):
        new = dd - mu * (g + st.hessp_bound(dd))
        keep = K.top_k(np.abs(new), tau)
        nd = np.zeros_like(new)
        nd[keep] = new[keep]
        if np.linalg.norm(nd - dd) < 1e-10:
            dd = nd
            break
        dd = nd
    return np.flatnonzero(dd)


def _factor(H):
    try:
        return ("chol", sla.cho_factor(H, lower=True, check_finite=False))
    except (np.linalg.LinAlgError, sla.LinAlgError):
        m = H.shape[0]
        ridge = 1e-12 * max(np.trace(H) / max(m, 1), 1e-300)
        try:
            return ("chol", sla.cho_factor(H + ridge * np.eye(m), lower=True, check_finite=False))
        except (np.linalg.LinAlgError, sla.LinAlgError):
            return ("lstsq", H)


def _solve_factor(fac, r):
    kind, f = fac
    if kind == "chol":
        return sla.cho_solve(f, r, check_finite=False)
    return np.linalg.lstsq(f, r, rcond=None)[0]


def _update(pb, st, b, update, prox, F, L, l1, nonneg, inner, max_inner):
    """Apply one block update; returns the new objective value."""
    x_b = st.x[b].copy()
    if update == "tree-newton":
        Q = st.Q
        # rhs r_b = Q_bb x_b - g_b, solved exactly on the forest block
        xn = np.empty(b.size)
        # the kernel forms the block right-hand side Q_bb x_b - g_b itself (no Q_bb is built)
        status = cy.tree_solve(Q.indptr, Q.indices, Q.data, b, _pos_buffer(st), xn, xn, st.x, st.g)
        if status != 0:
            raise ValueError("Q is not positive definite: a non-positive pivot occurred in a forest solve")
        d = xn - x_b
        # exact block minimization: F drops by exactly 1/2 g_b^T d (new g_b = 0), O(|b|) instead of O(p)
        dF = 0.5 * float(st.g[b] @ d)
        st.apply(b, d)
        return F + dF
    g_b = st.g[b].copy()
    if isinstance(st, FunState):
        # gradient-ls: backtrack L_b from the stored estimates, store it back on b
        # start slightly below the stored estimate so that L_b can also decrease
        Lb = 0.5 * float(st.L[b].max())
        for _ in range(60):
            d = -g_b / Lb
            xt = st.x.copy()
            xt[b] += d
            Ft = pb.value(xt)
            # the slack of a few ulps of F keeps backtracking from stalling once the decrease is below rounding
            if Ft <= F - 0.5 * (g_b @ g_b) / Lb + 8 * np.finfo(float).eps * abs(F):
                break
            Lb *= 2.0
        if update == "gradient-ls":
            st.L[b] = Lb
        st.apply(b, d)
        return st.f
    quadratic = isinstance(st, QuadState) or (st.pb.datafit.name == "squared")
    if update in ("gradient", "gradient-ls", "pg"):
        H = st.hess_block(b, False)
        Lb = max(float(np.linalg.eigvalsh(H)[-1]) if b.size > 1 else float(H[0, 0]), 1e-300)
        if prox:
            z = x_b - g_b / Lb
            xn = np.maximum(z - l1 / Lb, 0.0) if nonneg else np.sign(z) * np.maximum(np.abs(z) - l1 / Lb, 0.0)
            d = xn - x_b
        else:
            d = -g_b / Lb
        return _apply_checked(pb, st, b, d, F, prox, l1, x_b, g_b, armijo=False)
    if update == "tmp":
        # two-metric projection (Gafni & Bertsekas) on x >= 0 with g~ = g + l1
        gt = g_b + l1
        rho = float(np.max(L[b] * np.abs(np.maximum(x_b - gt / L[b], 0.0) - x_b))) if b.size else 0.0
        eps = min(1e-4, rho)
        act = (x_b <= eps) & (gt > 0)
        free = ~act
        d = np.zeros(b.size)
        d[act] = -gt[act] / L[b][act]
        if free.any():
            Hf = st.hess_block(b[free], True)
            d[free] = -_solve_factor(_factor(Hf), gt[free])
        alpha = 1.0
        for _ in range(40):
            step = np.maximum(x_b + alpha * d, 0.0) - x_b
            st.apply(b, step)
            Fn = st.value()
            if Fn <= F + 1e-4 * float(gt @ step) + 1e-12 * abs(F):
                return Fn
            st.apply(b, -step)
            alpha *= 0.5
        return st.value()
    if update == "pn":
        H = st.hess_block(b, True)
        w = x_b.copy()
        K.cd_l1_gram(np.ascontiguousarray(H), H @ x_b - g_b, w, l1, nonneg, 0.0, max_inner, inner != "cyclic")
        return _apply_checked(pb, st, b, w - x_b, F, prox, l1, x_b, g_b, armijo=not quadratic)
    # lipschitz (bound H_b) or newton (true Hessian); both exact for a quadratic
    H = st.hess_block(b, update == "newton")
    d = -_solve_factor(_factor(H), g_b)
    return _apply_checked(pb, st, b, d, F, prox, l1, x_b, g_b, armijo=update == "newton" and not quadratic)


def _apply_checked(pb, st, b, d, F, prox, l1, x_b, g_b, armijo):
    """Apply ``x_b += alpha d``; Armijo backtracking (``armijo``) or a guard against any increase of F."""
    if prox:
        decr = g_b @ d + l1 * (np.abs(x_b + d).sum() - np.abs(x_b).sum())
    else:
        decr = g_b @ d
    alpha = 1.0
    for _ in range(40):
        st.apply(b, alpha * d)
        Fn = st.value()
        if armijo:
            ok = Fn <= F + 1e-4 * alpha * decr
        else:
            ok = Fn <= F + 1e-10 * abs(F) + 1e-300
        if ok:
            return Fn
        st.apply(b, -alpha * d)
        alpha *= 0.5
    return st.value()


def _pos_buffer(st):
    if not hasattr(st, "_pos"):
        st._pos = np.full(st.size, -1, dtype=np.int64)
    return st._pos

