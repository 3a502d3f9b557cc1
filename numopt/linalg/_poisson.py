"""Test and benchmark generators: Dirichlet Poisson matrices on 1-D/2-D/3-D grids, with obstacles."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_int

__all__ = ["poisson"]


def poisson(shape, obstacles=None, *, obstacle_bc="dirichlet", dtype=np.float64):
    r"""The 3-/5-/7-point finite-difference Laplacian with Dirichlet boundaries, in CSR.

    On an :math:`N_1\times\dots\times N_d` grid (cells numbered in C order, ``i*N2*N3 + j*N3 + l``) the
    matrix has :math:`2d` on the diagonal and :math:`-1` for each grid neighbour (the same as
    ``pyamg.gallery.poisson``). It is symmetric positive definite with eigenvalues
    :math:`\sum_k 2 - 2\cos(\pi j_k/(N_k+1))`.

    Parameters
    ----------
    shape : int or tuple of 1 to 3 ints
        Grid size per dimension.
    obstacles : bool array of ``shape``, optional
        Solid cells, removed from the system: the result has one row per fluid cell
        (``~obstacles`` in C order), so ``fluid_mask = ~obstacles`` maps unknowns to grid cells.
    obstacle_bc : {"dirichlet", "neumann"}
        Boundary condition on faces shared with a solid cell. ``"dirichlet"`` keeps the diagonal at
        :math:`2d` (always SPD); ``"neumann"`` (solid walls of a pressure solve) lowers the diagonal by one
        per solid neighbour; a fluid region enclosed entirely by solids then makes the matrix singular.
    dtype : float32 or float64

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    if np.isscalar(shape):
        shape = (shape,)
    shape = tuple(check_int(s, "shape", min_value=1) for s in shape)
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"shape must have 1 to 3 dimensions; got {shape}")
    check_choice(obstacle_bc, "obstacle_bc", ("dirichlet", "neumann"))
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    d = len(shape)
    mats = [sp.diags_array([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1], shape=(n, n))
            for n in shape]
    A = mats[0]
    for M in mats[1:]:
        A = sp.kronsum(M, A, format="csr")  # kron(I, M) + kron(A, I): the new axis varies fastest (C order)
    A = sp.csr_matrix(A, dtype=dtype)
    if obstacles is None:
        A.sort_indices()
        return A
    solid = np.asarray(obstacles)
    if solid.dtype != bool:
        raise TypeError(f"obstacles must be a boolean array; got dtype {solid.dtype}")
    if solid.shape != shape:
        raise ValueError(f"obstacles must have shape {shape}; got {solid.shape}")
    fluid = ~solid.ravel()
    if not fluid.any():
        raise ValueError("obstacles cover every cell: the system would be empty")
    if obstacle_bc == "neumann":
        # each solid neighbour removes one unit from the diagonal (zero-flux face)
        n_solid_nb = np.asarray(A[:, ~fluid].sum(axis=1)).ravel() * -1
        A = A + sp.diags_array(-n_solid_nb.astype(dtype))
        A = sp.csr_matrix(A, dtype=dtype)
    A = A[fluid][:, fluid].tocsr()
    A.sort_indices()
    return A
