"""Compiled CSR kernels agree with NumPy references."""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve_triangular

from numopt._cy import _sparse
from numopt.linalg import ichol0, jacobi, poisson


def _rand_csr(n, density, dtype, itype, seed=0):
    A = sp.random_array((n, n), density=density, random_state=seed, format="csr", dtype=np.float64)
    A = sp.csr_matrix(A.astype(dtype))
    A.indices = A.indices.astype(itype)
    A.indptr = A.indptr.astype(itype)
    return A


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_csr_matvec_and_dot(dtype, itype):
    A = _rand_csr(300, 0.05, dtype, itype)
    rng = np.random.default_rng(1)
    p = rng.standard_normal(300).astype(dtype)
    out = np.empty(300, dtype=dtype)
    _sparse.csr_matvec(A.indptr, A.indices, A.data, p, out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, A @ p, rtol=tol, atol=tol)
    q = np.empty(300, dtype=dtype)
    pq = _sparse.csr_matvec_dot(A.indptr, A.indices, A.data, p, q)
    np.testing.assert_allclose(q, A @ p, rtol=tol, atol=tol)
    assert pq == pytest.approx(float(p.astype(float) @ (A @ p).astype(float)), rel=tol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_updates(dtype):
    rng = np.random.default_rng(2)
    x, r, p, q, z = (rng.standard_normal(257).astype(dtype) for _ in range(5))
    x0, r0, p0 = x.copy(), r.copy(), p.copy()
    rr = _sparse.cg_step(0.3, p, q, x, r)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(x, x0 + dtype(0.3) * p, rtol=tol)
    np.testing.assert_allclose(r, r0 - dtype(0.3) * q, rtol=tol)
    assert rr == pytest.approx(float(r.astype(float) @ r.astype(float)), rel=tol * 10)
    _sparse.xpby(z, 0.7, p)
    np.testing.assert_allclose(p, z + dtype(0.7) * p0, rtol=tol)
    dinv = rng.uniform(0.5, 2, 257).astype(dtype)
    out = np.empty_like(r)
    rz = _sparse.scale_dot(dinv, r, out)
    np.testing.assert_allclose(out, dinv * r, rtol=tol)
    assert rz == pytest.approx(float(r.astype(float) @ out.astype(float)), rel=tol * 10)


def _ichol0_reference(A):
    """Dense IC(0): Cholesky restricted to the pattern of tril(A)."""
    A = A.toarray()
    n = A.shape[0]
    pattern = np.tril(A != 0)
    L = np.zeros_like(A)
    for i in range(n):
        for k in range(i):
            if pattern[i, k]:
                L[i, k] = (A[i, k] - L[i, :k] @ L[k, :k]) / L[k, k]
        L[i, i] = np.sqrt(A[i, i] - L[i, :i] @ L[i, :i])
    return L


@pytest.mark.parametrize("shape", [(30,), (7, 8), (4, 5, 3)])
def test_ichol0_matches_dense_reference(shape):
    A = poisson(shape)
    M = ichol0(A)
    L_ref = _ichol0_reference(A)
    np.testing.assert_allclose(M.L.toarray(), L_ref, rtol=1e-12, atol=1e-12)
    # (L L^T)_ij == A_ij on the pattern of A
    LLt = (M.L @ M.L.T).toarray()
    mask = A.toarray() != 0
    np.testing.assert_allclose(LLt[mask], A.toarray()[mask], rtol=1e-12, atol=1e-12)


def test_ichol0_exact_on_tridiagonal():
    A = poisson((50,))
    M = ichol0(A)
    b = np.random.default_rng(0).standard_normal(50)
    np.testing.assert_allclose(M.matvec(b), np.linalg.solve(A.toarray(), b), rtol=1e-10)


def test_ic_solve_matches_triangular_solves():
    A = poisson((9, 10))
    M = ichol0(A)
    r = np.random.default_rng(4).standard_normal(90)
    y = spsolve_triangular(M.L.tocsr(), r, lower=True)
    z_ref = spsolve_triangular(M.L.T.tocsr(), y, lower=False)
    z = np.empty(90)
    rz = M.apply_dot(r, z)
    np.testing.assert_allclose(z, z_ref, rtol=1e-12)
    assert rz == pytest.approx(r @ z_ref, rel=1e-12)
    np.testing.assert_allclose(M @ r, z_ref, rtol=1e-12)


def test_ichol0_shift_fallback_on_non_m_matrix():
    # SPD but not an M-matrix: plain IC(0) breaks down; the shifted factorization must succeed
    rng = np.random.default_rng(5)
    B = sp.random_array((60, 60), density=0.15, random_state=5, format="csr")
    A = sp.csr_matrix(B @ B.T + 0.05 * sp.eye_array(60))
    A.sort_indices()
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        M = ichol0(A)
    assert M.shift >= 0 and np.all(np.isfinite(M.L.data))
    assert np.all(M.L.diagonal() > 0)
    _ = rng


def test_jacobi():
    A = poisson((5, 6))
    M = jacobi(A)
    v = np.arange(30.0)
    np.testing.assert_allclose(M @ v, v / A.diagonal())


def test_preconditioner_input_errors():
    with pytest.raises(ValueError, match="positive diagonal"):
        ichol0(sp.diags_array([1.0, 0.0, 2.0]).tocsr())
    with pytest.raises(ValueError, match="square"):
        jacobi(np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        ichol0(np.array([[1.0, np.nan], [np.nan, 1.0]]))
