"""Scenes for DCDM tests, training and benchmarks: random solid obstacles and smoke-plume right-hand sides.

A *scene* is a boolean grid of solid cells (boxes and spheres). Its pressure matrix is
``numopt.linalg.poisson(shape, obstacles=solid)`` (rows for the fluid cells only, C order), so
``fluid_mask = ~solid`` maps unknowns back to grid cells.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_int, check_positive, check_random_state
from ._poisson import poisson

__all__ = ["random_obstacles", "plume_rhs", "random_scene"]


def _check_shape(shape):
    if np.isscalar(shape):
        shape = (shape,) * 3
    shape = tuple(check_int(s, "shape", min_value=2) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be an int or a 3-tuple; got {shape}")
    return shape


def random_obstacles(shape, n_obstacles=4, *, fill=0.15, kinds=("box", "sphere"), margin=1, random_state=None):
    """A boolean grid of solid cells made of random axis-aligned boxes and spheres.

    Parameters
    ----------
    shape : int or tuple of 3 ints
        Grid size (an int means a cube).
    n_obstacles : int
        Number of obstacles (they may overlap).
    fill : float in (0, 0.9]
        Target size: each obstacle's volume is about ``fill / n_obstacles`` of the grid.
    kinds : tuple of {"box", "sphere"}
    margin : int
        Cells kept fluid next to the domain boundary (so the fluid region stays connected to it).
    random_state : None, int or Generator

    Returns
    -------
    solid : ndarray of bool, ``shape``
        At least one cell stays fluid.
    """
    shape = _check_shape(shape)
    n_obstacles = check_int(n_obstacles, "n_obstacles", min_value=0)
    fill = check_positive(fill, "fill")
    if fill > 0.9:
        raise ValueError(f"fill must be in (0, 0.9]; got {fill}")
    margin = check_int(margin, "margin", min_value=0)
    kinds = tuple(kinds)
    if not kinds or any(k not in ("box", "sphere") for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of ('box', 'sphere'); got {kinds}")
    rng = check_random_state(random_state)
    solid = np.zeros(shape, dtype=bool)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    lo = np.array([margin] * 3)
    hi = np.array(shape) - margin
    if np.any(hi - lo < 2) or n_obstacles == 0:
        return solid
    vol = fill * np.prod(shape) / n_obstacles
    for _ in range(n_obstacles):
        kind = kinds[rng.integers(len(kinds))]
        if kind == "sphere":
            radius = (3 * vol / (4 * np.pi)) ** (1 / 3) * rng.uniform(0.7, 1.3)
            center = rng.uniform(lo, hi)
            dist2 = sum((g + 0.5 - c) ** 2 for g, c in zip(grids, center))
            solid |= dist2 <= radius ** 2
        else:
            aspect = rng.uniform(0.5, 1.5, 3)
            side = vol ** (1 / 3) * aspect / np.prod(aspect) ** (1 / 3)
            side = np.clip(np.round(side).astype(int), 1, hi - lo)
            start = [rng.integers(l, h - s + 1) for l, h, s in zip(lo, hi, side)]
            solid[tuple(slice(s0, s0 + s) for s0, s in zip(start, side))] = True
    if solid.all():
        solid.flat[0] = False
    if margin > 0:  # keep the boundary layer fluid whatever the shapes did
        solid[:margin] = solid[-margin:] = False
        solid[:, :margin] = solid[:, -margin:] = False
        solid[:, :, :margin] = solid[:, :, -margin:] = False
    return solid


def plume_rhs(shape, solid=None, *, n_sources=1, noise=0.05, random_state=None):
    r"""A smoke-plume-like pressure right-hand side: the divergence of a rising, swirling jet.

    The velocity is a vertical jet (axis 0 is "up") of Gaussian cross-section that starts at a random
    source near the bottom and fades with height, plus a small random smooth perturbation. Then
    :math:`b = -\nabla\cdot u` by central differences, zero in solid cells, restricted to the fluid cells
    (the order of the rows of ``poisson(shape, obstacles=solid)``). Such ``b`` are smooth, so CG needs more
    iterations on them than on random vectors.

    Returns
    -------
    b : ndarray, shape (n_fluid,)
        Unit 2-norm.
    """
    shape = _check_shape(shape)
    n_sources = check_int(n_sources, "n_sources", min_value=1)
    noise = check_positive(noise, "noise", strict=False)
    rng = check_random_state(random_state)
    if solid is None:
        solid = np.zeros(shape, dtype=bool)
    solid = np.asarray(solid, dtype=bool)
    if solid.shape != shape:
        raise ValueError(f"solid must have shape {shape}; got {solid.shape}")
    z, y, x = np.meshgrid(*[(np.arange(s) + 0.5) / s for s in shape], indexing="ij")
    u = np.zeros((3,) + shape)
    for _ in range(n_sources):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        width = rng.uniform(0.06, 0.15)
        z0 = rng.uniform(0.05, 0.25)
        speed = rng.uniform(0.5, 1.5)
        profile = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width ** 2))
        rise = np.clip((z - z0) / 0.1, 0, 1) * np.exp(-np.clip(z - z0, 0, None) / 0.6)
        u[0] += speed * profile * rise
        swirl = rng.uniform(-0.5, 0.5)  # a little rotation about the jet axis
        u[1] += swirl * profile * rise * -(x - cx)
        u[2] += swirl * profile * rise * (y - cy)
    if noise > 0:
        pert = rng.standard_normal((3,) + shape)
        for _ in range(3):  # cheap smoothing: repeated neighbour averaging
            pert = (pert + sum(np.roll(pert, s, axis=a) for a in (1, 2, 3) for s in (-1, 1))) / 7
        u += noise * pert / max(np.abs(pert).max(), 1e-300)
    u[:, solid] = 0.0  # no flow inside solids
    div = sum(np.gradient(u[d], axis=d) for d in range(3))
    b = -div[~solid]
    nrm = np.linalg.norm(b)
    if nrm == 0:
        b = rng.standard_normal(b.shape)
        nrm = np.linalg.norm(b)
    return b / nrm


def random_scene(shape, *, n_obstacles=None, fill=None, obstacle_bc="dirichlet", random_state=None):
    """A random obstacle scene with its matrix and a plume right-hand side.

    Returns
    -------
    A : scipy.sparse.csr_matrix, (n_fluid, n_fluid)
        ``poisson(shape, obstacles=solid, obstacle_bc=obstacle_bc)``.
    b : ndarray, (n_fluid,)
        :func:`plume_rhs` of the scene.
    fluid_mask : ndarray of bool, ``shape``
        ``~solid``: pass it to :func:`numopt.linalg.dcdm` as ``fluid_mask``.
    """
    shape = _check_shape(shape)
    rng = check_random_state(random_state)
    if n_obstacles is None:
        n_obstacles = int(rng.integers(2, 7))
    if fill is None:
        fill = float(rng.uniform(0.05, 0.25))
    solid = random_obstacles(shape, n_obstacles, fill=fill, random_state=rng)
    A = poisson(shape, obstacles=solid, obstacle_bc=obstacle_bc)
    b = plume_rhs(shape, solid, random_state=rng)
    return A, b, ~solid
