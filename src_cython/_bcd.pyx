# cython: language_level=3
"""Sparse kernels of greedy BCD: compressed-row/column scatter updates, greedy forests, tree solves.

* ``rows_axpy`` -- ``out[idx[k], :] += data[k] * vals[r, :]`` over the rows ``r`` of a compressed matrix. With a CSC
  matrix and its columns it is ``Z += A_b dX_b`` (recording the touched rows); with a CSR matrix and rows it is
  ``G += A_rows^T dU_rows``. Either way a block update costs O(nnz of the rows/columns it touches).
* ``greedy_forest`` -- the paper's greedy forest block: walk nodes by decreasing score and keep a node iff its
  neighbours already in the block lie in pairwise distinct trees (union-find with path compression).
* ``tree_solve`` -- exact solve of ``Q_bb x_b = r_b`` on a forest block in O(|b|): Gaussian elimination in a
  perfect elimination order (leaves to root, then back), i.e. Gaussian belief propagation on a tree.
* ``forest_factor`` / ``forest_sweep`` / ``forest_grad`` -- the same elimination done once for a *fixed* forest
  block, then (over-relaxed) block updates and the gradient in a streaming sweep numbering.
* ``col_sq_norms``, ``csc_rmatvec``, ``gram_cross`` -- CSC column kernels of the Lasso path: squared column
  norms, ``A^T u``, and the Gram columns ``A_W^T A_new`` of a growing block (sparse on both sides).

All kernels trust their inputs; ``numopt.bcd`` validates problems when they are built.
"""
import numpy as np
cimport numpy as cnp

ctypedef fused floating:
    float
    double

ctypedef fused index_t:
    int
    long long


def rows_axpy(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
              const long long[::1] rows, const double[:, ::1] vals, double[:, ::1] out,
              signed char[::1] mark, long long[::1] touched, Py_ssize_t ntouched):
    """``out[indices[k], :] += data[k] * vals[r, :]`` for ``k`` in the slices of ``rows[r]``.

    When ``mark`` is non-empty, every output row reached for the first time is flagged in ``mark`` and
    appended to ``touched`` (starting at position ``ntouched``); returns the new count.
    """
    cdef Py_ssize_t m = rows.shape[0], K = vals.shape[1], r, c, t
    cdef index_t k, i
    cdef double a, v
    cdef bint track = mark.shape[0] > 0
    with nogil:
        for r in range(m):
            for k in range(indptr[rows[r]], indptr[rows[r] + 1]):
                i = indices[k]
                a = data[k]
                if K == 1:
                    out[i, 0] += a * vals[r, 0]
                else:
                    for c in range(K):
                        out[i, c] += a * vals[r, c]
                if track and mark[i] == 0:
                    mark[i] = 1
                    touched[ntouched] = i
                    ntouched += 1
    return ntouched


cdef inline long long _find(long long[::1] parent, long long v) noexcept nogil:
    cdef long long root = v, nxt
    while parent[root] != root:
        root = parent[root]
    while parent[v] != root:  # path compression
        nxt = parent[v]
        parent[v] = root
        v = nxt
    return root


def greedy_forest(const index_t[::1] indptr, const index_t[::1] indices, const long long[::1] order,
                  Py_ssize_t max_size, long long[::1] parent, signed char[::1] inblock, long long[::1] out):
    """Grow a forest block greedily over ``order`` (nodes by decreasing score) in the graph of a CSR pattern.

    Node ``v`` joins iff the roots of its in-block neighbours are pairwise distinct (no cycle is closed); it
    is then united with them. ``parent`` must hold ``parent[i] = i`` and ``inblock`` zeros on entry; both are
    restored on exit for the touched entries only (O(|b| + its degrees), not O(p)). Writes the block, in
    the order the nodes were taken, to ``out`` and returns its size.
    """
    cdef Py_ssize_t n_order = order.shape[0], t, size = 0, nn, a, b2
    cdef long long v, w, rv, rw
    cdef index_t k
    cdef bint ok
    roots_np = np.empty(64, dtype=np.int64)
    cdef long long[::1] roots = roots_np
    for t in range(n_order):
        if size >= max_size:
            break
        v = order[t]
        nn = 0
        ok = True
        for k in range(indptr[v], indptr[v + 1]):
            w = indices[k]
            if w == v or not inblock[w]:
                continue
            rw = _find(parent, w)
            for a in range(nn):
                if roots[a] == rw:
                    ok = False
                    break
            if not ok:
                break
            if nn == roots.shape[0]:
                roots_np = np.concatenate([roots_np, np.empty(nn, dtype=np.int64)])
                roots = roots_np
            roots[nn] = rw
            nn += 1
        if not ok:
            continue
        inblock[v] = 1
        for a in range(nn):
            parent[roots[a]] = v
        out[size] = v
        size += 1
    # reset the touched entries
    for t in range(size):
        v = out[t]
        parent[v] = v
        inblock[v] = 0
    return size


def tree_solve(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
               const long long[::1] block, long long[::1] pos, const double[::1] rhs, double[::1] xout,
               const double[::1] x=None, const double[::1] g=None):
    """Solve ``Q_bb x = rhs`` exactly when the graph of ``Q_bb`` is a forest, in O(|b| + degrees).

    ``Q`` is symmetric CSR (diagonal stored), ``block`` the nodes of b, ``pos`` an int64 array of length p
    holding -1 everywhere (restored on exit). When the full iterate ``x`` and gradient ``g = Qx - c`` are
    given, ``rhs`` is ignored and the block's right-hand side ``Q_bb x_b - g_b`` (i.e. ``c_b`` minus the
    coupling to the nodes outside b) is formed here, without building ``Q_bb``. Returns ``0`` on success or
    ``-(i+1)`` when the pivot of the ``i``-th block node is not positive (``Q_bb`` is not positive definite).
    """
    cdef Py_ssize_t m = block.shape[0], t, head, tail, s, status = 0
    cdef long long v, w, pv, root
    cdef index_t k
    order_np = np.empty(m, dtype=np.int64)
    par_np = np.empty(m, dtype=np.int64)      # parent position in the block (-1: root)
    wpar_np = np.zeros(m, dtype=np.float64)   # Q[i, parent(i)]
    piv_np = np.empty(m, dtype=np.float64)
    r_np = np.empty(m, dtype=np.float64)
    seen_np = np.zeros(m, dtype=np.int8)
    cdef long long[::1] order = order_np, par = par_np
    cdef double[::1] wpar = wpar_np, piv = piv_np, r = r_np
    cdef signed char[::1] seen = seen_np
    cdef bint own_rhs = x is not None and g is not None
    cdef double acc
    with nogil:
        for t in range(m):
            pos[block[t]] = t
        for t in range(m):
            piv[t] = 0.0
            if own_rhs:
                v = block[t]
                acc = -g[v]
                for k in range(indptr[v], indptr[v + 1]):
                    if pos[indices[k]] >= 0:
                        acc = acc + data[k] * x[indices[k]]
                r[t] = acc
            else:
                r[t] = rhs[t]
        for t in range(m):
            v = block[t]
            for k in range(indptr[v], indptr[v + 1]):
                if indices[k] == v:
                    piv[t] = data[k]
        # BFS every tree from its first node: order[] lists nodes so that parents come first
        tail = 0
        for s in range(m):
            if seen[s]:
                continue
            seen[s] = 1
            par[s] = -1
            order[tail] = s
            tail += 1
            head = tail - 1
            while head < tail:
                t = order[head]
                head += 1
                v = block[t]
                for k in range(indptr[v], indptr[v + 1]):
                    w = indices[k]
                    if w == v or pos[w] < 0:
                        continue
                    pv = pos[w]
                    if seen[pv]:
                        continue
                    seen[pv] = 1
                    par[pv] = t
                    wpar[pv] = data[k]
                    order[tail] = pv
                    tail += 1
        # leaves -> roots: eliminate each node into its parent
        for s in range(m - 1, -1, -1):
            t = order[s]
            if piv[t] <= 0.0:
                status = -(t + 1)
                break
            if par[t] >= 0:
                piv[par[t]] -= wpar[t] * wpar[t] / piv[t]
                r[par[t]] -= wpar[t] * r[t] / piv[t]
        if status == 0:
            # roots -> leaves
            for s in range(m):
                t = order[s]
                if par[t] < 0:
                    xout[t] = r[t] / piv[t]
                else:
                    xout[t] = (r[t] - wpar[t] * xout[par[t]]) / piv[t]
        for t in range(m):
            pos[block[t]] = -1
    return status


cdef inline void _heap_push(long long[::1] h, Py_ssize_t n, long long key) noexcept nogil:
    # min-heap h[0..n-1] -> h[0..n]
    cdef Py_ssize_t i = n, par
    while i > 0:
        par = (i - 1) >> 1
        if h[par] <= key:
            break
        h[i] = h[par]
        i = par
    h[i] = key


cdef inline void _heap_pop(long long[::1] h, Py_ssize_t n) noexcept nogil:
    # remove h[0] from the min-heap h[0..n] (n = size after removal): sift the last element down
    cdef long long key = h[n]
    cdef Py_ssize_t i = 0, ch
    if n == 0:
        return
    while True:
        ch = 2 * i + 1
        if ch >= n:
            break
        if ch + 1 < n and h[ch + 1] < h[ch]:
            ch += 1
        if h[ch] >= key:
            break
        h[i] = h[ch]
        i = ch
    h[i] = key


def forest_factor(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
                  const long long[::1] block, long long[::1] pos):
    """Factor ``Q_bb`` once for a *fixed* forest block: the tree solve's elimination, with everything a sweep needs.

    Returns ``(status, order, par, wpar, lw, ipiv, ext_ptr, ext_idx, ext_val, diag)``: ``order`` lists the block
    nodes tree by tree, parents first (so the reverse is a leaf-to-root elimination order), each tree visited in
    the block's order as far as that allows (smallest block index on the frontier next); ``par[t]`` is the
    position of the parent of ``order[t]`` (-1 for a root), ``wpar[t] = Q[order[t], parent]``, ``ipiv[t] = 1 / pivot`` after elimination, ``lw[t] = wpar[t] /
    pivot[t]``, ``diag[t] = Q[order[t], order[t]]``; ``ext_ptr/ext_idx/ext_val`` hold, per position, the
    couplings ``Q_ij`` to nodes ``j`` outside the block. ``status`` is ``-(t+1)`` when a pivot is not positive
    (``Q_bb`` not positive definite), else 0. ``pos`` must be -1 everywhere on entry (restored on exit).
    Everything is gathered in the single traversal (one visit of each row of the block).
    """
    cdef Py_ssize_t m = block.shape[0], t, i, j, top, tail = 0, status = 0, ne = 0, cap = 0
    cdef long long v, w
    cdef index_t k
    for i in range(m):
        cap += indptr[block[i] + 1] - indptr[block[i]]
    epos_np = np.empty(m, dtype=np.int64)
    parb_np = np.empty(m, dtype=np.int64)
    wparb_np = np.zeros(m, dtype=np.float64)
    stack_np = np.empty(m, dtype=np.int64)
    seen_np = np.zeros(m, dtype=np.int8)
    order_np = np.empty(m, dtype=np.int64)
    par_np = np.empty(m, dtype=np.int64)
    wpar_np = np.zeros(m, dtype=np.float64)
    piv_np = np.zeros(m, dtype=np.float64)
    lw_np = np.zeros(m, dtype=np.float64)
    diag_np = np.zeros(m, dtype=np.float64)
    ptr_np = np.zeros(m + 1, dtype=np.int64)
    idx_np = np.empty(cap, dtype=np.int64)
    val_np = np.empty(cap, dtype=np.float64)
    cdef long long[::1] epos = epos_np, parb = parb_np, stack = stack_np
    cdef long long[::1] order = order_np, par = par_np, ptr = ptr_np, eidx = idx_np
    cdef double[::1] wparb = wparb_np, wpar = wpar_np, piv = piv_np, lw = lw_np, diag = diag_np, evals = val_np
    cdef signed char[::1] seen = seen_np
    with nogil:
        for i in range(m):
            pos[block[i]] = i
        # every tree is visited from its first node, always continuing with the smallest block index on the
        # frontier (a binary min-heap): parents come before children, and the visit order stays close to the
        # block order (the natural numbering), so that the sweeps read memory nearly in order. A node is pushed
        # once (the block is a forest); at its visit it gets its position, parent link, diagonal and couplings
        # to the outside.
        for i in range(m):
            if seen[i]:
                continue
            seen[i] = 1
            parb[i] = -1
            stack[0] = i
            top = 1
            while top > 0:
                j = stack[0]
                top -= 1
                _heap_pop(stack, top)
                v = block[j]
                t = tail
                tail += 1
                epos[j] = t
                order[t] = v
                par[t] = epos[parb[j]] if parb[j] >= 0 else -1
                wpar[t] = wparb[j]
                for k in range(indptr[v], indptr[v + 1]):
                    w = indices[k]
                    if w == v:
                        diag[t] = data[k]
                        continue
                    if pos[w] < 0:
                        eidx[ne] = w
                        evals[ne] = data[k]
                        ne += 1
                        continue
                    if seen[pos[w]]:
                        continue
                    seen[pos[w]] = 1
                    parb[pos[w]] = j
                    wparb[pos[w]] = data[k]
                    _heap_push(stack, top, pos[w])
                    top += 1
                ptr[t + 1] = ne
        # leaves -> roots: the pivots of the elimination (fixed for a fixed block)
        for t in range(m):
            piv[t] = diag[t]
        for t in range(m - 1, -1, -1):
            if piv[t] <= 0.0:
                status = -(t + 1)
                break
            lw[t] = wpar[t] / piv[t]
            if par[t] >= 0:
                piv[par[t]] -= wpar[t] * lw[t]
        for i in range(m):
            pos[block[i]] = -1
    ipiv_np = np.where(piv_np > 0, 1.0 / np.where(piv_np > 0, piv_np, 1.0), 0.0)
    return status, order_np, par_np, wpar_np, lw_np, ipiv_np, ptr_np, idx_np[:ne], val_np[:ne], diag_np


def forest_sweep(const int[::1] par, const double[::1] wpar, const double[::1] ipiv, const int[::1] ext_ptr,
                 const int[::1] ext_idx, const double[::1] ext_val, const double[::1] c, double[::1] x,
                 Py_ssize_t off, double[::1] r, double omega, double ext_const=0.0):
    """One (relaxed) exact block update on a fixed forest block, in the *sweep numbering*.

    The variables are renumbered so that the block's nodes are ``off .. off+m-1`` in the parents-first order
    of :func:`forest_factor` (``par`` local positions, ``ext_idx`` renumbered, ``c`` and ``x`` permuted): every
    array is then read in order, which keeps a sweep over 10^6 nodes streaming. Computes
    ``x_b <- x_b + omega (x_b* - x_b)``, ``x_b*`` solving ``Q_bb x_b* = c_b - Q_{b,~b} x_~b`` (``omega = 1``:
    plain tree-Newton BCD) in O(|b| + couplings), ``r`` a work array of length >= m. Returns
    ``sum (x_new - x_old)^2`` over b. When ``ext_val`` is empty every outside coupling equals ``ext_const``
    (graphs with one edge weight): a sweep then reads a fifth less memory.
    """
    cdef Py_ssize_t m = par.shape[0], t
    cdef int p, e
    cdef double acc, xn, d, dd = 0.0, s
    cdef bint uniform = ext_val.shape[0] == 0
    with nogil:
        for t in range(m):
            r[t] = 0.0
        # leaves -> roots: right-hand side and forward elimination in one pass
        for t in range(m - 1, -1, -1):
            acc = r[t] + c[off + t]
            if uniform:
                s = 0.0
                for e in range(ext_ptr[t], ext_ptr[t + 1]):
                    s = s + x[ext_idx[e]]
                acc = acc - ext_const * s
            else:
                for e in range(ext_ptr[t], ext_ptr[t + 1]):
                    acc = acc - ext_val[e] * x[ext_idx[e]]
            r[t] = acc
            p = par[t]
            if p >= 0:
                r[p] -= wpar[t] * ipiv[t] * acc
        # roots -> leaves: back substitution (r[t] becomes the exact block solution), relaxed update of x
        for t in range(m):
            p = par[t]
            if p >= 0:
                xn = (r[t] - wpar[t] * r[p]) * ipiv[t]
            else:
                xn = r[t] * ipiv[t]
            r[t] = xn
            d = omega * (xn - x[off + t])
            x[off + t] += d
            dd += d * d
    return dd


def forest_grad(const int[::1] par, const double[::1] wpar, const double[::1] diag, const int[::1] ext_ptr,
                const int[::1] ext_idx, const double[::1] ext_val, const double[::1] c, const double[::1] x,
                Py_ssize_t off, double[::1] g):
    """``g_b = (Q x - c)_b`` for a forest block in the sweep numbering of :func:`forest_sweep` (the block's
    tree edges are its parent links, its other couplings the ``ext`` lists): the stop test's gradient with
    streaming access, no product with the original ``Q``."""
    cdef Py_ssize_t m = par.shape[0], t
    cdef int p, e
    cdef double acc
    with nogil:
        for t in range(m):
            acc = diag[t] * x[off + t] - c[off + t]
            for e in range(ext_ptr[t], ext_ptr[t + 1]):
                acc = acc + ext_val[e] * x[ext_idx[e]]
            p = par[t]
            if p >= 0:
                acc = acc + wpar[t] * x[off + p]
            g[off + t] = acc
        for t in range(m):
            p = par[t]
            if p >= 0:
                g[off + p] += wpar[t] * x[off + t]


def col_sq_norms(const index_t[::1] indptr, const floating[::1] data, double[::1] out):
    """``out[j] = sum_k data[k]^2`` over column ``j`` of a CSC matrix (in double). One pass, no temporary.

    A NaN entry makes its column's norm NaN (callers use that as a finiteness check of the data).
    """
    cdef Py_ssize_t p = indptr.shape[0] - 1, j
    cdef index_t k
    cdef double s, a
    with nogil:
        for j in range(p):
            s = 0.0
            for k in range(indptr[j], indptr[j + 1]):
                a = data[k]
                s += a * a
            out[j] = s
    return out


def csc_rmatvec(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
                const double[::1] u, double[::1] out):
    """``out = A^T u`` for a CSC ``A`` (column dot products), without building the transpose.

    Unlike ``numopt._cy._sparse.csr_matvec`` on the same arrays: ``u`` and ``out`` stay float64 for float32
    data, and it never spawns threads (one gradient per outer iteration of a solver that runs single-threaded).
    """
    cdef Py_ssize_t p = indptr.shape[0] - 1, j
    cdef index_t k
    cdef double s
    with nogil:
        for j in range(p):
            s = 0.0
            for k in range(indptr[j], indptr[j + 1]):
                s += data[k] * u[indices[k]]
            out[j] = s
    return out


def gram_cross(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
               const long long[::1] cols, const long long[::1] new, Py_ssize_t n, double[:, ::1] out):
    """``out[r, c] = A[:, cols[r]] . A[:, new[c]]`` for a CSC ``A`` with ``n`` rows, sparse on both sides.

    The new columns are laid out by row once (O(n + their nnz)); each entry of a column of ``cols`` then
    meets only the new columns that share its row, so the cost is O(sum over shared rows) instead of the
    O(nnz(cols) * |new|) of dense column products. ``out`` is overwritten.
    """
    cdef Py_ssize_t m = cols.shape[0], K = new.shape[0], r, c, i, e
    cdef index_t k
    cdef double a
    cdef long long nnz_new = 0
    for c in range(K):
        nnz_new += indptr[new[c] + 1] - indptr[new[c]]
    rowptr_np = np.zeros(n + 1, dtype=np.int64)
    rcol_np = np.empty(nnz_new, dtype=np.int64)
    rval_np = np.empty(nnz_new, dtype=np.float64)
    cdef long long[::1] rowptr = rowptr_np, rcol = rcol_np
    cdef double[::1] rval = rval_np
    with nogil:
        for c in range(K):
            for k in range(indptr[new[c]], indptr[new[c] + 1]):
                rowptr[indices[k] + 1] += 1
        for i in range(n):
            rowptr[i + 1] += rowptr[i]
        for c in range(K):
            for k in range(indptr[new[c]], indptr[new[c] + 1]):
                i = indices[k]
                e = rowptr[i]
                rcol[e] = c
                rval[e] = data[k]
                rowptr[i] = e + 1
        for i in range(n - 1, -1, -1):  # undo the shift of the fill
            rowptr[i + 1] = rowptr[i]
        rowptr[0] = 0
        for r in range(m):
            for c in range(K):
                out[r, c] = 0.0
            for k in range(indptr[cols[r]], indptr[cols[r] + 1]):
                i = indices[k]
                a = data[k]
                for e in range(rowptr[i], rowptr[i + 1]):
                    out[r, rcol[e]] += a * rval[e]
    return out
