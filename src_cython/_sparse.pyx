# cython: language_level=3
"""CSR kernels for the Krylov solvers: matvec, fused CG updates, Jacobi and IC(0).

All kernels trust their inputs (bounds checks are off): callers in ``numopt.linalg`` validate shapes,
dtypes and index ranges first. Fused over float32/float64 values and int32/int64 indices.
Loops over rows run in parallel with OpenMP (``prange``) where the rows are independent.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
cimport openmp
import numpy as np

# Below this many rows a kernel runs on one thread: an OpenMP fork/join costs more than it saves, and on a
# busy machine idle team threads spinning at the barrier can cost milliseconds per region.
cdef Py_ssize_t PAR_MIN = 50000


cdef inline int _threads(Py_ssize_t n) noexcept nogil:
    return 1 if n < PAR_MIN else openmp.omp_get_max_threads()

ctypedef fused floating:
    float
    double

ctypedef fused index_t:
    int
    long long


def csr_matvec(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
               const floating[::1] x, floating[::1] out):
    """out = A @ x for A in CSR."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, i
    cdef index_t k
    cdef double s
    with nogil:
        for i in prange(n, schedule="static", num_threads=_threads(n)):
            s = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                s = s + data[k] * x[indices[k]]
            out[i] = <floating>s
    return out


def csr_matvec_dot(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
                   const floating[::1] p, floating[::1] q):
    """q = A @ p and return p . q in one pass (the CG curvature p^T A p)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, i
    cdef index_t k
    cdef double s, pq = 0.0
    with nogil:
        for i in prange(n, schedule="static", num_threads=_threads(n)):
            s = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                s = s + data[k] * p[indices[k]]
            q[i] = <floating>s
            pq += p[i] * <floating>s
    return pq


def cg_step(double alpha, const floating[::1] p, const floating[::1] q, floating[::1] x, floating[::1] r):
    """x += alpha p; r -= alpha q; return r . r."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef double rr = 0.0
    cdef floating a = <floating>alpha
    with nogil:
        for i in prange(n, schedule="static", num_threads=_threads(n)):
            x[i] = x[i] + a * p[i]
            r[i] = r[i] - a * q[i]
            rr += r[i] * r[i]
    return rr


def xpby(const floating[::1] z, double beta, floating[::1] p):
    """p = z + beta p."""
    cdef Py_ssize_t n = p.shape[0], i
    cdef floating bt = <floating>beta
    with nogil:
        for i in prange(n, schedule="static", num_threads=_threads(n)):
            p[i] = z[i] + bt * p[i]


def scale_dot(const floating[::1] dinv, const floating[::1] r, floating[::1] z):
    """z = dinv * r (Jacobi) and return r . z."""
    cdef Py_ssize_t n = r.shape[0], i
    cdef double rz = 0.0
    with nogil:
        for i in prange(n, schedule="static", num_threads=_threads(n)):
            z[i] = dinv[i] * r[i]
            rz += r[i] * z[i]
    return rz


def ichol0(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data, double shift):
    """Zero-fill incomplete Cholesky of the lower triangle of a symmetric CSR matrix.

    Factor ``A + shift * diag(A) ~= L L^T`` on the sparsity pattern of ``tril(A)``. Column indices must be
    sorted within each row. Returns ``(L_indptr, L_indices, L_data, ok)``: ``L`` in CSR with the diagonal
    as the last entry of each row, and ``ok = False`` when a pivot was not positive (the caller retries
    with a larger shift).
    """
    cdef Py_ssize_t n = indptr.shape[0] - 1, i, a, b, kk
    cdef index_t k, j
    cdef double s, piv
    cdef bint ok = True
    # pattern of tril(A), diagonal included (inserted if missing)
    Lp_np = np.zeros(n + 1, dtype=np.int64)
    cdef long long[::1] Lp = Lp_np
    cdef Py_ssize_t cnt
    for i in range(n):
        cnt = 0
        for k in range(indptr[i], indptr[i + 1]):
            if indices[k] < i:
                cnt += 1
        Lp[i + 1] = Lp[i] + cnt + 1
    nnz = Lp[n]
    Li_np = np.empty(nnz, dtype=np.int64)
    Lx_np = np.zeros(nnz, dtype=np.float64)
    diag_np = np.zeros(n, dtype=np.float64)
    cdef long long[::1] Li = Li_np
    cdef double[::1] Lx = Lx_np
    cdef double[::1] diag = diag_np
    with nogil:
        for i in range(n):
            kk = Lp[i]
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                if j < i:
                    Li[kk] = j
                    Lx[kk] = data[k]
                    kk += 1
                elif j == i:
                    diag[i] = data[k]
            Li[kk] = i
            Lx[kk] = diag[i] * (1.0 + shift)
        for i in range(n):
            # off-diagonal entries of row i, left to right: L_ik = (A_ik - sum_j L_ij L_kj) / L_kk
            for a in range(Lp[i], Lp[i + 1] - 1):
                k = <index_t>Li[a]
                s = Lx[a]
                # merge row i (entries before a) with row k (entries before its diagonal)
                b = Lp[k]
                kk = Lp[i]
                while kk < a and b < Lp[k + 1] - 1:
                    if Li[kk] == Li[b]:
                        s = s - Lx[kk] * Lx[b]
                        kk += 1
                        b += 1
                    elif Li[kk] < Li[b]:
                        kk += 1
                    else:
                        b += 1
                Lx[a] = s / Lx[Lp[k + 1] - 1]
            piv = Lx[Lp[i + 1] - 1]
            for a in range(Lp[i], Lp[i + 1] - 1):
                piv = piv - Lx[a] * Lx[a]
            if not (piv > 0.0):
                ok = False
                break
            Lx[Lp[i + 1] - 1] = sqrt(piv)
    return Lp_np, Li_np, Lx_np, ok


def ic_solve(const long long[::1] Lp, const long long[::1] Li, const floating[::1] Lx,
             const floating[::1] r, floating[::1] z, double[::1] work):
    """z = (L L^T)^{-1} r for L from :func:`ichol0` (diagonal last in each row); return r . z."""
    cdef Py_ssize_t n = r.shape[0], i, a
    cdef double s, rz = 0.0
    with nogil:
        # forward: L y = r
        for i in range(n):
            s = r[i]
            for a in range(Lp[i], Lp[i + 1] - 1):
                s = s - Lx[a] * work[Li[a]]
            work[i] = s / Lx[Lp[i + 1] - 1]
        # backward: L^T z = y, column-oriented over the rows of L
        for i in range(n - 1, -1, -1):
            s = work[i] / Lx[Lp[i + 1] - 1]
            work[i] = s
            for a in range(Lp[i], Lp[i + 1] - 1):
                work[Li[a]] = work[Li[a]] - Lx[a] * s
        for i in range(n):
            z[i] = <floating>work[i]
            rz += r[i] * z[i]
    return rz
