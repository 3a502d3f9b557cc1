"""Test instances of numopt.ot (no downloads)."""
import numpy as np


def random_problem(n=30, m=25, seed=0, zeros=False):
    rng = np.random.default_rng(seed)
    M = rng.random((n, m))
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    if zeros:
        a[::4] = 0.0
        b[1::5] = 0.0
    return a / a.sum(), b / b.sum(), M


def grid_problem(side=10, p=2):
    """Two Gaussian bumps + 0.1 on a side x side grid of [0,1]^2 (Brauer et al.'s demo), cost |x-y|_p^p."""
    t = (np.arange(side) + 0.5) / side
    X, Y = np.meshgrid(t, t, indexing="ij")
    pts = np.column_stack([X.ravel(), Y.ravel()])

    def bump(c):
        h = np.exp(-((pts - c) ** 2).sum(1) / (2 * 0.1 ** 2)) + 0.1
        return h / h.sum()

    a, b = bump(np.array([0.3, 0.3])), bump(np.array([0.7, 0.6]))
    diff = np.abs(pts[:, None, :] - pts[None, :, :])
    M = (diff ** p).sum(-1) if p != 1 else diff.sum(-1)
    return a, b, M
